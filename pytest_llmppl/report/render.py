"""The summary table, the JSON report and the GitHub-flavoured markdown report, from records.

The table is built from (header, cell) column specs; rows are in run order, one per
check or plain measurement (a baseline gets a row only in a test that checks nothing).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..identity.spec import short_name, software_versions
from ..judge.records import (
    AgainstRecord,
    BaselineRecord,
    CheckRecord,
    MeasureRecord,
    Record,
    Verdict,
    plural,
    se_text,
    signed,
    to_json,
)
from ..settings import DEFAULT_PROTOCOL, Settings, budget_words

REPORT_FORMAT = "pytest-llmppl report v1"
MAX_WIDTH = 160
MIN_TEST_WIDTH = 40
MAX_CHARTS = 5


def _num(x: float | None, digits: int = 4) -> str:
    if x is None:
        return "nan"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}"


def _delta(r: Record) -> str:
    if not isinstance(r, CheckRecord):
        return ""
    if r.delta is None:
        return "nan"
    if r.identical_to_baseline:
        return "0 (identical weights)"
    text = f"{signed(r.delta)}"
    if r.delta_se is not None:
        text += f" ± {se_text(r.delta_se)}"
    if r.relative_budget and r.delta_pct is not None:
        text += f" ({signed(r.delta_pct, 2)}%)"
    return text


def _recorded(r: Record) -> str:
    return _num(r.recorded) if isinstance(r, CheckRecord) and r.recorded is not None else ""


def _vs_recorded(r: Record) -> str:
    """The comparison with the check's own record: Δ ± SE and what it means."""
    if not isinstance(r, CheckRecord) or r.regression_tolerance is None:
        return ""
    status = r.against_record.value
    d = r.delta_recorded
    if d is None or r.against_record is AgainstRecord.UNCHANGED:
        return status
    text = f"{signed(d)}"
    if r.delta_recorded_se is not None:
        text += f" ± {se_text(r.delta_recorded_se)}"
    return f"{text} {status}"


def _has_records(records: list[Record]) -> bool:
    return any(isinstance(r, CheckRecord) and r.regression_tolerance is not None for r in records)


def _top1(r: Record) -> str:
    if not isinstance(r, CheckRecord) or r.top1 is None or r.measured is None:
        return ""
    return f"{100 * r.top1.share:.1f}% ± {se_text(100 * r.top1.se, 1)}"


def _kl(r: Record) -> str:
    """Mean KL divergence from the dense model ± SE (nats per token), with its budget when set."""
    if not isinstance(r, CheckRecord) or r.kl is None:
        return ""
    text = f"{r.kl.mean:.4f} ± {se_text(r.kl.se if math.isfinite(r.kl.mean) else None)}"
    return text + (f" (≤ {r.kl_budget:g})" if r.kl_budget is not None else "")


def _has_kl(records: list[Record]) -> bool:
    return any(isinstance(r, CheckRecord) and (r.kl is not None or r.kl_budget is not None) for r in records)


def count_text(n: float) -> str:
    """``0.50M``, ``6.74B``: parameter counts at a glance."""
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.2f}M"


def _params(r: Record) -> str:
    """The model's parameters and, for a check, the share of the dense baseline's it keeps; a
    size guard's failure or a size not recorded says so."""
    if r.subject.params is None:
        return ""
    text = count_text(r.subject.params)
    if isinstance(r, CheckRecord):
        if r.kept is not None:
            text += f" ({100 * r.kept:.0f}%)"
        if r.size_grew:
            text += " grew"
    return text


def _has_params(records: list[Record]) -> bool:
    return any(r.subject.params is not None for r in records)


def _baseline(r: Record) -> str:
    if isinstance(r, CheckRecord):
        return _num(r.baseline)
    if isinstance(r, BaselineRecord):
        return _num(r.baseline)
    return ""


def _measured(r: Record) -> str:
    if isinstance(r, (CheckRecord, MeasureRecord)):
        return _num(r.measured)
    return ""


def _verdict(r: Record) -> str:
    return r.verdict.name.replace("NOT_FINITE", "NAN") if isinstance(r, CheckRecord) else ""


def _source(r: Record) -> str:
    if isinstance(r, CheckRecord):
        text = f"{r.baseline_source.value}/{r.measured_source.value}"
    elif isinstance(r, BaselineRecord):
        text = r.baseline_source.value
    else:
        text = r.measured_source.value
    if any(note.startswith("waited") for note in r.notes):
        text += " (waited)"  # its seconds are a wait for another xdist worker, not a lookup
    return text + (" (unpinned)" if r.subject.unpinned else "")


def _corpus(r: Record) -> str:
    s = r.subject
    name = short_name(s.corpus)
    return name + (f" [{s.n_windows}/{s.n_windows_total} windows]" if s.n_windows != s.n_windows_total else "")


def _protocol(r: Record) -> str:
    s = r.subject
    return s.protocol + (f"/{s.stride}" if s.stride is not None else "")


def _non_default_protocol(records: list[Record]) -> bool:
    return any(r.subject.protocol != DEFAULT_PROTOCOL or r.subject.stride is not None for r in records)


