"""Leaderboard tables as text: the terminal (rich), Markdown, CSV, JSON, an HTML page (``html``), or a PNG bar chart
(matplotlib); with the runs (``Extras``), each cell's throughput and peak memory and, on the page, validation curves.

``RENDERERS`` maps each output format to its renderer; adding a format is one entry there.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from dyt_bench.leaderboard.collect import Record
from dyt_bench.leaderboard.tables import Options, Table
from dyt_bench.leaderboard.text import BEST_MARK, cell_lines, header, legend, table_grid

__all__ = ["FORMATS", "RENDERERS", "SUFFIX_FORMATS", "Extras", "Renderer", "cell_lines", "records_of", "render",
           "render_csv", "render_html", "render_json", "render_markdown", "render_png", "render_terminal"]


@dataclass
class Extras:
    """What the tables alone do not hold: the runs behind them (for throughput / memory and curves) and which resource
    columns to show (``--show throughput,memory``)."""

    records: list[Record] = field(default_factory=list)
    show: tuple[str, ...] = ()

    def resources(self, table: Table) -> dict:
        from dyt_bench.leaderboard.curves import table_resources

        return table_resources(table, self.records) if self.records else {}

    def cell_extra(self, table: Table) -> dict:
        """(row key, col key) → the resource lines of each cell (empty without ``show``)."""
        if not self.show or not self.records:
            return {}
        from dyt_bench.leaderboard.curves import resource_lines

        return {key: resource_lines(summary, self.show) for key, summary in self.resources(table).items()}


def _with_extra(table: Table, opts: Options, extras: Extras | None):
    """``table_grid`` with each cell's resource lines appended."""
    head, body = table_grid(table, opts)
    extra = extras.cell_extra(table) if extras is not None else {}
    if extra:
        for (_, row), rk in zip(body, table.rows, strict=True):
            for (_, lines), ck in zip(row, table.cols, strict=True):
                lines.extend(extra.get((rk, ck), []))
    return head, body

# ---------------------------------------------------------------------------------------------------------------
# Formats
# ---------------------------------------------------------------------------------------------------------------
def _style(j: int, line: str) -> str:
    if j == 0 and line.startswith(BEST_MARK):
        return "bold green"
    if line.startswith(("Diverge", "Stalled")):
        return "yellow"
    if line.startswith("paper"):
        return "dim"
    if "n.s." in line:
        return "dim italic"
    return ""


def render_terminal(tables: list[Table], opts: Options, file=None, width: int | None = None,
                    extras: Extras | None = None) -> None:
    from rich.console import Console
    from rich.table import Table as RichTable
    from rich.text import Text

    console = Console(file=file, width=width, force_terminal=None if file is None else False)
    for table in tables:
        head, body = _with_extra(table, opts, extras)
        # Text objects, never str: titles, labels and cells come from result.json and configs, and a str would be
        # read as Rich markup ("[bold]" styles, "[/bold]" crashes)
        rt = RichTable(title=Text(f"{table.title}\n{header(table, opts)}", style="bold"), title_justify="left",
                       show_lines=True)
        for i, h in enumerate(head):
            rt.add_column(Text(str(h)), justify="left" if i == 0 else "right")
        for row_label, row in body:
            cells = [Text(row_label, style="bold")]
            for _, lines in row:
                text = Text()
                for j, line in enumerate(lines):
                    text.append(("\n" if j else "") + line, style=_style(j, line))
                cells.append(text)
            rt.add_row(*cells)
        console.print(rt)
        console.print(Text("\n".join([legend(table, opts), *table.notes]), style="dim"))
        console.print()


def _md(value) -> str:
    """A value safe inside one markdown table cell: pipes escaped, line breaks as <br>."""
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\r\n", "<br>").replace("\n", "<br>")


def render_markdown(tables: list[Table], opts: Options, extras: Extras | None = None) -> str:
    out = []
    for table in tables:
        head, body = _with_extra(table, opts, extras)
        out.append(f"**{_md(table.title)}** — {_md(header(table, opts))}\n")
        out.append("| " + " | ".join(_md(h) for h in head) + " |")
        out.append("|" + "---|" * len(head))
        for row_label, row in body:
            cells = [_md(row_label)]
            for _, lines in row:
                lines = [_md(ln) for ln in lines]
                if lines[0].startswith(BEST_MARK):
                    lines[0] = f"**{lines[0]}**"
                cells.append("<br>".join(lines))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
        out.append(legend(table, opts) + ("; " + "; ".join(table.notes) if table.notes else "") + ".")
        out.append("")
    return "\n".join(out)


def render_html(tables: list[Table], opts: Options, extras: Extras | None = None) -> str:
    """One self-contained page (``leaderboard.html``): tables, bar charts and, where the runs logged a metrics CSV,
    validation curves."""
    from dyt_bench.leaderboard.curves import plot_curves, table_bands
    from dyt_bench.leaderboard.html import Page, figure_bytes, render_page

    page = Page()
    records = extras.records if extras is not None else []
    for table in tables:
        page.bars.append(figure_bytes(lambda f, table=table: render_png([table], opts, f)))
        has_curves = bool(records) and bool(table_bands(table, records, opts.metric)[0])
        page.curves.append(figure_bytes(lambda f, table=table: plot_curves(table, records, opts, f))
                           if has_curves else None)
        page.cell_extra.append(extras.cell_extra(table) if extras is not None else {})
    return render_page(tables, opts, page)


