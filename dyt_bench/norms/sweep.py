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

from .sweep_checks import _round_trip, sweep_model  # noqa: F401 - _round_trip: importable from here
from .sweep_models import (  # noqa: F401 - the sweep's vocabulary, importable from here
    DEFAULT_RESULTS,
    ROUND_TRIP_TOL,
    SOURCES,
    STATUSES,
    ModelResult,
    _norm_layer,
    _one_line,
    _timm_family,
    _timm_meta,
    select_hf,
    select_timm,
    select_tv,
)

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
                code = proc.exitcode
                why = (f"worker killed by signal {-code}, not by the sweep (a resource limit: memory, most likely)"
                       if code is not None and code < 0 else f"worker died (exit code {code})")
                value = None
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
