"""pytest-split's durations file from the plugin's reports, so shards split by GPU time.

pytest-split balances shards with ``--durations-path`` (``{test id: seconds}``).  Its own
``--store-durations`` records how long each test took in that run, which for a test
served from the cache or the committed file is near zero, although the same test costs
its forwards on the runner where its model changed.  A test here costs what its calls
cost to measure: each result's own forward time (windows x forward time, kept with the
result wherever it is served from), or the call's time when that is larger; a result
this process already had costs what the call took.
"""

from __future__ import annotations

from typing import Any


def durations_of(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds per test id over the records of the given JSON reports (a later report's test
    replaces an earlier one's)."""
    out: dict[str, float] = {}
    for data in reports:
        per_test: dict[str, float] = {}
        for row in data.get("records", []):
            test = row.get("test")
            if not isinstance(test, str) or not test:
                continue
            per_test[test] = per_test.get(test, 0.0) + _cost(row)
        out.update(per_test)
    return {test: round(seconds, 3) for test, seconds in sorted(out.items())}


def _cost(row: dict[str, Any]) -> float:
    seconds = float(row.get("seconds") or 0.0)
    sources = {row.get("baseline_source"), row.get("measured_source")} - {None}
    if sources == {"memory"}:
        return seconds
    return max(seconds, float(row.get("forward_seconds") or 0.0))