def _status(s) -> str:
    if s.n:
        return "partial" if s.not_trained else "ok"
    if s.not_trained:
        return "Diverge" if not s.stalled else "Stalled" if not s.diverged else "Diverge/Stalled"
    return "missing"


def records_of(tables: list[Table], opts: Options, extras: Extras | None = None) -> list[dict[str, Any]]:
    """One flat record per table cell (the CSV rows and the JSON ``cells``); values unscaled. With the runs
    (``extras``), each cell's mean throughput (samples/s) and peak memory (MB) too."""
    out = []
    for table in tables:
        resources = extras.resources(table) if extras is not None else {}
        for (rk, ck), cell in table.cells.items():
            s = cell.stats
            res = resources.get((rk, ck), {})
            out.append({
                "samples_per_s": res.get("samples_per_s"), "peak_memory_mb": res.get("peak_memory_mb"),
                "table": table.title, "grid": table.grid, "task": table.task, "metric": opts.metric,
                "value": opts.value, "test": opts.test, "mode": opts.mode, "row": " · ".join(rk),
                "col": " · ".join(ck), "axes": dict(cell.labels), "n": s.n, "runs": s.runs,
                "mean": s.mean if s.n else None, "std": s.std if s.n >= 2 else None, "values": s.values,
                "seeds": s.seeds, "diverged": s.diverged, "stalled": s.stalled, "diverged_best": s.diverged_best,
                "stalled_values": s.stalled_values, "chance": s.chance, "failed": s.failed,
                "interrupted": s.interrupted, "missing": s.missing, "status": _status(s),
                "baseline": cell.is_baseline, "delta": cell.delta,
                "ci95": list(cell.ci95) if cell.ci95 is not None else None, "p": cell.p, "p_holm": cell.p_holm,
                "significant": cell.significant, "note": cell.note, "fisher_p": cell.fisher_p,
                "fisher_p_holm": cell.fisher_p_holm, "fisher_significant": cell.fisher_significant,
                "paper": cell.paper, "paper_version": table.paper_version if cell.paper is not None else None,
                "best_in_row": cell.best_in_row, "argbest": cell.argbest, "runner_up": cell.runner_up,
                "not_trained_values": {label: {"diverged": u.diverged, "stalled": u.stalled, "runs": u.runs}
                                       for label, u in cell.untrained.items()},
                "scale": opts.scale,
            })
    return out


CSV_FIELDS = ("metric", "value", "test", "mode", "n", "runs", "mean", "std", "diverged", "stalled", "chance", "failed",
              "interrupted", "status", "baseline", "delta", "ci95_low", "ci95_high", "p", "p_holm", "significant",
              "fisher_p", "fisher_p_holm", "fisher_significant", "paper", "paper_version", "best_in_row", "argbest",
              "runner_up", "values", "seeds", "samples_per_s", "peak_memory_mb")  # after table, grid, task, the axes


def render_csv(tables: list[Table], opts: Options, extras: Extras | None = None) -> str:
    rows = records_of(tables, opts, extras)
    axis_names: list[str] = []
    for r in rows:
        axis_names += [k for k in r["axes"] if k not in axis_names]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=["table", "grid", "task", *axis_names, *CSV_FIELDS],
                            extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        ci = r["ci95"] or (None, None)
        flat = {**r, **r["axes"], "values": " ".join(f"{v:.6g}" for v in r["values"]),
                "seeds": " ".join(str(s) for s in r["seeds"]), "ci95_low": ci[0], "ci95_high": ci[1]}
        writer.writerow(flat)
    return buf.getvalue()


def render_json(tables: list[Table], opts: Options, extras: Extras | None = None) -> str:
    return json.dumps({"metric": opts.metric, "value": opts.value, "mode": opts.mode, "test": opts.test,
                       "alpha": opts.alpha, "stall_margin": opts.stall_margin,
                       "tables": [{"title": t.title, "header": header(t, opts), "grid": t.grid, "task": t.task,
                                   "facet": t.facet, "rows": [a.name for a in t.row_axes],
                                   "cols": [a.name for a in t.col_axes], "comparisons": t.comparisons,
                                   "fisher_tests": t.fisher_tests, "paper_version": t.paper_version,
                                   "chance": t.chance, "legend": legend(t, opts), "notes": t.notes}
                                  for t in tables],
                       "cells": records_of(tables, opts, extras)}, indent=2, default=str) + "\n"


