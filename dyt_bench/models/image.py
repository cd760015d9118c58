"""Image classifiers by name: timm (vit_*, convnext_*, mixer_*, …) and torchvision (resnet*, vgg*), randomly initialised."""

from __future__ import annotations

from typing import Any

from torch import nn

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
# Bare names in these families are taken from torchvision, as the paper's CNN baselines are.
TORCHVISION_FAMILIES = ("resnet", "wide_resnet", "resnext", "vgg")


def insert_norms_after_convs(features: nn.Sequential) -> nn.Sequential:
    """A copy of a conv stack (VGG's ``features``) with a BatchNorm2d after every Conv2d, for the norm surgery to swap."""
    layers: list[nn.Module] = []
    for layer in features:
        layers.append(layer)
        if isinstance(layer, nn.Conv2d):
            layers.append(nn.BatchNorm2d(layer.out_channels))
    return nn.Sequential(*layers)


def _torchvision_model(name: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any],
                       insert_norms: bool = False) -> nn.Module:
    import torchvision

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        close = sorted(n for n in available if n.startswith(name.rstrip("0123456789_")))[:12]
        raise ValueError(f"model={name!r} is not a torchvision classification model; e.g. {', '.join(close) or ', '.join(available[:12])}")
    model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    if hasattr(model, "conv1") and isinstance(model.conv1, nn.Conv2d):  # ResNet family
        if small_input or in_chans != 3:
            old = model.conv1
            k, s, p = ((3, 1, 1) if small_input else (old.kernel_size, old.stride, old.padding))
            model.conv1 = nn.Conv2d(in_chans, old.out_channels, kernel_size=k, stride=s, padding=p, bias=False)
        if small_input:
            model.maxpool = nn.Identity()
    elif hasattr(model, "features") and isinstance(model.features[0], nn.Conv2d):  # VGG family
        if in_chans != 3:
            old = model.features[0]
            model.features[0] = nn.Conv2d(in_chans, old.out_channels, old.kernel_size, old.stride, old.padding)
        if small_input:  # the usual CIFAR head: global average pool and one linear layer instead of 3 FC layers
            model.avgpool = nn.AdaptiveAvgPool2d(1)
            model.classifier = nn.Linear(512, num_classes)  # every torchvision VGG ends with 512 channels
        if insert_norms:
            if any(isinstance(m, nn.BatchNorm2d) for m in model.features):
                raise ValueError(f"insert_norms: {name!r} already has norms after its convolutions")
            model.features = insert_norms_after_convs(model.features)
    if insert_norms and not hasattr(model, "features"):
        raise ValueError("insert_norms applies to torchvision VGG models without BN (vgg11 … vgg19)")
    if not hasattr(model, "conv1") and not hasattr(model, "features") and (in_chans != 3 or small_input):
        raise ValueError(f"in_chans / small_input are supported for torchvision ResNet and VGG models, not {name!r}")
    return model


def _timm_model(name: str, num_classes: int, img_size: int, in_chans: int, kwargs: dict[str, Any]) -> nn.Module:
    import timm

    if not timm.is_model(name):
        close = timm.list_models(f"{name.split('_')[0]}*")[:12]
        raise ValueError(f"model={name!r} is not a timm model; e.g. {', '.join(close)}")
    try:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs)
    except TypeError as err:
        if "img_size" not in str(err):
            raise
    # Convolutional families (ConvNeXt, ResNet in timm) take any input size and have no img_size argument.
    return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def build_image_model(
    name: str,
    num_classes: int,
    img_size: int = 224,
    in_chans: int = 3,
    small_input: bool = False,
    insert_norms: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build a randomly initialised classifier.

    ``name``: a timm model name (``vit_tiny_patch16_224``, ``convnext_atto``, ``mixer_b16_224`` …) or a torchvision
    one (``resnet50``, ``vgg16``); ``timm:``/``torchvision:`` prefixes pick the library explicitly, and bare
    ``resnet*``/``vgg*`` names come from torchvision. ``kwargs`` go to the library's constructor (e.g. ``patch_size``,
    ``embed_dim``, ``depth``, ``num_heads``, ``drop_path_rate`` for timm ViTs). ``small_input`` gives torchvision
    ResNets a 3×3 stride-1 stem without max-pool and VGGs a pooled single-layer head (for 8–32 px images). ``insert_norms`` puts a norm after every
    convolution of a torchvision VGG without BN (the paper's Table 11 VGG16 rows), for ``replace_norms`` to swap.
    """
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_model(name[len(TORCHVISION_PREFIX):], num_classes, in_chans, small_input, kwargs, insert_norms)
    if name.startswith(TIMM_PREFIX):
        return _timm_model(name[len(TIMM_PREFIX):], num_classes, img_size, in_chans, kwargs)
    if name.startswith(TORCHVISION_FAMILIES):
        return _torchvision_model(name, num_classes, in_chans, small_input, kwargs, insert_norms)
    if small_input or insert_norms:
        raise ValueError("small_input and insert_norms apply to torchvision ResNet / VGG models only")
    return _timm_model(name, num_classes, img_size, in_chans, kwargs)
