"""Shards' JSON reports joined into one report and one markdown summary (``merge``).

Records are ordered by test id (a test's calls in their order), outcomes added up, the
summary counted again over the joined records: the same inputs in any order give the same
bytes, and the records are those one unsplit run reports (timings aside).
"""

from __future__ import annotations

import json
from typing import Any

from ..errors import LLMPPLError


def merge_reports(reports: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """(JSON report, markdown) of the shards' reports (name -> parsed JSON)."""
    from ..judge.records import from_json
    from .markdown import markdown
    from .render import REPORT_FORMAT, report_text, summary_counts

    for name, data in reports.items():
        if data.get("format") != REPORT_FORMAT or not isinstance(data.get("records"), list):
            raise LLMPPLError(f"{name} is not a pytest-llmppl JSON report ({REPORT_FORMAT}): write the shards' "
                              "reports with --ppl-report")
    ordered = sorted(reports.values(), key=lambda d: json.dumps(d, sort_keys=True))
    rows = [row for data in ordered for row in data["records"]]
    rows = sorted(rows, key=lambda row: str(row.get("test", "")))  # stable: a test's calls keep their order
    outcomes: dict[str, int] = {}
    for data in ordered:
        for key, n in (data.get("outcomes") or {}).items():
            outcomes[key] = outcomes.get(key, 0) + int(n)
    records = [from_json(row) for row in rows]
    first = ordered[0] if ordered else {}
    header = str(first.get("header", ""))
    joined = {"format": REPORT_FORMAT, "settings": first.get("settings", {}), "versions": first.get("versions", {}),
              "header": header, "outcomes": outcomes, "summary": summary_counts(records), "records": rows,
              "shards": len(reports)}
    return report_text(joined), markdown(records, header, outcomes)
