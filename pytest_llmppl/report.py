"""The summary table, the JSON report and the GitHub-flavoured markdown report."""

from __future__ import annotations

import json
import math
import os

COLUMNS = ("test", "corpus", "seqlen", "baseline", "measured", "Δ", "top-1", "budget", "verdict", "source", "seconds")


def _num(x, digits: int = 4) -> str:
    if x is None:
        return "nan"
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}f}"


def _delta(row: dict) -> str:
    if row.get("delta") is None:
        return "" if row.get("kind") != "check" else "nan"
    paired = row.get("paired")
    text = f"{row['delta']:+.4f}"
    if paired and paired.get("delta_ppl_se") is not None:
        text += f" ± {paired['delta_ppl_se']:.4f}"
    return text


def _top1(row: dict) -> str:
    t = row.get("top1")
    return f"{100 * t['share']:.1f}% ± {100 * t['se']:.1f}" if t else ""


def _short(corpus: str) -> str:
    """A file corpus by its name only (the JSON report keeps the full path)."""
    return os.path.basename(corpus) if os.sep in corpus else corpus


def table_rows(records: list[dict]) -> list[tuple[str, ...]]:
    """One row per check or plain measurement; a baseline gets its own row only in a test
    that checks nothing (the check row already names the baseline and its source)."""
    checked = {r.get("test") for r in records if r.get("kind") == "check"}
    out = []
    for r in records:
        if r.get("kind") == "baseline" and r.get("test") in checked:
            continue
        windows = f"{r.get('n_windows')}/{r.get('n_windows_total')}" if r.get("n_windows") != r.get("n_windows_total") else ""
        out.append((
            r.get("test", ""), _short(r.get("corpus", "")) + (f" [{windows} windows]" if windows else ""),
            str(r.get("seqlen", "")), _num(r.get("baseline")) if r.get("baseline") is not None or r.get("kind") != "measure" else "",
            _num(r.get("measured")) if r.get("kind") != "baseline" else "", _delta(r), _top1(r), r.get("budget", ""),
            r.get("verdict", "").upper() if r.get("verdict") in ("pass", "fail", "nan") else r.get("verdict", ""),
            r.get("baseline_source", ""), f"{r.get('seconds', 0.0):.2f}",
        ))
    return out


def terminal_table(records: list[dict]) -> str:
    rows = [COLUMNS] + table_rows(records)
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(records: list[dict], header: str = "") -> str:
    """A GitHub-flavoured markdown table (pipes in cells escaped)."""
    def cell(s: str) -> str:
        return s.replace("|", "\\|").replace("\n", " ")

    lines = ["### pytest-llmppl perplexity checks", ""]
    if header:
        lines += [cell(header), ""]
    lines.append("| " + " | ".join(COLUMNS) + " |")
    lines.append("|" + "|".join("---" if c in ("test", "corpus", "verdict", "source") else "---:" for c in COLUMNS) + "|")
    for row in table_rows(records):
        verdict = row[8]
        icon = {"PASS": "✅ PASS", "FAIL": "❌ FAIL", "NAN": "❌ NAN"}.get(verdict, verdict)
        lines.append("| " + " | ".join(cell(c) for c in (*row[:8], icon, *row[9:])) + " |")
    counts = summary_counts(records)
    lines += ["", f"{counts['pass']} passed, {counts['fail']} failed, {counts['nan']} not finite, "
              f"{counts['baseline']} baselines ({counts['baseline_measured']} measured)."]
    return "\n".join(lines) + "\n"


def summary_counts(records: list[dict]) -> dict:
    c = {"pass": 0, "fail": 0, "nan": 0, "baseline": 0, "baseline_measured": 0, "measured": 0}
    for r in records:
        v = r.get("verdict")
        if v in c:
            c[v] += 1
        if r.get("kind") == "baseline" and r.get("baseline_source") == "measured":
            c["baseline_measured"] += 1
    return c


def _clean(value):
    """Non-finite floats become null: the report stays valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def json_report(records: list[dict], settings: dict) -> str:
    data = {"settings": settings, "summary": summary_counts(records), "records": records}
    return json.dumps(_clean(data), indent=1, default=str, allow_nan=False) + "\n"
