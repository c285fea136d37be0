"""The summary table and the JSON report, from records (the markdown report is ``markdown``).

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
    se_text,
    signed,
    to_json,
)
from ..settings import DEFAULT_PROTOCOL, Settings, budget_words

REPORT_FORMAT = "pytest-llmppl report v1"
MAX_WIDTH = 160
MIN_TEST_WIDTH = 40
MAX_CHARTS = 5


def number_text(x: float | None, digits: int = 4) -> str:
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
    return number_text(r.recorded) if isinstance(r, CheckRecord) and r.recorded is not None else ""


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
        return number_text(r.baseline)
    if isinstance(r, BaselineRecord):
        return number_text(r.baseline)
    return ""


def _measured(r: Record) -> str:
    if isinstance(r, (CheckRecord, MeasureRecord)):
        return number_text(r.measured)
    return ""


def verdict_text(r: Record) -> str:
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
    Column("verdict", verdict_text),
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
