"""Putting a split refresh back together: shards into one committed file, and two branches'
committed files into one (git's merge driver).

Both are deterministic: the same inputs in any order give the same bytes.  Two inputs that
recorded different numbers for one entry are a conflict, never a silent choice: after a
split refresh the usual cause is two GPU types in one matrix; after two branches, two
refreshes of the same test.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BaselineError
from .baselines import BaselinesFile
from .entries import same_numbers
from .file_changes import FileChanges, file_sha256


@dataclass(frozen=True)
class ShardsMerged:
    text: str               # the committed file as one unsplit refresh would write it
    baselines: int          # recorded
    checks: int
    removed: int
    kept_unfinished: int    # records of tests that did not run to their end in any shard
    not_run: int            # tests of the suite no shard reported (a shard missing from the inputs?)


def merge_shards(committed: Path, shards: dict[str, FileChanges]) -> ShardsMerged:
    """Replay the refresh over the union of the shards (``shards``: name -> changes): what each
    recorded and used, the tests that passed, reported and finished, and the suite they split."""
    started = {c.base_sha256 for c in shards.values()}
    here = file_sha256(committed)
    if len(started) > 1:
        raise BaselineError(f"the shards started from different versions of {committed.name}: "
                            f"{_by_base(shards)}; run every shard from the same commit")
    if started != {here}:
        raise BaselineError(f"{committed} is not the file the shards started from (it changed since they ran, or "
                            "another file was given): merge into the file as it was checked out for the shards")
    _refuse_conflicts(shards)
    file = BaselinesFile.load(committed, replacing=True)
    ordered = sorted(shards.values(), key=FileChanges.to_json)  # any input order: the same bytes
    for changes in ordered:
        for key, entry in changes.baselines.items():
            file.record(key, entry)
        for test, entries in changes.checks.items():
            file.updated_checks.setdefault(test, list(entries))
        file.used.update(changes.used)
    passed, seen, finished = (set().union(*(getattr(c, name) for c in ordered)) for name in
                              ("passed", "seen", "finished"))
    whole_files = _whole_files(ordered, finished)
    file.name_entries(finished, seen, whole_files)
    stale, stale_checks = file.stale(passed, seen, whole_files)
    suite = set().union(*(c.suite or () for c in ordered))
    return ShardsMerged(file.render(drop=stale, drop_checks=stale_checks), len(file.updated),
                        sum(len(v) for v in file.updated_checks.values()), len(stale) + len(stale_checks),
                        file.unfinished((suite | seen) - finished), len(suite - seen))


def _whole_files(shards: list[FileChanges], finished: set[str]) -> set[str]:
    """Files the shards together ran whole: each collected the same suite with nothing chosen by
    name or mark, and every test of the file ran to its end in one of them.  Only there does a
    record's test missing from the suite mean a test gone."""
    suites = {c.suite for c in shards}
    if len(suites) != 1 or None in suites:
        return set()
    (suite,) = suites
    assert suite is not None
    files = {t.split("::")[0] for t in suite}
    return files - {t.split("::")[0] for t in suite if t not in finished}


def _refuse_conflicts(shards: dict[str, FileChanges]) -> None:
    """Two shards with different numbers for one entry: an error naming both and the entry."""
    first: dict[tuple[str, str], tuple[str, Any]] = {}
    for name in sorted(shards):
        changes = shards[name]
        records = [(("baseline", key), entry, [entry]) for key, entry in changes.baselines.items()]
        records += [(("checks", test), entries[0] if entries else {}, entries)
                    for test, entries in changes.checks.items()]
        for where, shown, entries in records:
            if where not in first:
                first[where] = (name, entries)
                continue
            other, theirs = first[where]
            if not _alike_numbers(theirs, entries):
                what = (f"baseline {where[1][:12]} (test {shown.get('test')}, model {shown.get('model')})"
                        if where[0] == "baseline" else f"the recorded checks of {where[1]}")
                raise BaselineError(
                    f"shards {other} and {name} recorded different numbers for {what}: "
                    f"{_ppls(theirs)} vs {_ppls(entries)}. Shards of one refresh must measure alike: the usual cause "
                    "is two GPU types (or dtypes, or software versions) in one matrix; refresh on one kind of runner")


def _ppls(entries: list[dict[str, Any]]) -> str:
    return ", ".join(f"PPL {e.get('ppl', float('nan')):.4f} on {e.get('device')}/{e.get('dtype')}" for e in entries)


def _by_base(shards: dict[str, FileChanges]) -> str:
    groups: dict[str, list[str]] = {}
    for name, changes in sorted(shards.items()):
        groups.setdefault(changes.base_sha256[:12] or "(no file)", []).append(name)
    return "; ".join(f"{', '.join(names)} from {base}" for base, names in sorted(groups.items()))


@dataclass(frozen=True)
class BranchesMerged:
    text: str
    conflicts: tuple[str, ...]  # entries both branches changed differently (ours kept for each)


def merge_branches(base: Path, ours: Path, theirs: Path) -> BranchesMerged:
    """Three-way merge of committed files, entry by entry (git's ``%O %A %B``): an entry one branch
    changed takes that change; one both changed alike, or with numbers equal within float noise,
    is merged (the first test id names it); one both changed differently is a conflict."""
    o, a, b = (_load_any(path) for path in (base, ours, theirs))
    conflicts: list[str] = []
    baselines = _three_way(o.entries, a.entries, b.entries, conflicts, "baseline")
    checks = _three_way(o.checks, a.checks, b.checks, conflicts, "checks of")
    merged = BaselinesFile(ours, entries=baselines, checks=checks)
    return BranchesMerged(merged.render(), tuple(conflicts))


def _load_any(path: Path) -> BaselinesFile:
    """A committed file; git gives an empty one as the base of a file both branches added."""
    if path.exists() and not path.read_bytes().strip():
        return BaselinesFile(path)
    return BaselinesFile.load(path)


def _three_way(o: dict[str, Any], a: dict[str, Any], b: dict[str, Any], conflicts: list[str],
               what: str) -> dict[str, Any]:
    out = {}
    for key in sorted(set(o) | set(a) | set(b)):
        old, mine, other = o.get(key), a.get(key), b.get(key)
        if _canonical(mine) == _canonical(other) or _canonical(other) == _canonical(old):
            value = mine
        elif _canonical(mine) == _canonical(old):
            value = other
        else:
            value = _alike(mine, other)
            if value is None:
                conflicts.append(f"{what} {key[:12] if what == 'baseline' else key}: both branches recorded it "
                                 f"anew, with different numbers ({_ppls(_entries(mine))} vs {_ppls(_entries(other))})")
                value = mine
        if value is not None:
            out[key] = value
    return out


def _alike(mine: Any, other: Any) -> Any:
    """Both branches' versions when they differ only in the naming test and float noise: the one
    the first test id names (None if they differ otherwise, or one branch removed it)."""
    if mine is None or other is None:
        return None
    if not _alike_numbers(_entries(mine), _entries(other)):
        return None
    return min(mine, other, key=lambda v: (_entries(v)[0].get("test", ""), _canonical(v)))


def _alike_numbers(left: list[dict[str, Any]], right: list[dict[str, Any]]) -> bool:
    """The same records, numbers within float noise (both ways: no input order matters)."""
    return len(left) == len(right) and all(same_numbers(x, y) and same_numbers(y, x) for x, y in zip(left, right))


def _entries(value: Any) -> list[dict[str, Any]]:
    return value if isinstance(value, list) else [value] if value is not None else []


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)
