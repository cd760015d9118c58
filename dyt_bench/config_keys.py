"""Dotted keys into a resolved LightningCLI config (``model.norm.kind``), and the keys that do not change what a run computes.

A resolved config nests a subclass-mode section as ``{"class_path": ..., "init_args": {...}}``; every walker here
treats ``init_args`` as transparent, so ``model.norm.kind`` names ``model.init_args.norm.kind``. This is the one place
that walks config dicts: the grid (setting and checking overrides), the result writer (the config hash) and the
leaderboard (axes inferred from results) all go through it.
"""

from __future__ import annotations

from typing import Any

INIT_ARGS = "init_args"
CLASS_PATH = "class_path"

# Keys that say where or how verbosely a run writes, not what it computes: excluded from the config hash, never
# table axes. A key also covers everything below it (``trainer.logger`` covers ``trainer.logger.init_args.save_dir``).
NON_SEMANTIC_KEYS: tuple[str, ...] = (
    "config", "ckpt_path", "__path__", "checkpoint",
    "trainer.default_root_dir", "trainer.logger", "trainer.callbacks",
    "trainer.enable_progress_bar", "trainer.enable_model_summary", "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
)
# Seeds change what a run computes (so they are hashed), but a leaderboard treats seeds as replicates, not as an axis.
REPLICATE_KEYS: tuple[str, ...] = ("seed_everything",)


def covered_by(key: str, prefixes: tuple[str, ...]) -> bool:
    """True when ``key`` is one of ``prefixes`` or lies below one of them."""
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def lookup(config: dict[str, Any], dotted: str) -> Any:
    """Value of a dotted key; ``model.norm.kind`` also finds ``model.init_args.norm.kind``. KeyError when absent."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict):
            raise KeyError(dotted)
        if part in node:
            node = node[part]
        elif isinstance(node.get(INIT_ARGS), dict) and part in node[INIT_ARGS]:
            node = node[INIT_ARGS][part]
        else:
            raise KeyError(dotted)
    return node


def assign(config: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key, creating dicts on the way and going through ``init_args`` below a ``class_path`` node."""
    parts = dotted.split(".")
    node = config
    for part in parts[:-1]:
        node = _into_init_args(node, part)
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = node[part] = {}
        node = nxt
    _into_init_args(node, parts[-1])[parts[-1]] = value


def _into_init_args(node: dict[str, Any], part: str) -> dict[str, Any]:
    if CLASS_PATH in node and part not in (CLASS_PATH, INIT_ARGS):
        return node.setdefault(INIT_ARGS, {})
    return node


def remove(config: dict[str, Any], dotted: str) -> None:
    """Delete a dotted key (through ``init_args`` levels) if it is there; nothing happens when it is absent."""
    head, _, rest = dotted.partition(".")
    if head not in config:
        if isinstance(config.get(INIT_ARGS), dict):
            remove(config[INIT_ARGS], dotted)
        return
    if not rest:
        del config[head]
    elif isinstance(config[head], dict):
        remove(config[head], rest)


def flatten(config: Any, exclude: tuple[str, ...] = (), prefix: str = "") -> dict[str, Any]:
    """The leaves of a config as ``{dotted key: value}``, ``init_args`` levels dropped; keys covered by ``exclude``
    (and everything below them) are left out. An empty dict is a leaf."""
    out: dict[str, Any] = {}
    if not isinstance(config, dict):
        return out
    for k, v in config.items():
        key = prefix if k == INIT_ARGS else (f"{prefix}.{k}" if prefix else str(k))
        if covered_by(key, exclude):
            continue
        if isinstance(v, dict) and v:
            out.update(flatten(v, exclude, key))
        else:
            out[key] = v
    return out


def without(config: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """A deep copy (through JSON; non-JSON values become strings) of ``config`` with ``keys`` removed."""
    import json

    out = json.loads(json.dumps(config, default=str))
    for key in keys:
        remove(out, key)
    return out


__all__ = ["NON_SEMANTIC_KEYS", "REPLICATE_KEYS", "assign", "covered_by", "flatten", "lookup", "remove", "without"]
