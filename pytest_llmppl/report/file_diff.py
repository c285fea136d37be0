"""What a refresh accepts, for the reviewer of the pull request that commits it (``diff OLD NEW``).

Two committed files, entry by entry: recorded checks by test and call order, baselines by
their key (a baseline whose key changed, new weights for the same test, is paired by its
test).  For each changed entry: PPL before -> after and the paired Δ ± SE over the windows
both recorded (the statistics ``ppl_check`` prints against a record, from the same per-window
NLLs), the KL and the size where recorded; and which entries came or went.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..judge.stats import Comparison, PairedDelta


@dataclass(frozen=True)
class EntryChange:
    test: str
    entry: str                       # "baseline" or "check N"
    change: str                      # added | removed | changed
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    paired: PairedDelta | None = None

    @property
    def ppl_before(self) -> float | None:
        return _ppl(self.before)

    @property
    def ppl_after(self) -> float | None:
        return _ppl(self.after)


@dataclass(frozen=True)
class FileDiff:
    changes: tuple[EntryChange, ...]
    unchanged: int

    def counts(self) -> dict[str, int]:
        out = {kind: sum(1 for c in self.changes if c.change == kind) for kind in ("changed", "added", "removed")}
        return {**out, "unchanged": self.unchanged}


def diff_files(old: dict[str, Any], new: dict[str, Any]) -> FileDiff:
    """Entry by entry (parsed committed files, as ``BaselinesFile`` holds them)."""
    pairs: list[tuple[str, str, dict[str, Any] | None, dict[str, Any] | None]] = []
    old_checks, new_checks = old.get("checks", {}), new.get("checks", {})
    for test in sorted(set(old_checks) | set(new_checks)):
        before, after = old_checks.get(test, []), new_checks.get(test, [])
        for i in range(max(len(before), len(after))):
            pairs.append((test, f"check {i + 1}", before[i] if i < len(before) else None,
                          after[i] if i < len(after) else None))
    pairs += _baseline_pairs(old.get("baselines", {}), new.get("baselines", {}))
    changes, unchanged = [], 0
    for test, entry, before, after in pairs:
        if before is not None and after is not None and _canonical(before) == _canonical(after):
            unchanged += 1
            continue
        kind = "added" if before is None else "removed" if after is None else "changed"
        changes.append(EntryChange(test, entry, kind, before, after, _paired(before, after)))
    return FileDiff(tuple(changes), unchanged)


def _baseline_pairs(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, Any, Any]]:
    """Baselines by key; a key gone and one come for the same test are one entry changed."""
    pairs = [(str(new.get(k, old.get(k, {})).get("test", "")), "baseline", old.get(k), new.get(k))
             for k in sorted(set(old) & set(new))]
    gone = {k: e for k, e in old.items() if k not in new}
    come = {k: e for k, e in new.items() if k not in old}
    by_test: dict[str, list[str]] = {}
    for k in sorted(gone):
        by_test.setdefault(str(gone[k].get("test", "")), []).append(k)
    for k in sorted(come):
        test = str(come[k].get("test", ""))
        match = by_test.get(test)
        pairs.append((test, "baseline", gone.pop(match.pop(0)) if match else None, come[k]))
    pairs += [(str(e.get("test", "")), "baseline", e, None) for k, e in sorted(gone.items())]
    return sorted(pairs, key=lambda p: (p[0], p[1]))


def _paired(before: dict[str, Any] | None, after: dict[str, Any] | None) -> PairedDelta | None:
    """after - before over the windows both recorded (``ppl_check``'s statistics against a record)."""
    if before is None or after is None or not after["window_index"]:
        return None
    try:
        return Comparison.of(_Windows.of(before), _Windows.of(after)).paired
    except (ValueError, ZeroDivisionError, OverflowError, KeyError, TypeError):
        return None


class _Windows(NamedTuple):
    """A committed entry's per-window numbers, as ``Comparison`` reads a result's."""

    window_index: list[int]
    window_nll: list[float]
    window_weight: list[float]
    n_windows_total: int
    top1: None = None

    @classmethod
    def of(cls, entry: dict[str, Any]) -> _Windows:
        return cls(entry["window_index"], entry["window_nll"], entry["window_weight"], int(entry["n_windows_total"]))


def _ppl(entry: dict[str, Any] | None) -> float | None:
    value = entry.get("ppl") if entry is not None else None
    return float(value) if isinstance(value, (int, float)) else None


def _canonical(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


HEADERS = ("test", "entry", "change", "PPL", "Δ ± SE (paired)", "KL", "params")


def rows(diff: FileDiff) -> list[tuple[str, ...]]:
    """One row of text per changed entry, in ``HEADERS`` order."""
    from ..judge.records import se_text, signed

    out: list[tuple[str, ...]] = []
    for c in diff.changes:
        ppl = f"{_num(c.ppl_before)} → {_num(c.ppl_after)}"
        delta = ""
        if c.paired is not None:
            pct = f" ({signed(100 * c.paired.delta_ppl / c.ppl_before, 2)}%)" if c.ppl_before else ""
            delta = f"{signed(c.paired.delta_ppl)} ± {se_text(c.paired.delta_ppl_se)}{pct}"
        elif c.ppl_before is not None and c.ppl_after is not None:
            delta = f"{signed(c.ppl_after - c.ppl_before)} (other windows)"
        out.append((c.test, c.entry, c.change, ppl, delta, _arrow(_kl(c.before), _kl(c.after)),
                    _arrow(_params(c.before), _params(c.after), count=True)))
    return out


def _kl(entry: dict[str, Any] | None) -> float | None:
    kl = entry.get("kl") if entry is not None else None
    return float(kl["mean"]) if isinstance(kl, dict) and isinstance(kl.get("mean"), (int, float)) else None


def _params(entry: dict[str, Any] | None) -> float | None:
    size = entry.get("size") if entry is not None else None
    return float(size["params"]) if isinstance(size, dict) and isinstance(size.get("params"), int) else None


def _arrow(before: float | None, after: float | None, count: bool = False) -> str:
    if before is None and after is None:
        return ""
    if count:
        from .render import count_text

        text = " → ".join(count_text(x) if x is not None else "–" for x in (before, after))
        if before and after is not None:
            text += f" ({signed_pct(100 * (after - before) / before)})"
        return text
    return f"{_num(before)} → {_num(after)}"


def signed_pct(x: float) -> str:
    from ..judge.records import signed

    return f"{signed(x, 1)}%"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:.4f}" if math.isfinite(x) else str(x)


def summary_line(diff: FileDiff) -> str:
    counts = diff.counts()
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def terminal(diff: FileDiff) -> str:
    table = [HEADERS, *rows(diff)]
    widths = [max(len(r[i]) for r in table) for i in range(len(HEADERS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return ("\n".join(lines) + "\n" if diff.changes else "") + summary_line(diff)


def markdown(diff: FileDiff, title: str = "") -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = [f"### {title or 'pytest-llmppl: what this refresh accepts'}", "", summary_line(diff), ""]
    if diff.changes:
        lines.append("| " + " | ".join(HEADERS) + " |")
        lines.append("|" + "|".join("---" for _ in HEADERS) + "|")
        for r in rows(diff):
            lines.append("| " + " | ".join([f"`{cell(r[0])}`", *map(cell, r[1:])]) + " |")
    return "\n".join(lines) + "\n"
