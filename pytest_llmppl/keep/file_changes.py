"""One shard's part of a refresh: what it recorded in and used from the committed file, and what
it knows of the suite, so ``merge`` can compute exactly what one unsplit refresh would write.

A suite split over N runners (pytest-split, pytest-test-groups, ``-k``) refreshes in N
processes, each seeing part of it.  None of them may decide alone which records are gone:
a test another shard ran may still use an entry.  So each writes this file instead of the
committed one (``--ppl-file-changes``), and ``merge`` replays the refresh over their union:
the records each recorded, the entries each used, the tests that passed, reported, ran to
their end, and the whole suite as collected before a splitter deselected its share.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BaselineError

CHANGES_FORMAT = "pytest-llmppl file changes v1"


@dataclass(frozen=True)
class FileChanges:
    base_sha256: str                           # the committed file's bytes the run started from ("" if none)
    baselines: dict[str, dict[str, Any]]       # recorded baselines, by file key
    checks: dict[str, list[dict[str, Any]]]    # recorded checks, by test id
    used: tuple[str, ...]                      # file keys served without being recorded again
    passed: tuple[str, ...]
    seen: tuple[str, ...]                      # every test that reported
    finished: tuple[str, ...]                  # tests that ran to their end
    suite: tuple[str, ...] | None              # the suite collected before deselection; None: narrowed (-k, -m, ids)
    stopped: bool = False                      # -x/--maxfail, an interrupt or a crash ended the run

    def to_json(self) -> str:
        data = {"format": CHANGES_FORMAT, "base_sha256": self.base_sha256,
                "baselines": dict(sorted(self.baselines.items())), "checks": dict(sorted(self.checks.items())),
                "used": sorted(self.used), "passed": sorted(self.passed), "seen": sorted(self.seen),
                "finished": sorted(self.finished), "suite": sorted(self.suite) if self.suite is not None else None,
                "stopped": self.stopped}
        return json.dumps(data, indent=1, allow_nan=False) + "\n"  # entries keep their fields' order

    @classmethod
    def from_json(cls, data: dict[str, Any], where: str) -> FileChanges:
        from .entries import validate_entry

        try:
            baselines, checks = data["baselines"], data["checks"]
            for key, entry in baselines.items():
                validate_entry(entry, f"{where}, baseline {key[:12]}")
            for test, entries in checks.items():
                for n, entry in enumerate(entries, 1):
                    validate_entry(entry, f"{where}, check {n} of {test}")
            suite = data["suite"]
            used, passed, seen, finished = (tuple(str(x) for x in data[name])
                                            for name in ("used", "passed", "seen", "finished"))
            return cls(str(data["base_sha256"]), dict(baselines), {t: list(e) for t, e in checks.items()},
                       used, passed, seen, finished, tuple(suite) if suite is not None else None,
                       bool(data["stopped"]))
        except (KeyError, TypeError, AttributeError) as exc:
            raise BaselineError(f"{where} is not a complete pytest-llmppl file-changes file ({exc!r}): write it "
                                "again with --ppl-update-baselines --ppl-file-changes") from None


def file_sha256(path: str | Path) -> str:
    """The bytes a run or a merge starts from ("" for a file that does not exist yet)."""
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        return ""
