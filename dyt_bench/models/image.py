"""Image classifiers by name: timm (vit_*, convnext_*, mixer_*, …) and torchvision (resnet*, vgg*), randomly initialised."""

from __future__ import annotations

from typing import Any

from torch import nn

TORCHVISION_PREFIX = "torchvision:"
TIMM_PREFIX = "timm:"
# Bare names in these families are taken from torchvision, as the paper's CNN baselines are.
TORCHVISION_FAMILIES = ("resnet", "wide_resnet", "resnext", "vgg")


def _torchvision_model(name: str, num_classes: int, in_chans: int, small_input: bool, kwargs: dict[str, Any]) -> nn.Module:
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
    elif in_chans != 3 or small_input:
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
    **kwargs: Any,
) -> nn.Module:
    """Build a randomly initialised classifier.

    ``name``: a timm model name (``vit_tiny_patch16_224``, ``convnext_atto``, ``mixer_b16_224`` …) or a torchvision
    one (``resnet50``, ``vgg16``); ``timm:``/``torchvision:`` prefixes pick the library explicitly, and bare
    ``resnet*``/``vgg*`` names come from torchvision. ``kwargs`` go to the library's constructor (e.g. ``patch_size``,
    ``embed_dim``, ``depth``, ``num_heads``, ``drop_path_rate`` for timm ViTs). ``small_input`` gives torchvision
    ResNets a 3×3 stride-1 stem without max-pool (for 8–32 px images).
    """
    if name.startswith(TORCHVISION_PREFIX):
        return _torchvision_model(name[len(TORCHVISION_PREFIX):], num_classes, in_chans, small_input, kwargs)
    if name.startswith(TIMM_PREFIX):
        return _timm_model(name[len(TIMM_PREFIX):], num_classes, img_size, in_chans, kwargs)
    if name.startswith(TORCHVISION_FAMILIES):
        return _torchvision_model(name, num_classes, in_chans, small_input, kwargs)
    if small_input:
        raise ValueError("small_input applies to torchvision ResNets only")
    return _timm_model(name, num_classes, img_size, in_chans, kwargs)
