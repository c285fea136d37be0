"""Mermaid charts for the markdown report: the trade-off curve of a ratio sweep (perplexity
against the share of parameters kept), and a failing check's NLL rise along the corpus."""

from __future__ import annotations

import math

from ..judge.records import CheckRecord, Record

MAX_CHARTS = 5  # failing checks that get their details and chart

MIN_CURVE = 3  # candidates of one baseline that make a trade-off curve (a ratio sweep)
CURVE_INIT = ('%%{init: {"theme": "base", "themeVariables": {"xyChart": {"backgroundColor": "#ffffff", '
              '"plotColorPalette": "#c0392b, #7f8c8d"}}}}%%')


def tradeoff_charts(records: list[Record]) -> list[list[str]]:
    """PPL against the share of the dense model's parameters kept, one chart per baseline with
    ``MIN_CURVE`` or more candidates (a ratio sweep): the dense point, this run's candidates (red)
    and, where every candidate has a record, the recorded ones (grey), so the whole curve's move
    is one picture.  The axis labels say the share kept (and the record's, where it differs)."""
    by_baseline: dict[str, list[CheckRecord]] = {}
    for r in records:
        if isinstance(r, CheckRecord) and r.kept is not None and r.measured is not None and \
                math.isfinite(r.measured) and r.baseline_params:
            by_baseline.setdefault(r.baseline_model_id, []).append(r)
    charts = []
    for checks in by_baseline.values():
        points = {c.subject.model_id: c for c in checks}
        if len(points) < MIN_CURVE:
            continue
        ordered = sorted(points.values(), key=lambda c: c.kept or 0.0)
        dense = ordered[0].baseline
        labels = [_kept_label(c) for c in ordered] + ['"100% (dense)"']
        now = [c.measured or 0.0 for c in ordered] + [dense]
        recorded = [c.recorded for c in ordered]
        lines = ["Trade-off: PPL against the share of the dense model's parameters kept"
                 + (" (red: this run; grey: recorded)" if all(x is not None for x in recorded) else ""), "",
                 "```mermaid", CURVE_INIT, "xychart-beta", '    title "PPL vs parameters kept"',
                 f'    x-axis "parameters kept" [{", ".join(labels)}]']
        values = [v for v in [*now, *(x for x in recorded if x is not None)] if math.isfinite(v)]
        lines.append(f'    y-axis "PPL" 0 --> {1.05 * max(values):.4f}')
        lines.append("    line [" + ", ".join(f"{v:.4f}" for v in now) + "]")
        if all(x is not None for x in recorded):
            lines.append("    line [" + ", ".join(f"{x:.4f}" for x in [*recorded, dense] if x is not None) + "]")
        charts.append([*lines, "```"])
    return charts


def _kept_label(c: CheckRecord) -> str:
    text = f"{100 * (c.kept or 0.0):.0f}%"
    if c.recorded_params is not None and c.baseline_params and c.recorded_params != c.subject.params:
        text += f" (rec {100 * c.recorded_params / c.baseline_params:.0f}%)"
    return f'"{text}"'


MAX_BARS = 60  # more windows are averaged in bins: a bar per window is a smear at 166 or 1,000
AXIS_LABELS = 10  # window numbers on the axis: more overlap
# Mermaid draws a bar from the plot's bottom up to its value.  So a bar from 0 to v, below zero when
# v < 0, is drawn in two series: the colour up to max(0, v), then the background colour up to
# min(0, v), covering what lies below the bar; a dark line marks zero.  The chart's background is
# set, so that the covering bars match it in any theme.
CHART_INIT = ('%%{init: {"theme": "base", "themeVariables": {"xyChart": {"backgroundColor": "#ffffff", '
              '"plotColorPalette": "#c0392b, #ffffff, #444444"}}}}%%')


def chart_bins(window_index: tuple[int, ...], deltas: list[float]) -> tuple[list[int], list[float], int]:
    """(first window of each bar, its mean ΔNLL, windows per bar): one bar per window up to
    ``MAX_BARS``, else consecutive bins of equal size (the last may be smaller)."""
    size = max(1, math.ceil(len(deltas) / MAX_BARS))
    starts, means = [], []
    for b in range(0, len(deltas), size):
        chunk = deltas[b:b + size]
        starts.append(window_index[b])
        means.append(math.fsum(chunk) / len(chunk))
    return starts, means, size


def chart(r: CheckRecord, against: str, window_delta: tuple[float | None, ...]) -> list[str]:
    """Mermaid ``xychart-beta`` of the ΔNLL per token along the corpus: a bar per window (or per
    bin of windows, averaged, when there are many; the axis says so), a few axis labels, bars
    below zero where the candidate got better, and a title that fits (the test id is in the
    ``<summary>`` line above)."""
    values = [0.0 if d is None or not math.isfinite(d) else d for d in window_delta]
    if not values:
        return []
    index = r.window_index if len(r.window_index) == len(values) else tuple(range(len(values)))
    starts, means, size = chart_bins(index, values)
    lo, hi = min(0.0, *means), max(0.0, *means)
    pad = 0.05 * (hi - lo) or 1e-3
    lo, hi = (lo - pad if lo < 0 else 0.0), hi + pad
    every = math.ceil(len(starts) / AXIS_LABELS)
    # A band axis (bars side by side); the bars between labels get distinct invisible names (a
    # band axis merges equal ones), so a few window numbers stand apart and readable.
    labels = [f'"{i}"' if k % every == 0 else '"' + "\u200b" * (k + 1) + '"' for k, i in enumerate(starts)]
    title = "window" if size == 1 else f"window (each bar: mean of {size} windows)"
    axis = f'    x-axis "{title}" [{", ".join(labels)}]'

    def series(xs: list[float]) -> str:
        return "[" + ", ".join(f"{x:.4f}" for x in xs) + "]"

    return [
        "```mermaid",
        CHART_INIT,
        "xychart-beta",
        f'    title "ΔNLL per window vs {against}"',
        axis,
        f'    y-axis "ΔNLL (nats/token)" {lo:.4f} --> {hi:.4f}',
        f"    bar {series([max(0.0, m) for m in means])}",
        f"    bar {series([min(0.0, m) for m in means])}",
        f"    line {series([0.0] * len(means))}",
        "```",
        "",
    ]