@dataclass(frozen=True)
class Column:
    header: str
    cell: Callable[[Record], str]
    numeric: bool = False
    shown: Callable[[list[Record]], bool] = lambda records: True


COLUMNS: tuple[Column, ...] = (
    Column("test", lambda r: r.subject.test),
    Column("model", lambda r: short_name(r.subject.model)),
    Column("id", lambda r: r.subject.model_id),
    Column("corpus", _corpus),
    Column("protocol", _protocol, shown=_non_default_protocol),
    Column("seqlen", lambda r: str(r.subject.seqlen), numeric=True),
    Column("baseline", _baseline, numeric=True),
    Column("measured", _measured, numeric=True),
    Column("Δ", _delta, numeric=True),
    Column("recorded", _recorded, numeric=True, shown=_has_records),
    Column("vs recorded", _vs_recorded, numeric=True, shown=_has_records),
    Column("params", _params, numeric=True, shown=_has_params),
    Column("top-1", _top1, numeric=True),
    Column("KL", _kl, numeric=True, shown=_has_kl),
    Column("budget", lambda r: budget_words(r.budget) if isinstance(r, CheckRecord) else "", numeric=True),
    Column("verdict", _verdict),
    Column("source", _source),
    Column("seconds", lambda r: f"{r.seconds:.2f}", numeric=True),
)


def table_records(records: list[Record]) -> list[Record]:
    """Checks and plain measurements in run order; a baseline only in a test that checks nothing."""
    checked = {r.subject.test for r in records if isinstance(r, CheckRecord)}
    return [r for r in records if not (isinstance(r, BaselineRecord) and r.subject.test in checked)]


def _grid(records: list[Record]) -> tuple[list[Column], list[list[str]]]:
    rows = table_records(records)
    columns = [c for c in COLUMNS if c.shown(rows)]
    return columns, [[c.cell(r) for c in columns] for r in rows]


