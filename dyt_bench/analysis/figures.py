"""The probe's figures: one norm layer's output before the affine against its input, with the tanh fit overlaid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .layer_probe import LayerProbe

COLOR_BY = ("channel", "token")


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


__all__ = ["COLOR_BY", "plot_layer_probe"]
