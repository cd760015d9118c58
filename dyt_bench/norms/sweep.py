"""Sweep replace_norms over timm / torchvision / transformers models; write per-model results to JSON and the tables
of docs/surgery.md from them.

Per model: the norm classes found, replaced and kept; a DyT forward and backward (finite?); activation modules before
and after (a fused activation must survive); and a same-kind round trip with ``inherit_affine=True`` in float64, whose
output must equal the original's. Models are built without downloads (timm ``pretrained=False``, transformers from
generically shrunk configs). ``--select families`` picks the models (timm: each architecture family's smallest variant
by parameter count, counted on the meta device, plus the smallest model holding each norm-like class; torchvision:
every classifier; transformers: every ``AutoModel`` architecture). ``--jobs N`` runs one model per process, each with
a timeout. Not part of the test suite: a model zoo is slow on CPU. No library sweeps a model zoo for this, hence the
hand-written runner.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
import time
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
# One model


def _activation_count(model) -> int:
    from torch import nn

    act_modules = ("torch.nn.modules.activation", "timm.layers.activations")
    return sum(type(m).__module__.startswith(act_modules) and not isinstance(m, nn.MultiheadAttention)
               for m in model.modules())


def _norm_like_leftovers(model, report) -> list[str]:
    """Norm-named layers still in the model that the report neither replaced, kept nor skipped."""
    from .layers import NormAct
    from .recognise import describe_norm

    left = []
    for path, m in model.named_modules():
        name = type(m).__name__
        if not NORM_CLASS.search(name) or isinstance(m, NormAct) or describe_norm(m) is not None:
            continue
        if path in report.kept or any(path == s or path.startswith(s + ".") for s in report.skipped):
            continue
        if type(m).__module__.startswith("torch.nn.utils") or next(m.children(), None) is not None:
            continue
        left.append(f"{path} ({name})")
    return left


def _randomise_norms(model) -> None:
    import torch

    from .recognise import describe_norm

    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if describe_norm(m) is None:
                continue
            for name, p in m.named_parameters(recurse=False):
                if p.ndim == 1:
                    p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.2 + (name == "weight") * 1.0)


def _round_trip(model, inputs) -> tuple[float | None, str]:
    """Replace each LN / RMS / BN layer by the factory's layer of the same kind with inherited parameters, in
    float64 (float32 for a model that does not run in float64); return the output's max relative change and how many
    layers took part."""
    import copy

    import torch

    from .recognise import describe_norm
    from .surgery import replace_norms

    for dtype in (torch.float64, torch.float32):
        trial = copy.deepcopy(model).to(dtype).eval()
        _randomise_norms(trial)
        cast = {k: v.to(dtype) if v.is_floating_point() else v for k, v in inputs.items()}
        try:
            with torch.no_grad():
                reference = _forward(trial, cast)
        except Exception:  # noqa: BLE001 - some models hard-code float32 somewhere
            if dtype == torch.float32:
                raise
            continue
        if bool(torch.isfinite(reference).all()):
            break
        if dtype == torch.float32:  # canine's float64 masks overflow to NaN; if float32 does too, nothing to compare
            return None, "reference output not finite"
    # a weightless layer of undeclared width (num_features 0) has no same-kind factory layer
    families = {path: info.family if info.num_features else "any width" for path, m in trial.named_modules()
                if (info := describe_norm(m)) is not None}
    done = 0
    for kind in ROUND_TRIP_KINDS:
        paths = [p for p, f in families.items() if f == kind]
        if paths:
            others = [p for p, f in families.items() if f != kind]
            done += replace_norms(trial, kind, inherit_affine=True, skip=others).total
    if not done:
        return None, f"0/{len(families)}"
    with torch.no_grad():
        out = _forward(trial, cast)
    err = float((out.double() - reference.double()).abs().max() / reference.double().abs().max().clamp_min(1e-12))
    suffix = "" if dtype == torch.float64 else " (float32)"
    return err, f"{done}/{len(families)}{suffix}"


def _found_classes(model) -> dict[str, int]:
    from collections import Counter

    from .recognise import describe_norm, kept_reason, refused_reason

    return dict(Counter(type(m).__name__ for m in model.modules()
                        if describe_norm(m) is not None or kept_reason(m) or refused_reason(m)
                        or (NORM_CLASS.search(type(m).__name__) and next(m.children(), None) is None
                            and not type(m).__module__.startswith("torch.nn.utils"))))


def sweep_model(source: str, name: str) -> ModelResult:
    import copy
    from collections import Counter

    import torch

    from .recognise import UnsupportedNormError
    from .surgery import replace_norms

    t0 = time.time()
    result = ModelResult(name, source)
    try:
        torch.manual_seed(0)
        model, inputs = _build(source, name)
    except Exception as err:  # noqa: BLE001 - a model the library cannot build here is reported, not a sweep failure
        result.status, result.note = "not built", _one_line(err, 160)
        result.seconds = round(time.time() - t0, 2)
        return result
    try:
        result.found = _found_classes(model)
        before = _activation_count(model)
        dyt = copy.deepcopy(model)
        try:
            report = replace_norms(dyt, "dyt")
        except UnsupportedNormError as err:
            result.status, result.note = "refused", str(err).split(". Supported")[0]
            if "(" not in result.note:
                result.status, result.note = "crash", "refusal without a reason: " + result.note
            return result
        result.replaced = report.total
        result.kept = dict(Counter(why.split(":", 1)[0] for why in report.kept.values()))
        result.activations = (before, _activation_count(dyt))
        leftovers = _norm_like_leftovers(dyt, report)
        dyt.train()
        out = _forward(dyt, inputs)
        out.float().square().mean().backward()
        grads = [p.grad for p in dyt.parameters() if p.grad is not None]
        result.finite = bool(torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads))
        del dyt, out, grads
        result.round_trip, result.round_trip_layers = _round_trip(model, inputs)
    except Exception as err:  # noqa: BLE001 - a crash is what the sweep is looking for
        result.status, result.note = "crash", _one_line(err, 200)
        return result
    finally:
        result.seconds = round(time.time() - t0, 2)
    changed = []
    if result.activations[0] != result.activations[1]:
        changed.append(f"activations {result.activations[0]} → {result.activations[1]}")
    if leftovers:
        changed.append("left in place unreported: " + ", ".join(leftovers[:3]))
    if result.round_trip is not None and not result.round_trip <= ROUND_TRIP_TOL:
        changed.append(f"round trip off by {result.round_trip:.1e}")
    if changed:
        result.status, result.note = "silently changed", "; ".join(changed)
    elif not result.finite:
        result.status, result.note = "crash", "non-finite forward / backward"
    return result


def _one_line(err: BaseException, n: int) -> str:
    return f"{type(err).__name__}: {err}".replace("\n", " ")[:n]


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


# ---------------------------------------------------------------------------------------------------------------------
# Running many: one task per process, a timeout each


def _child(task: tuple, conn) -> None:
    import torch

    torch.set_num_threads(1)
    kind, source, payload = task
    try:
        if kind == "meta":
            conn.send(_timm_meta(payload))
        else:
            conn.send(sweep_model(source, payload).to_dict())
    except BaseException as err:  # noqa: BLE001 - anything, sent back rather than lost
        conn.send({"error": _one_line(err, 200)})
    finally:
        conn.close()


def run_tasks(tasks: list[tuple], jobs: int, timeout: float, on_done, deadline: float | None = None) -> None:
    """Run each task in its own process, ``jobs`` at a time; ``on_done(task, value or None, why)`` for each; a task
    past ``timeout`` seconds (or still running at ``deadline``, a time.time()) is killed and reported with why."""
    import multiprocessing as mp
    from multiprocessing.connection import wait

    if jobs <= 0:  # in this process, one after another (tests, debugging)
        for task in tasks:
            kind, source, payload = task
            on_done(task, _timm_meta(payload) if kind == "meta" else sweep_model(source, payload).to_dict(), "")
        return
    # the children re-import this module as their __main__ (python -m): runpy's warning about it says nothing here
    os.environ.setdefault("PYTHONWARNINGS", "ignore::RuntimeWarning:runpy")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["dyt_bench.norms.sweep", "dyt_bench.norms.surgery", "torch", "timm", "torchvision",
                               "transformers"])
    from dyt_bench.norms import sweep as this  # the target must be importable by name in the child

    pending, running = list(tasks), {}
    while pending or running:
        while pending and len(running) < jobs and (deadline is None or time.time() < deadline):
            task = pending.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=this._child, args=(task, send), daemon=True)
            proc.start()
            send.close()
            running[recv] = (proc, task, time.time())
        if not running:
            break
        for conn in wait(list(running), timeout=0.5):
            proc, task, _ = running.pop(conn)
            try:
                value, why = conn.recv(), ""
            except EOFError:
                proc.join(5)
                value, why = None, f"worker died (exit code {proc.exitcode})"
            proc.join(5)
            if proc.is_alive():
                proc.kill()
            conn.close()
            if isinstance(value, dict) and set(value) == {"error"}:
                value, why = None, value["error"]
            on_done(task, value, why)
        now = time.time()
        for conn, (proc, task, start) in list(running.items()):
            late = deadline is not None and now > deadline
            if now - start > timeout or late:
                proc.kill()
                proc.join(5)
                conn.close()
                running.pop(conn)
                why = "not finished (sweep deadline)" if late else f"killed after {now - start:.0f} s (timeout)"
                on_done(task, None, why)
    for task in pending:
        on_done(task, None, "not started (sweep deadline)")


# ---------------------------------------------------------------------------------------------------------------------
# Results JSON and the doc's tables


def versions() -> dict[str, str]:
    import platform

    out = {"python": platform.python_version(), "machine": f"{platform.machine()}, {os.cpu_count()} CPUs"}
    for lib in ("torch", "timm", "torchvision", "transformers"):
        try:
            out[lib] = __import__(lib).__version__
        except Exception:  # noqa: BLE001
            out[lib] = "missing"
    return out


def summary(results: list[ModelResult]) -> dict[str, int]:
    return {s: sum(r.status == s for r in results) for s in STATUSES}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render(source: str, data: dict) -> str:
    """The doc section of one source, from the results JSON (``data``)."""
    results = [ModelResult.from_dict(d) for d in data["models"] if d["source"] == source]
    counts = summary(results)
    errors = [r.round_trip for r in results if r.status == "OK" and r.round_trip is not None]
    worst = f"{max(errors):.1e}" if errors else "—"
    v = data["versions"]
    lines = [f"<!-- sweep:{source} -->",
             f"Command: `{data['command']}` ({len(results)} {source} models of {len(data['models'])}; the whole sweep "
             f"took {data['wall_s']:.0f} s on {v['machine']}; torch {v['torch']}, timm {v['timm']}, torchvision "
             f"{v['torchvision']}, transformers {v['transformers']}).", "",
             "| source | models | " + " | ".join(STATUSES) + " | worst OK round trip |",
             "|---|---|" + "---|" * len(STATUSES) + "---|",
             f"| {source} | {len(results)} | " + " | ".join(str(counts[s]) for s in STATUSES) + f" | {worst} |", "",
             "| model | status | norm classes found | replaced | kept | activations before → after | finite | "
             "round trip (layers, max rel. err) | note |", "|---|---|---|---|---|---|---|---|---|"]
    not_built, not_run = [], []
    for r in results:
        if r.status == "not built":
            not_built.append(f"`{r.name}` ({_cell(r.note[:80])})")
            continue
        if r.status == "not run":
            not_run.append(f"`{r.name}`")
            continue
        found = ", ".join(f"{k} ×{v}" for k, v in sorted(r.found.items())) or "—"
        kept = ", ".join(f"{k} ×{v}" for k, v in sorted(r.kept.items())) or "—"
        trip = "—" if r.round_trip is None else f"{r.round_trip_layers}, {r.round_trip:.1e}"
        if r.round_trip is None and r.round_trip_layers:
            trip = f"{r.round_trip_layers} (no same-kind factory layer)"
        finite = "—" if r.finite is None else ("yes" if r.finite else "no")
        acts = f"{r.activations[0]} → {r.activations[1]}" if r.status in ("OK", "silently changed") else "—"
        note = _cell(r.note) + (f" ({r.rerun})" if r.rerun else "")
        lines.append(f"| {r.name} | {r.status} | {found} | {r.replaced} | {kept} | {acts} | {finite} | {trip} | "
                     f"{note.strip()} |")
    if not_built:
        lines += ["", f"Not built ({len(not_built)}: the model did not build or run as built, from the shrunk config "
                      "with the sweep's generic inputs, before any surgery): " + "; ".join(not_built) + "."]
    if not_run:
        lines += ["", f"Not run ({len(not_run)}: still queued at the sweep's deadline): " + ", ".join(not_run) + "."]
    for rerun in data.get("reruns", []):
        mine = [m.split(":", 1)[1] for m in rerun["models"] if m.startswith(source + ":")]
        if mine:
            command = re.sub(r"--models \S{120,}", "--models <the models listed>", rerun["command"])
            lines += ["", f"Re-run (`{command}`, {rerun['wall_s']:.0f} s on {rerun['versions']['machine']}, timm "
                          f"{rerun['versions']['timm']}, transformers {rerun['versions']['transformers']}): "
                      + ", ".join(f"`{n}`" for n in mine) + "."]
    lines.append(f"<!-- /sweep:{source} -->")
    return "\n".join(lines)


def write_section(path: str, source: str, section: str) -> None:
    """Replace this source's marked section of ``path`` (or append it)."""
    text = open(path).read() if os.path.exists(path) else ""
    pattern = re.compile(rf"<!-- sweep:{source} -->.*?<!-- /sweep:{source} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    with open(path, "w") as f:
        f.write(text)


def write_results(path: str, data: dict) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    head = {k: v for k, v in data.items() if k != "models"}
    text = json.dumps(head, indent=1, ensure_ascii=False)[:-2]  # one model a line: small diffs, easy to read
    models = ",\n  ".join(json.dumps(m, ensure_ascii=False) for m in data["models"])
    with open(tmp, "w") as f:
        f.write(text + ',\n "models": [\n  ' + models + "\n ]\n}\n")
    os.replace(tmp, path)


def _parse_models(spec: str, sources: tuple[str, ...]) -> dict[str, dict[str, str]]:
    """``--models``: a results JSON (its recorded selection) or comma-separated ``source:name`` / ``name`` items."""
    if spec.endswith(".json"):
        with open(spec) as f:
            recorded = json.load(f)["selection"]
        return {s: recorded.get(s, {}) for s in sources}
    chosen: dict[str, dict[str, str]] = {s: {} for s in sources}
    for item in filter(None, (x.strip() for x in spec.split(","))):
        source, _, name = item.rpartition(":")
        if not source:
            if len(sources) != 1:
                raise ValueError(f"--models item {item!r} needs a source prefix (one of {', '.join(SOURCES)}:) "
                                 "when --source is all")
            source = sources[0]
        if source not in sources:
            raise ValueError(f"--models item {item!r}: source must be one of {', '.join(sources)}")
        chosen[source][name] = "named on the command line"
    return chosen


def _merge(path: str, rerun: dict) -> dict:
    """The results JSON at ``path`` with the re-run models' entries replaced, each marked with where it re-ran."""
    with open(path) as f:
        data = json.load(f)
    v = rerun["versions"]
    where = f"re-run on {v['machine']}: timm {v['timm']}, transformers {v['transformers']}"
    fresh = {(m["source"], m["name"]): dict(m, rerun=where) for m in rerun["models"] if m["status"] != "not run"}
    known = {(m["source"], m["name"]) for m in data["models"]}
    missing = sorted(f"{s}:{n}" for s, n in set(fresh) - known)
    if missing:
        raise ValueError(f"--update: {missing} are not in {path}; allowed: the models it holds")
    data["models"] = [fresh.get((m["source"], m["name"]), m) for m in data["models"]]
    data.setdefault("reruns", []).append({"command": rerun["command"], "versions": v, "wall_s": rerun["wall_s"],
                                          "models": [f"{s}:{n}" for s, n in fresh]})
    return data


def build_parser():
    import jsonargparse

    parser = jsonargparse.ArgumentParser(prog="python -m dyt_bench.norms.sweep", description=__doc__.splitlines()[0])
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile)
    parser.add_argument("--source", choices=SOURCES + ("all",), default="all", help="timm, tv (torchvision), hf or all")
    parser.add_argument("--select", choices=("families",), default="families",
                        help="families: the selection described in the module docstring")
    parser.add_argument("--models", type=str, default="",
                        help="instead of --select: comma-separated [source:]name items, or a results JSON whose "
                             "recorded selection is re-run exactly")
    parser.add_argument("--jobs", type=int, default=1, help="processes (0: in this process, no timeout)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per model before it is killed")
    parser.add_argument("--deadline", type=float, default=0.0,
                        help="seconds for the whole sweep (0: none); later models are reported as timeout")
    parser.add_argument("--results", type=str, default=DEFAULT_RESULTS, help="the per-model results JSON written")
    parser.add_argument("--out", type=str, default="docs/surgery.md",
                        help="markdown file whose sweep sections are rewritten ('' to skip)")
    parser.add_argument("--update", type=bool, default=False,
                        help="re-run the --models named and replace their entries in the existing --results JSON "
                             "(each marked with where it re-ran), instead of writing a new one")
    parser.add_argument("--from-results", type=str, default="",
                        help="only rewrite --out's sections from this results JSON (no models are run)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.from_results:
        with open(args.from_results) as f:
            data = json.load(f)
        for source in sorted({m["source"] for m in data["models"]}):
            write_section(args.out, source, render(source, data))
        return 0
    if args.jobs < 0 or args.timeout <= 0 or args.deadline < 0:
        raise ValueError("--jobs must be >= 0, --timeout > 0 and --deadline >= 0; got "
                         f"{args.jobs}, {args.timeout}, {args.deadline}")
    sources = SOURCES if args.source == "all" else (args.source,)
    start = time.time()
    deadline = start + args.deadline if args.deadline else None
    log = sys.stderr
    command = "python -m dyt_bench.norms.sweep " + shlex.join(argv if argv is not None else sys.argv[1:])
    data = {"command": command,
            "versions": versions(), "jobs": args.jobs, "wall_s": 0.0, "selection": {}, "models": []}
    if args.models:
        selection = _parse_models(args.models, sources)
    else:
        selection, meta = {}, []
        for source in sources:
            if source == "timm":
                import timm

                names = timm.list_models()
                chunks = [("meta", "timm", names[i:i + 20]) for i in range(0, len(names), 20)]
                run_tasks(chunks, args.jobs, args.timeout * 4, lambda t, v, why: meta.extend(v or []), deadline)
                selection["timm"] = select_timm(meta)
                data["timm_meta_failed"] = sorted(r["name"] for r in meta if r["params"] is None)
                failed = sum(r["params"] is None for r in meta)
                print(f"timm: {len(names)} models on meta ({failed} failed there), {len(selection['timm'])} chosen "
                      f"({time.time() - start:.0f} s)", file=log, flush=True)
            else:
                selection[source] = select_tv() if source == "tv" else select_hf()
    data["selection"] = selection
    tasks = [("model", s, n) for s in sources for n in selection.get(s, {})]
    done = [0]

    def on_done(task, value, why):
        _, source, name = task
        status = "not run" if "sweep deadline" in why else "timeout" if "killed" in why else "crash"
        result = ModelResult.from_dict(value) if value else ModelResult(name, source, status, note=why)
        data["models"].append(result.to_dict())
        done[0] += 1
        print(f"[{done[0]}/{len(tasks)}] {source}:{name}: {result.status} ({result.seconds:.1f} s) {result.note[:150]}",
              file=log, flush=True)
        if done[0] % 25 == 0 and not args.update:  # a partial file survives a killed sweep
            data["wall_s"] = round(time.time() - start, 1)
            write_results(args.results, data)

    run_tasks(tasks, args.jobs, args.timeout, on_done, deadline)
    order = {(s, n): i for i, (_, s, n) in enumerate(tasks)}
    data["models"].sort(key=lambda d: order.get((d["source"], d["name"]), 0))
    data["wall_s"] = round(time.time() - start, 1)
    if args.update:
        data = _merge(args.results, data)
    write_results(args.results, data)
    results = [ModelResult.from_dict(d) for d in data["models"] if d["source"] in sources]
    for source in sources:
        counts = summary([r for r in results if r.source == source])
        print(f"{source}: " + ", ".join(f"{k} {v}" for k, v in counts.items()), file=log, flush=True)
        if args.out:
            write_section(args.out, source, render(source, data))
    bad = sum(r.status in ("silently changed", "crash") for r in results)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