def render_png(tables: list[Table], opts: Options, path: Path | IO[bytes]) -> None:
    """Grouped bars (groups = rows, bars = columns) with ±std error bars; the paper's numeric values as markers."""
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axs = plt.subplots(len(tables), 1, figsize=(max(6.0, 1.6 * max(len(t.rows) * len(t.cols) for t in tables)),
                                                     3.8 * len(tables)), squeeze=False)
    for ax, table in zip(axs[:, 0], tables, strict=True):
        n_cols = max(1, len(table.cols))
        outlined = []
        width = 0.8 / n_cols
        x = np.arange(len(table.rows))
        for j, ck in enumerate(table.cols):
            cells = [table.cells[(rk, ck)] for rk in table.rows]
            means = np.array([c.stats.mean * opts.scale if c.stats.n else 0.0 for c in cells])
            stds = np.array([c.stats.std * opts.scale if c.stats.n >= 2 else 0.0 for c in cells])
            pos = x - 0.4 + width * (j + 0.5)
            label = " · ".join(ck) if ck else opts.metric
            bars = ax.bar(pos, means, width * 0.92, yerr=stds, capsize=3, label=label)
            for p, c, bar in zip(pos, cells, bars, strict=True):
                if not c.stats.n and (c.stats.not_trained or c.stats.failed):
                    label = "Diverge" if c.stats.diverged else "Stalled" if c.stats.stalled else "failed"
                    ax.text(p, ax.get_ylim()[0], label, rotation=90, ha="center", va="bottom", fontsize=8)
                elif c.best_in_row:
                    outlined.append(bar)
                if isinstance(c.paper, (int, float)) and not isinstance(c.paper, bool):
                    ax.plot(p, c.paper, marker="D", mfc="none", mec="black", ms=5)
        ax.set_xticks(x)
        ax.set_xticklabels([" · ".join(rk) if rk else "all" for rk in table.rows])
        ax.set_title(table.title, fontsize=10)
        ax.set_ylabel(opts.metric + (f" ×{opts.scale:g}" if opts.scale != 1 else ""))
        finite = [c.stats.mean * opts.scale for c in table.cells.values() if c.stats.n]
        if finite and opts.mode == "max":
            lo = min(finite) - 0.15 * (max(finite) - min(finite) + 1e-9) - 3 * max(
                (c.stats.std * opts.scale for c in table.cells.values() if c.stats.n >= 2), default=0)
            ax.set_ylim(bottom=max(0.0, lo))
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        for bar in outlined:  # after the legend, so its swatches stay plain
            bar.set_edgecolor("black")
            bar.set_linewidth(1.5)
    fig.suptitle("bars: mean ± std over seeds; ◇ the paper's value; outlined: best in row", fontsize=8)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------------------
# The format table
# ---------------------------------------------------------------------------------------------------------------
def _prepare(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    return out


Writer = Callable[[list[Table], Options, "Path | None", "Extras | None"], None]


def _write_terminal(tables: list[Table], opts: Options, out: Path | None, extras: Extras | None = None) -> None:
    if out is None:
        render_terminal(tables, opts, extras=extras)
        return
    with open(_prepare(out), "w", encoding="utf-8") as f:
        render_terminal(tables, opts, file=f, width=200, extras=extras)


def _write_text(render: Callable[..., str]) -> Writer:
    """A text renderer as a writer: to stdout, or to the file ``out``."""
    def write(tables: list[Table], opts: Options, out: Path | None, extras: Extras | None = None) -> None:
        text = render(tables, opts, extras)
        if out is None:
            sys.stdout.write(text)
        else:
            _prepare(out).write_text(text, encoding="utf-8")

    return write


def _write_png(tables: list[Table], opts: Options, out: Path | None, extras: Extras | None = None) -> None:
    render_png(tables, opts, _prepare(out))


@dataclass(frozen=True)
class Renderer:
    """An output format: how to write the tables (``out`` None: to stdout; ``extras``: the runs behind them), the
    file suffixes that select it, and whether it can only go to a file."""

    write: Writer
    suffixes: tuple[str, ...]
    needs_file: bool = False


RENDERERS: dict[str, Renderer] = {
    "terminal": Renderer(_write_terminal, (".txt",)),
    "md": Renderer(_write_text(render_markdown), (".md",)),
    "csv": Renderer(_write_text(render_csv), (".csv",)),
    "json": Renderer(_write_text(render_json), (".json",)),
    "html": Renderer(_write_text(render_html), (".html", ".htm")),
    "png": Renderer(_write_png, (".png",), needs_file=True),
}
DEFAULT_FORMAT = "terminal"
FORMATS = tuple(RENDERERS)
# Output suffix → format; the terminal table's plain-text suffix listed last (as the --output error shows them).
SUFFIX_FORMATS = {suffix: name for name, r in sorted(RENDERERS.items(), key=lambda kv: kv[0] == DEFAULT_FORMAT)
                  for suffix in r.suffixes}


def render(tables: list[Table], opts: Options, fmt: str, out: Path | None = None,
           extras: Extras | None = None) -> None:
    """Write ``tables`` in format ``fmt`` to the file ``out``, or to stdout."""
    RENDERERS[fmt].write(tables, opts, out, extras)
