"""The surgery sweep's model zoo: which models it picks (timm families, torchvision classifiers, transformers
architectures from shrunk configs), how it builds them and their inputs, and the per-model record."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

SOURCES = ("timm", "tv", "hf")
STATUSES = ("OK", "silently changed", "refused", "not built", "crash", "timeout", "not run")
ROUND_TRIP_KINDS = ("layernorm", "rmsnorm", "batchnorm")  # families with a like-for-like factory kind
ROUND_TRIP_TOL = 1e-5
IMAGE = 64
FALLBACK_IMAGES = (224, 299)  # torchvision models that need a larger input (ViT's patch grid, Inception)
DEFAULT_RESULTS = "results/surgery/sweep.json"
NORM_CLASS = re.compile(r"norm|GRN", re.I)

# Generic shrinking of a transformers config: each key set only where the default config has an int there.
HF_SIZES = {
    "hidden_size": 32, "d_model": 32, "n_embd": 32, "embed_dim": 32, "word_embed_proj_dim": 32, "projection_dim": 32,
    "num_hidden_layers": 2, "num_layers": 2, "n_layer": 2, "n_layers": 2, "encoder_layers": 2, "decoder_layers": 2,
    "num_decoder_layers": 2, "num_encoder_layers": 2,
    "num_attention_heads": 4, "n_head": 4, "n_heads": 4, "encoder_attention_heads": 4, "decoder_attention_heads": 4,
    "num_heads": 4, "num_key_value_heads": 2, "head_dim": 8, "d_kv": 8, "kv_channels": 8,
    "intermediate_size": 64, "d_ff": 64, "ffn_dim": 64, "n_inner": 64, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "num_experts": 4, "num_local_experts": 4,
    "n_routed_experts": 4, "num_experts_per_tok": 2,
    "vocab_size": 99, "max_position_embeddings": 64, "image_size": IMAGE,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "decoder_start_token_id": 0, "sep_token_id": 3,
    "cls_token_id": 4,
}
HF_SUBCONFIGS = ("text_config", "vision_config", "audio_config", "encoder_config", "decoder_config", "qformer_config")
TOKENS = 7


@dataclass
class ModelResult:
    name: str
    source: str = ""
    status: str = "OK"  # one of STATUSES
    found: dict[str, int] = field(default_factory=dict)
    replaced: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    activations: tuple[int, int] = (0, 0)
    finite: bool | None = None
    round_trip: float | None = None  # max relative error; None when no layer has a same-kind factory equivalent
    round_trip_layers: str = ""
    note: str = ""
    seconds: float = 0.0
    rerun: str = ""  # where the entry was re-run after the sweep (--update), if it was

    def to_dict(self) -> dict:
        d = asdict(self)
        d["activations"] = list(self.activations)
        if not d["rerun"]:
            d.pop("rerun")
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelResult:
        d = dict(d)
        d["activations"] = tuple(d.get("activations", (0, 0)))
        return cls(**d)


# ---------------------------------------------------------------------------------------------------------------------
# Building models and their inputs


def _timm_family(name: str) -> str:
    """The architecture prefix: the name up to its first ``_`` or digit (``resnet50d`` → ``resnet``; ``mobilenetv2``
    and ``mobilenetv3`` are one family, ``mobilenetv``)."""
    return re.split(r"[_\d]", name)[0]


def _hf_shrunk_config(model_type: str):
    import transformers

    cls = transformers.AutoConfig.for_model(model_type).__class__
    return _shrink(cls)


def _shrink(cls):
    default = cls()
    values = default.to_dict()
    kwargs = {k: v for k, v in HF_SIZES.items() if isinstance(values.get(k), int) and not isinstance(values[k], bool)}
    if isinstance(values.get("hidden_sizes"), list):
        kwargs["hidden_sizes"] = [8 * 2 ** i for i in range(len(values["hidden_sizes"]))]
    if isinstance(values.get("depths"), list):
        kwargs["depths"] = [1] * len(values["depths"])
    if isinstance(values.get("num_heads"), list):
        kwargs["num_heads"] = [1] * len(values["num_heads"])
    for key in HF_SUBCONFIGS:
        sub = getattr(default, key, None)
        if sub is not None and hasattr(sub, "to_dict"):
            kwargs[key] = _shrink(type(sub)).to_dict()
    return cls(**kwargs)


def _hf_inputs(model, config) -> dict:
    import inspect

    import torch

    def pick(attr, fallback):
        for c in (config, *(getattr(config, k, None) for k in HF_SUBCONFIGS)):
            value = getattr(c, attr, None) if c is not None else None
            if isinstance(value, int) and not isinstance(value, bool):
                return value
        return fallback

    main = getattr(model, "main_input_name", "input_ids")
    gen = torch.Generator().manual_seed(0)
    if main == "pixel_values":
        size = pick("image_size", IMAGE)
        inputs = {main: torch.randn(2, pick("num_channels", 3), size, size, generator=gen)}
    elif main == "input_values":
        inputs = {main: torch.randn(2, 1600, generator=gen)}
    elif main == "input_features":
        inputs = {main: torch.randn(2, pick("num_mel_bins", 80), 3000, generator=gen)}
    else:
        vocab = pick("vocab_size", 99)
        inputs = {main: torch.randint(5, max(6, min(vocab, 99)), (2, TOKENS), generator=gen)}
    params = inspect.signature(model.forward).parameters
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in params:
        inputs["decoder_input_ids"] = torch.randint(5, max(6, min(pick("vocab_size", 99), 99)), (2, TOKENS),
                                                    generator=gen)
    return inputs


def _build(source: str, name: str):
    """(model, inputs) for one model, checked to run a forward in train mode before any surgery."""
    import torch

    if source == "timm":
        import timm

        try:
            model = timm.create_model(name, pretrained=False, num_classes=10, img_size=IMAGE)
            inputs = {"x": torch.randn(2, 3, IMAGE, IMAGE)}
            _check_forward(model, inputs)
            return model, inputs
        except Exception:  # noqa: BLE001 - not every model takes img_size or a 64 x 64 input: use its own size
            model = timm.create_model(name, pretrained=False, num_classes=10)
            size = model.pretrained_cfg.get("input_size", (3, 224, 224))
            inputs = {"x": torch.randn(2, *size)}
            _check_forward(model, inputs)
            return model, inputs
    if source == "tv":
        import torchvision

        kwargs = {"num_classes": 10}
        if name.startswith("vit_"):  # a 4 x 4 patch grid instead of the default 224 x 224 input
            kwargs["image_size"] = 4 * int(name.rsplit("_", 1)[1])
        model = torchvision.models.get_model(name, **kwargs)
        sizes = (kwargs["image_size"],) if "image_size" in kwargs else (IMAGE, *FALLBACK_IMAGES)
        if name.startswith("googlenet") or name.startswith("inception"):
            model.aux_logits, model.AuxLogits = False, None  # their train-mode forward returns a tuple with aux
            if hasattr(model, "aux1"):
                model.aux1 = model.aux2 = None
        for size in sizes:
            inputs = {"x": torch.randn(2, 3, size, size)}
            try:
                _check_forward(model, inputs)
                return model, inputs
            except Exception as err:  # noqa: BLE001
                last = err
        raise last
    import transformers

    config = _hf_shrunk_config(name)
    model = transformers.AutoModel.from_config(config)
    inputs = _hf_inputs(model, config)
    _check_forward(model, inputs)
    return model, inputs


def _check_forward(model, inputs) -> None:
    import torch

    model.train()
    with torch.no_grad():
        _forward(model, inputs)


def _forward(model, inputs):
    import torch

    out = model(inputs["x"]) if "x" in inputs else model(**inputs)
    if isinstance(out, torch.Tensor):
        return out
    for key in ("logits", "last_hidden_state", "pooler_output"):
        value = getattr(out, key, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(out, dict):
        out = list(out.values())
    first = out[0]
    if not isinstance(first, torch.Tensor):
        raise TypeError(f"the model's output is a {type(out).__name__} without a tensor first")
    return first


# ---------------------------------------------------------------------------------------------------------------------
# Selection


def _timm_meta(names: list[str]) -> list[dict]:
    """Parameter count and norm-like classes of each timm model, built on the meta device (no memory, no init)."""
    import timm
    import torch

    rows = []
    for name in names:
        try:
            with torch.device("meta"):
                model = timm.create_model(name, pretrained=False)
            classes = sorted({f"{type(m).__module__}.{type(m).__name__}" for m in model.modules() if _norm_layer(m)})
            rows.append({"name": name, "params": sum(p.numel() for p in model.parameters()), "norms": classes})
        except Exception as err:  # noqa: BLE001 - recorded; such a model is chosen only by name
            rows.append({"name": name, "params": None, "norms": [], "error": _one_line(err, 120)})
    return rows


def _norm_layer(m) -> bool:
    """A layer whose class name says norm and that is one: a leaf or a module with tensors of its own (a block named
    ``EvaBlockPostNorm`` or ``ConvNormAct`` holds norms but is none)."""
    if not NORM_CLASS.search(type(m).__name__) or type(m).__module__.startswith("torch.nn.utils"):
        return False
    # tensors of its own: parameters or float buffers (an int buffer such as position_ids says nothing)
    own = next(iter(m.parameters(recurse=False)), None) is not None or any(
        b.is_floating_point() for b in m.buffers(recurse=False))
    return own or next(m.children(), None) is None


def select_timm(meta: list[dict]) -> dict[str, str]:
    """Model name → why it was chosen: each family's smallest variant, then the smallest model per norm class."""
    chosen: dict[str, str] = {}
    families: dict[str, list[dict]] = {}
    for row in meta:
        families.setdefault(_timm_family(row["name"]), []).append(row)
    def size(row):
        return (row["params"] is None, row["params"] or 0, row["name"])

    for family, rows in sorted(families.items()):
        best = min(rows, key=size)
        chosen.setdefault(best["name"], f"smallest of family {family}")
    classes: dict[str, list[dict]] = {}
    for row in meta:
        for cls in row["norms"]:
            classes.setdefault(cls, []).append(row)
    for cls, rows in sorted(classes.items()):
        if any(r["name"] in chosen for r in rows):
            continue
        best = min(rows, key=size)
        chosen[best["name"]] = f"smallest holding {cls.rsplit('.', 1)[-1]}"
    return chosen


def select_tv() -> dict[str, str]:
    import torchvision

    return {n: "classifier" for n in torchvision.models.list_models(module=torchvision.models)}


def select_hf() -> dict[str, str]:
    """One model type per transformers modeling module (its architecture): the module's own name where it is a type,
    else its shortest type name (``clip``, not ``clip_text_model``, whose classes are the same)."""
    from transformers.models.auto.configuration_auto import model_type_to_module_name
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    modules: dict[str, list[str]] = {}
    for model_type in MODEL_MAPPING_NAMES:
        modules.setdefault(model_type_to_module_name(model_type), []).append(model_type)
    chosen = {}
    for module, types in sorted(modules.items()):
        best = module if module in types else min(types, key=lambda t: (len(t), t))
        chosen[best] = f"AutoModel of transformers.models.{module}"
    return chosen

def _one_line(err: BaseException, n: int) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")[:n]