def shorten_middle(text: str, width: int) -> str:
    """``test_a_very_lo…arameter[0.125]``: keeps both ends, where test ids differ."""
    if len(text) <= width or width < 5:
        return text
    head = (width - 1) // 2
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def terminal_table(records: list[Record], width: int = MAX_WIDTH) -> str:
    """Rows fit ``width`` columns (160: wide terminals and CI logs) by shortening test ids."""
    columns, rows = _grid(records)
    widths = [max(len(c.header), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    rest = sum(widths[1:]) + 2 * (len(widths) - 1)
    test_width = max(MIN_TEST_WIDTH, min(widths[0], width - rest))
    rows = [[shorten_middle(row[0], test_width), *row[1:]] for row in rows]
    widths[0] = max(len(columns[0].header), *(len(row[0]) for row in rows))
    lines = []
    for cells in [[c.header for c in columns], *rows]:
        lines.append("  ".join(cell.rjust(w) if c.numeric else cell.ljust(w)
                               for cell, w, c in zip(cells, widths, columns)).rstrip())
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def summary_counts(records: list[Record]) -> dict[str, int]:
    checks = [r for r in records if isinstance(r, CheckRecord)]
    baselines = [r for r in records if isinstance(r, BaselineRecord)]
    return {
        "pass": sum(r.verdict is Verdict.PASS for r in checks),
        "fail": sum(r.verdict is Verdict.FAIL for r in checks),
        "nan": sum(r.verdict is Verdict.NOT_FINITE for r in checks),
        "baseline": len(baselines),
        "baseline_measured": sum(r.baseline_source.value == "measured" for r in baselines),
        # numbers that a forward on this runner produced (baselines, checks and plain measurements)
        "measured": sum(r.baseline_source.value == "measured" if isinstance(r, BaselineRecord)
                        else r.measured_source.value == "measured" for r in records),
        "ppl_of": sum(isinstance(r, MeasureRecord) for r in records),
        "served_without_forward": sum(
            (isinstance(r, CheckRecord) and r.measured_source.value in ("cache", "memory"))
            or (isinstance(r, MeasureRecord) and r.measured_source.value in ("cache", "memory"))
            or (isinstance(r, BaselineRecord) and r.baseline_source.value != "measured") for r in records),
    }


def json_report(records: list[Record], settings: Settings, outcomes: dict[str, int], header: str = "") -> str:
    """The run's records, with what ``merge`` needs to join shards' reports (``header``: the
    settings lines the markdown report opens with)."""
    data = {
        "format": REPORT_FORMAT,
        "settings": settings.to_json(),
        "versions": software_versions(),
        "header": header,
        "outcomes": outcomes,
        "summary": summary_counts(records),
        "records": [to_json(r) for r in records],
    }
    return report_text(data)


def report_text(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


# What a reviewer reads in a GitHub step summary (~1,000 px): the verdict first, then the numbers
# it rests on; settings every row shares go to one line above the table instead of a column each.
MD_TEST_WIDTH = 48
SHARED = ("model", "corpus", "protocol", "seqlen", "budget")


def markdown(records: list[Record], header: str = "", outcomes: dict[str, int] | None = None) -> str:
    """A GitHub-flavoured markdown table (verdict first, test ids in code spans, pipes escaped) and,
    per failing check, its message and a mermaid chart of the NLL rise along the corpus."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = table_records(records)
    columns = [c for c in MD_COLUMNS if c.shown(rows)]
    shared = {c.header: c.cell(rows[0]) for c in columns if c.header in SHARED and rows
              and len({c.cell(r) for r in rows}) == 1}
    columns = [c for c in columns if c.header not in shared]
    icons = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "NAN": "⚠️ NaN"}
    lines = ["### pytest-llmppl perplexity checks", ""]
    for line in header.splitlines():  # one paragraph each: the settings, the versions note
        lines += [cell(line), ""]
    if shared:
        lines += [" · ".join(f"{k} **{cell(v)}**" for k, v in shared.items() if v), ""]
    lines.append("| " + " | ".join(c.header for c in columns) + " |")
    lines.append("|" + "|".join("---:" if c.numeric else "---" for c in columns) + "|")
    for r in rows:
        shown = []
        for c in columns:
            value = c.cell(r)
            if c.header == "test":
                value = f"`{shorten_middle(value, MD_TEST_WIDTH).replace('`', '')}`"
            elif c.header == "verdict":
                value = icons.get(value, value)
            shown.append(cell(value))
        lines.append("| " + " | ".join(shown) + " |")
    lines += ["", _footer(records, outcomes or {})]
    notes = [(r.subject.test, note) for r in rows for note in r.notes if not note.startswith("waited")]
    if notes:
        lines += ["", "Notes:", *(f"- `{test}`: {cell(note)}" for test, note in notes)]
    for chart in tradeoff_charts(records):
        lines += ["", *chart]
    charted: set[tuple[str, str, tuple[float | None, ...]]] = set()
    failing = [r for r in records if isinstance(r, CheckRecord) and r.verdict is not Verdict.PASS]
    for r in failing[:MAX_CHARTS]:
        lines += ["", *_details(r, charted)]
    return "\n".join(lines) + "\n"


def _kind(r: Record) -> str:
    """The verdict cell: a check's verdict; what a baseline or plain measurement row is."""
    return _verdict(r) if isinstance(r, CheckRecord) else ("baseline" if isinstance(r, BaselineRecord)
                                                             else "measured")


def _threshold(r: Record) -> str:
    if not isinstance(r, CheckRecord):
        return ""
    text = _num(r.threshold)
    if r.regression_threshold is not None:
        text = f"{text} (budget) / {_num(r.regression_threshold)} (record)"
    return text


_BY_HEADER = {c.header: c for c in COLUMNS}
MD_COLUMNS: tuple[Column, ...] = (
    Column("verdict", _kind),
    _BY_HEADER["test"], _BY_HEADER["measured"],
    Column("threshold", _threshold, numeric=True),
    *(_BY_HEADER[h] for h in ("baseline", "Δ", "recorded", "vs recorded", "params", "top-1", "KL", "budget",
                              "model", "id", "corpus", "protocol", "seqlen", "source", "seconds")),
)


def _details(r: CheckRecord, charted: set[tuple[str, str, tuple[float | None, ...]]]) -> list[str]:
    """A failing check's message, and its chart unless an identical one is already shown (two tests
    checking the same model against the same baseline)."""
    from ..judge.decision import failure_message

    worst = "; ".join(f"window {w.window}{' in ' + repr(w.heading) if w.heading else ''} "
                      f"{signed(w.delta_nll, 3)} nats/token" for w in (r.worst or r.worst_recorded))
    lines = [f"<details open><summary><code>{r.subject.test}</code>: {_kind(r)}"
             f"{': where it got worse: ' + worst if worst else ''}</summary>", "", "```text",
             failure_message(r), "```", ""]
    against, deltas = _charted_comparison(r)
    key = (r.subject.model_id, against, deltas)
    if not deltas:
        pass  # failed on size or KL alone: no perplexity to chart
    elif key not in charted:
        charted.add(key)
        lines += _chart(r, against, deltas)
    else:
        lines += [f"(the same model against the same {against} as a chart above)", ""]
    return [*lines, "</details>"]


def _charted_comparison(r: CheckRecord) -> tuple[str, tuple[float | None, ...]]:
    """What a failing check's chart compares: the baseline when the budget failed, else the
    record when the regression guard did (nothing when neither did)."""
    if "budget" in r.decided_by or r.verdict is Verdict.NOT_FINITE:
        return "baseline", r.window_delta
    if "regression" in r.decided_by:
        return "record", r.window_delta_recorded
    return "", ()


def _footer(records: list[Record], outcomes: dict[str, int]) -> str:
    c = summary_counts(records)
    tests = ", ".join(f"{n} {k}" for k, n in outcomes.items() if n)
    ours = (f"checks: {c['pass']} pass, {c['fail']} fail, {c['nan']} not finite; "
            f"{plural(c['baseline'], 'baseline')} ({c['baseline_measured']} measured); "
            f"{plural(c['served_without_forward'], 'number')} served without a forward.")
    return (f"pytest: {tests}. " if tests else "") + ours


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


def _chart(r: CheckRecord, against: str, window_delta: tuple[float | None, ...]) -> list[str]:
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
