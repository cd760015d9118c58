"""The paper's width rule for DyT's initial α in LLMs (Table 7 / Figure 5): wider models need a smaller α0."""

from __future__ import annotations

import math

# Best α0 by model width in the paper's LLaMA study (Table 7): 1.0 at 1024, 0.5 at 2048, 0.2 at 3072, 0.1–0.2 at 4096
# (0.15 here, the middle of the reported range), 0.1 at 5120. Depth does not change it (Table 7), nor do head
# dimension or sequence length (Table 10).
TABLE7_ALPHA_BY_WIDTH: dict[int, float] = {1024: 1.0, 2048: 0.5, 3072: 0.2, 4096: 0.15, 5120: 0.1}


def recommend_alpha_init(width: int) -> float:
    """α0 for a model of hidden size ``width``: the Table 7 value at its widths, log-linear in between, and the end
    values outside 1024–5120 (1.0 below, 0.1 above)."""
    if not isinstance(width, int) or isinstance(width, bool) or width < 1:
        raise ValueError(f"width must be a positive integer; got {width!r}")
    widths = sorted(TABLE7_ALPHA_BY_WIDTH)
    if width <= widths[0]:
        return TABLE7_ALPHA_BY_WIDTH[widths[0]]
    if width >= widths[-1]:
        return TABLE7_ALPHA_BY_WIDTH[widths[-1]]
    for lo, hi in zip(widths, widths[1:], strict=False):
        if lo <= width <= hi:
            t = (width - lo) / (hi - lo)
            a_lo, a_hi = math.log(TABLE7_ALPHA_BY_WIDTH[lo]), math.log(TABLE7_ALPHA_BY_WIDTH[hi])
            return round(math.exp(a_lo + t * (a_hi - a_lo)), 4)
    raise AssertionError("unreachable")


def build_parser():
    """The ``dyt-bench alpha-init`` options (jsonargparse: also from a YAML file with ``--config``)."""
    import jsonargparse

    parser = jsonargparse.ArgumentParser(prog="dyt-bench alpha-init", description=recommend_alpha_init.__doc__)
    parser.add_argument("--config", action=jsonargparse.ActionConfigFile, help="options from a YAML file")
    parser.add_argument("--width", type=int, required=True, nargs="+", help="hidden size(s) of the model")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``dyt-bench alpha-init --width N``: print the recommended α0 for a model width."""
    parser = build_parser()
    args = parser.parse_args(argv)
    for width in args.width:
        try:
            print(f"width {width}: alpha_init {recommend_alpha_init(width):g}")
        except ValueError as err:
            parser.error(str(err))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
