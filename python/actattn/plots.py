"""Plot helpers the instruments share: a headless pyplot, a distinct style per line, seed bands, and
log axes that show exact zeros instead of dropping them."""

from __future__ import annotations

import math
import statistics
from typing import Dict, List, Sequence, Tuple

LINE_STYLES = ["-", "--", "-.", ":"]
MARKERS = ["o", "s", "^", "v", "D", "x", "P", "*"]
ZERO_NOTE = "exactly 0 (bottom edge)"


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_style(index: int, marker: bool = True) -> Dict[str, str]:
    """Six kinds can end close together: line style and marker as well as colour tell them apart."""
    style = {"linestyle": LINE_STYLES[index % len(LINE_STYLES)]}
    if marker:
        style["marker"] = MARKERS[index % len(MARKERS)]
    return style


def log_line(ax, xs: Sequence[float], ys: Sequence[float], **style):
    """``ax.plot`` for a log y axis. A log axis silently drops 0 (a dead relu stack's gradient norm is
    exactly 0), so zeros are drawn as ▼ on the axis's bottom edge in the line's colour, and the axes'
    legend (call ``ax.legend()`` after plotting) gets an entry saying so."""
    from matplotlib.transforms import blended_transform_factory

    (line,) = ax.plot(xs, [y if y > 0 else math.nan for y in ys], **style)
    zeros = [x for x, y in zip(xs, ys) if y == 0]
    if zeros:
        ax.plot(zeros, [0.0] * len(zeros), transform=blended_transform_factory(ax.transData, ax.transAxes),
                marker="v", markersize=8, linestyle="none", color=line.get_color(), clip_on=False)
        if not getattr(ax, "_zero_note", False):  # one legend entry per axes explains the marker
            ax.plot([], [], marker="v", linestyle="none", color="black", label=ZERO_NOTE)
            ax._zero_note = True
    return line


def seed_band(values_per_seed: Sequence[Sequence[float]]) -> Tuple[List[float], List[float], List[float]]:
    """Mean, min and max over seeds, position by position (up to the shortest seed's length): what `band`
    draws."""
    columns = list(zip(*values_per_seed))
    return [statistics.fmean(c) for c in columns], [min(c) for c in columns], [max(c) for c in columns]


def band(ax, xs, mean, low, high, label: str, log: bool = False, **style):
    """The mean as a line and the min-max range over seeds as a shaded band around it."""
    line = log_line(ax, xs, mean, label=label, **style) if log else ax.plot(xs, mean, label=label, **style)[0]
    if any(lo != hi for lo, hi in zip(low, high)):
        floor = [lo if (lo > 0 or not log) else math.nan for lo in low]
        ax.fill_between(xs, floor, high, color=line.get_color(), alpha=0.2, linewidth=0)
    return line
