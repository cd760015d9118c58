"""What the probe writes: the per-layer summary CSV, and for chosen layers the plotted points (CSV) and a scatter plot
of the output before the affine against the input with the tanh fit overlaid."""

from __future__ import annotations

import os
from pathlib import Path

from dyt_bench.callbacks.run_files import write_csv

from .layer_probe import LayerProbe

COLOR_BY = ("channel", "token")
SUMMARY_FIELDS = ("layer", "class", "layout", "num_features", "input_std", "fit_a", "fit_scale", "fit_rmse", "fit_r2",
                  "saturated_fraction")
POINTS_FIELDS = ("input", "output_before_affine", "channel", "token")


def plot_layer_probe(p: LayerProbe, path: Path, color_by: str = "channel", max_colored_channels: int = 8) -> Path:
    """Scatter plot of ``p``'s points coloured by channel (the ``max_colored_channels`` channels with the most extreme
    inputs in colour, the rest grey, as in the paper's Figure 2) or by token / position; returns ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fig, ax = plt.subplots(figsize=(4.5, 4))
    if color_by == "channel":
        extreme = torch.argsort(torch.stack([p.x[p.channel == c].abs().max() if (p.channel == c).any() else
                                             torch.tensor(0.0) for c in range(p.num_features)]), descending=True)
        picked = extreme[:max_colored_channels].tolist()
        rest = ~torch.isin(p.channel, torch.tensor(picked))
        ax.scatter(p.x[rest], p.y[rest], s=1, c="0.75", rasterized=True)
        for c in picked:
            m = p.channel == c
            ax.scatter(p.x[m], p.y[m], s=2, label=f"ch {c}", rasterized=True)
        ax.legend(fontsize=6, markerscale=4, loc="lower right")
    else:
        sc = ax.scatter(p.x, p.y, s=1, c=p.token, cmap="viridis", rasterized=True)
        fig.colorbar(sc, ax=ax, label="token / position")
    grid = torch.linspace(float(p.x.min()), float(p.x.max()), 200)
    ax.plot(grid, p.fit.scale * torch.tanh(p.fit.a * grid), "k--", lw=1, label=f"{p.fit.scale:.2f}·tanh({p.fit.a:.2f}x)")
    ax.set_title(f"{p.name} ({p.cls})\nfit {p.fit.scale:.2f}·tanh({p.fit.a:.2f}x): RMSE {p.fit.rmse:.3f}, "
                 f"R² {p.fit.r2:.3f}", fontsize=8)
    ax.set_xlabel("input")
    ax.set_ylabel("output before affine")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def choose_layers(probes: list[LayerProbe], layers: list[str] | None, count: int = 4) -> list[LayerProbe]:
    """Probes named in ``layers`` (exact names or substrings), or ``count`` evenly spaced ones."""
    if layers:
        chosen = [p for p in probes if any(sel == p.name or sel in p.name for sel in layers)]
        if not chosen:
            raise ValueError(f"--layers {layers} matches no norm layer; layers: {', '.join(p.name for p in probes)}")
        return chosen
    if len(probes) <= count:
        return probes
    step = (len(probes) - 1) / (count - 1)
    return [probes[round(i * step)] for i in range(count)]


def write_probe(probes: list[LayerProbe], out_dir: str | os.PathLike, layers: list[str] | None = None,
                color_by: str = "channel", max_colored_channels: int = 8) -> dict[str, Path]:
    """Write ``probe_summary.csv`` (every layer), ``probe_points_<layer>.csv`` and ``probe_<layer>.png`` (chosen ones)."""
    if color_by not in COLOR_BY:
        raise ValueError(f"color_by must be one of {', '.join(COLOR_BY)}; got {color_by!r}")
    out = Path(out_dir)
    written: dict[str, Path] = {}
    summary_rows = [{"layer": p.name, "class": p.cls, "layout": p.layout, "num_features": p.num_features,
                     "input_std": f"{p.input_std:.6g}", "fit_a": f"{p.fit.a:.6g}", "fit_scale": f"{p.fit.scale:.6g}",
                     "fit_rmse": f"{p.fit.rmse:.6g}", "fit_r2": f"{p.fit.r2:.6g}",
                     "saturated_fraction": "" if p.saturation is None else f"{p.saturation:.6g}"} for p in probes]
    written["summary"] = write_csv(out / "probe_summary.csv", summary_rows, SUMMARY_FIELDS)
    for p in choose_layers(probes, layers):
        safe = p.name.replace(".", "_")
        point_rows = ({"input": f"{x:.6g}", "output_before_affine": f"{y:.6g}", "channel": c, "token": t}
                      for x, y, c, t in zip(p.x.tolist(), p.y.tolist(), p.channel.tolist(), p.token.tolist(),
                                            strict=True))
        written[f"points:{p.name}"] = write_csv(out / f"probe_points_{safe}.csv", point_rows, POINTS_FIELDS)
        written[f"png:{p.name}"] = plot_layer_probe(p, out / f"probe_{safe}.png", color_by, max_colored_channels)
    return written


__all__ = ["COLOR_BY", "POINTS_FIELDS", "SUMMARY_FIELDS", "choose_layers", "plot_layer_probe", "write_probe"]
