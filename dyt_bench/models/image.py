"""Image classifiers by name: timm (vit_*, convnext_*, mixer_*, …) and torchvision (resnet*, vgg*), randomly initialised
or from pretrained weights (a local file, or timm's download)."""

from __future__ import annotations

import os
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
        import difflib

        close = difflib.get_close_matches(name, available, n=6, cutoff=0.6)
        raise ValueError(f"model={name!r} is not a torchvision classification model; closest: "
                         f"{', '.join(close) or ', '.join(available[:12])}")
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


LIGHTNING_NET_PREFIX = "net."  # where an ImageClassification checkpoint keeps its network's weights


def _weights_file(path: str) -> str:
    """The weights file to load: ``path`` itself, or for a Lightning checkpoint of an image-classification run, a
    state-dict file of its network (``net.*`` tensors) extracted once into ``~/.cache/dyt-bench/pretrained``."""
    file = os.path.expanduser(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"model.model_kwargs.pretrained_file: no weights file at {file} (a state dict saved "
                                "with torch.save, a .safetensors file, or a Lightning .ckpt of an image run)")
    if not file.endswith(".ckpt"):
        return file
    import hashlib

    import torch

    st = os.stat(file)
    key = hashlib.sha256(f"{os.path.abspath(file)}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    cache = os.path.join(os.path.expanduser(os.path.join("~", ".cache", "dyt-bench", "pretrained")), f"{key}.pth")
    if not os.path.isfile(cache):
        from dyt_bench.results import load_torch_file

        ckpt = load_torch_file(file, "model.model_kwargs.pretrained_file")
        state = ckpt.get("state_dict", {}) if isinstance(ckpt, dict) else {}
        net = {k[len(LIGHTNING_NET_PREFIX):]: v for k, v in state.items() if k.startswith(LIGHTNING_NET_PREFIX)}
        if not net:
            raise ValueError(f"model.model_kwargs.pretrained_file: {file} is a checkpoint without network weights "
                             f"({LIGHTNING_NET_PREFIX}* tensors of an image-classification run)")
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = f"{cache}.{os.getpid()}.tmp"
        torch.save(net, tmp)
        os.replace(tmp, cache)
    return cache


def _timm_overlay(name: str, file: str | None) -> dict[str, Any]:
    """timm's ``pretrained_cfg_overlay`` for a local weights file: the file, and the class count of its classifier (so
    that timm keeps a head that fits and drops only one that does not)."""
    if file is None:
        return {}
    from timm.models import get_pretrained_cfg, load_state_dict

    state = load_state_dict(file)
    cfg = get_pretrained_cfg(name)
    heads = cfg.classifier if cfg is not None and cfg.classifier else "head"
    overlay: dict[str, Any] = {"file": file}
    for head in (heads,) if isinstance(heads, str) else heads:
        weight = state.get(f"{head}.weight")
        if weight is not None:
            overlay["num_classes"] = int(weight.shape[0])
            break
    return overlay


def loaded_tensors(model: nn.Module, file: str) -> dict[str, Any]:
    """How much of ``model`` the weights file set: its tensors equal to the file's (``loaded``), out of ``total``, and
    the names of the others (a new head, resized embeddings)."""
    import torch
    from timm.models import load_state_dict

    state = load_state_dict(file)
    own = model.state_dict()
    same = [k for k, v in own.items() if k in state and state[k].shape == v.shape
            and torch.equal(state[k].to(v.dtype), v.detach().cpu())]
    return {"file": file, "loaded": len(same), "total": len(own), "not_loaded": sorted(set(own) - set(same))}


def _check_patch_tiling(name: str, img_size: Any, model: nn.Module) -> nn.Module:
    """``model``, unless it is a patch model whose patches do not tile ``img_size`` (it would silently drop the last
    rows / columns of every image)."""
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    if patch is None:
        return model
    size = tuple(img_size) if isinstance(img_size, (tuple, list)) else (img_size, img_size)
    patch = tuple(patch) if isinstance(patch, (tuple, list)) else (patch, patch)
    if any(s % p for s, p in zip(size, patch, strict=False)):
        raise ValueError(f"model.img_size={img_size} is not a multiple of the patch size {patch[0]} of {name!r}; "
                         f"allowed: multiples of {patch[0]} (or a model_kwargs.patch_size that divides it)")
    return model


def _timm_model(name: str, num_classes: int, img_size: int, in_chans: int, kwargs: dict[str, Any],
                pretrained: bool = False, pretrained_file: str | None = None) -> nn.Module:
    import timm

    if not timm.is_model(name):
        import difflib

        close = difflib.get_close_matches(name, timm.list_models(), n=6, cutoff=0.6)
        raise ValueError(f"model={name!r} is not a timm model; closest: {', '.join(close) or '(none)'} "
                         "(torchvision models take the torchvision: prefix)")
    if pretrained:
        kwargs = {**kwargs, "pretrained_cfg_overlay": _timm_overlay(name, pretrained_file)}
    try:
        return _check_patch_tiling(name, img_size, timm.create_model(
            name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, img_size=img_size, **kwargs))
    except TypeError as err:
        if "img_size" not in str(err):
            raise
    # Convolutional families (ConvNeXt, ResNet in timm) take any input size and have no img_size argument.
    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _load_torchvision_file(model: nn.Module, file: str) -> None:
    """A torchvision model's weights from a local state-dict file; a classifier of another class count stays new."""
    import torch

    state = torch.load(file, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise ValueError(f"model.model_kwargs.pretrained_file: {file} holds tensors this model lacks: "
                         f"{unexpected[:8]}")
    model.load_state_dict(fitting, strict=False)  # what is left out (a new head) is listed by pretrained_report


def build_image_model(
    name: str,
    num_classes: int,
    img_size: int = 224,
    in_chans: int = 3,
    small_input: bool = False,
    insert_norms: bool = False,
    pretrained: bool = False,
    pretrained_file: str | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a classifier, randomly initialised or (``pretrained``) from pretrained weights.

    ``name``: a timm model name (``vit_tiny_patch16_224``, ``convnext_atto``, ``mixer_b16_224`` …) or a torchvision
    one (``resnet50``, ``vgg16``); ``timm:``/``torchvision:`` prefixes pick the library explicitly, and bare
    ``resnet*``/``vgg*`` names come from torchvision. ``kwargs`` go to the library's constructor (e.g. ``patch_size``,
    ``embed_dim``, ``depth``, ``num_heads``, ``drop_path_rate`` for timm ViTs). ``small_input`` gives torchvision
    ResNets a 3×3 stride-1 stem without max-pool and VGGs a pooled single-layer head (for 8–32 px images). ``insert_norms`` puts a norm after every
    convolution of a torchvision VGG without BN (the paper's Table 11 VGG16 rows), for ``replace_norms`` to swap.

    ``pretrained``: start from pretrained weights: ``pretrained_file`` (a local state dict or ``.safetensors`` file,
    loaded through timm's ``pretrained_cfg_overlay=dict(file=...)``, so timm adapts a head of another class count,
    the position embeddings of another image size and a stem of other input channels), or, without a file, timm's
    own download (network). torchvision models need the file. The model's ``pretrained_report`` says how many of its
    tensors the file set.
    """
    if pretrained_file is not None and not pretrained:
        raise ValueError("model.model_kwargs.pretrained_file is given but pretrained is false; set pretrained: true")
    file = _weights_file(pretrained_file) if pretrained_file is not None else None
    if name.startswith(TORCHVISION_PREFIX) or (name.startswith(TORCHVISION_FAMILIES)
                                               and not name.startswith(TIMM_PREFIX)):
        tv_name = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
        model = _torchvision_model(tv_name, num_classes, in_chans, small_input, kwargs, insert_norms)
        if pretrained:
            if file is None:
                raise ValueError(f"model={name!r}: pretrained torchvision models need model.model_kwargs."
                                 "pretrained_file (a local state dict)")
            _load_torchvision_file(model, file)
    else:
        if (small_input or insert_norms) and not name.startswith(TIMM_PREFIX):
            raise ValueError("small_input and insert_norms apply to torchvision ResNet / VGG models only")
        timm_name = name[len(TIMM_PREFIX):] if name.startswith(TIMM_PREFIX) else name
        model = _timm_model(timm_name, num_classes, img_size, in_chans, kwargs, pretrained, file)
    if file is not None:
        model.pretrained_report = loaded_tensors(model, file)
        report = model.pretrained_report
        from lightning.pytorch.utilities import rank_zero_info

        rank_zero_info(f"pretrained {file}: {report['loaded']}/{report['total']} tensors loaded; not loaded: "
                       + (", ".join(report["not_loaded"]) or "none"))
    return model
