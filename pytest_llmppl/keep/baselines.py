"""The committed file: baselines and recorded checks, human-readable, deterministic, validated at start-up.

``{"format": "pytest-llmppl baselines v3", "baselines": {file_key: entry},
"checks": {test_id: [entry, ...]}}``, one field per line.  A baseline is addressed by
``MeasurementSpec.file_key`` (weights, tokenizer, corpus content, protocol, seqlen, stride,
window subset, device type, dtype); a recorded check by its test id and the order of the
``ppl_check`` calls in it.  Both are the same kind of entry: the fingerprints and settings
(so a mismatch is reported rather than silently compared), the software it ran with, the
PPL and the per-window NLLs.  Any entry whose identity a call has is served from the file,
whatever fixture asks.  Entries hold no timestamps or timings, and paths are relative to
the file, so a refresh with unchanged numbers gives no diff.  A 0.2 file (v2) is read as
baselines only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BaselineError
from ..identity.model_identity import IDENTITY_VERSION
from ..identity.spec import MeasurementSpec, entry_keys
from .entries import same_numbers, validate_entry

FILE_FORMAT = "pytest-llmppl baselines v3"
BASELINES_ONLY_FORMATS = ("pytest-llmppl baselines v2",)  # 0.2: read as baselines, rewritten as v3 on update
OLD_FORMATS = ("pytest-llmppl baselines v1",)
@dataclass(frozen=True)
class Lookup:
    """What the file holds for one identity: the entry (and its key among the baselines, if it
    is one), or the entries for the same model and settings measured elsewhere."""

    entry: dict[str, Any] | None = None
    key: str | None = None
    elsewhere: tuple[dict[str, Any], ...] = ()


@dataclass
class BaselinesFile:
    """The committed file: entries as loaded, entries recorded in this run, keys used in this run."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    updated: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated_checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)
    format: str = FILE_FORMAT
    _by_key: dict[str, tuple[dict[str, Any], str | None]] | None = field(default=None, repr=False)
    _by_weights: dict[str, list[tuple[str, dict[str, Any], bool]]] | None = field(default=None, repr=False)

    @property
    def folder(self) -> Path:
        return self.path.resolve().parent

    @property
    def has_checks(self) -> bool:
        """False for a 0.2 file, which could not record checks."""
        return self.format == FILE_FORMAT

    @classmethod
    def load(cls, path: str | Path, *, must_exist: bool = False, replacing: bool = False) -> BaselinesFile:
        """Read and validate now (a malformed file is a start-up error).  ``replacing``: the run
        will rewrite it (``--ppl-update-baselines``), so an old format is not an error."""
        self = cls(Path(path))
        if not self.path.exists():
            if must_exist:
                raise BaselineError(
                    f"baselines file {self.path} does not exist: create it with --ppl-update-baselines "
                    "(on the machine the suite runs on) and commit it."
                )
            return self
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BaselineError(
                f"baselines file {self.path} is not valid JSON ({exc}); fix it or regenerate it with "
                "--ppl-update-baselines."
            ) from None
        return cls.parse(self.path, text, replacing=replacing)

    @classmethod
    def parse(cls, path: str | Path, text: str, *, replacing: bool = False) -> BaselinesFile:
        """``load`` of text already read (``diff`` reads one side from stdin); ``path`` names it."""
        self = cls(Path(path))
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BaselineError(
                f"baselines file {self.path} is not valid JSON ({exc}); fix it or regenerate it with "
                "--ppl-update-baselines."
            ) from None
        fmt = data.get("format") if isinstance(data, dict) else None
        if fmt in OLD_FORMATS:
            if replacing:
                return self
            raise BaselineError(
                f"baselines file {self.path} is in the older format {fmt!r}: regenerate it with "
                "--ppl-update-baselines (entries now record the corpus content and the software versions)."
            )
        checks = data.get("checks", {}) if isinstance(data, dict) else None
        if (fmt not in (FILE_FORMAT, *BASELINES_ONLY_FORMATS) or not isinstance(data.get("baselines"), dict)
                or not isinstance(checks, dict)):
            raise BaselineError(
                f"baselines file {self.path} is not a pytest-llmppl baselines file (expected "
                f'{{"format": "{FILE_FORMAT}", "baselines": {{...}}, "checks": {{...}}}}); regenerate it with '
                "--ppl-update-baselines."
            )
        for key, entry in data["baselines"].items():
            validate_entry(entry, f"baselines file {self.path}, entry {key[:12]} ({_test_of(entry)})")
        for test, entries in checks.items():
            if not isinstance(entries, list) or not entries:
                raise BaselineError(f"baselines file {self.path}, checks of {test}: expected a non-empty list; "
                                    "regenerate it with --ppl-update-baselines")
            for n, entry in enumerate(entries, 1):
                validate_entry(entry, f"baselines file {self.path}, check {n} of {test}")
        self.format = fmt
        self.entries = data["baselines"]
        self.checks = checks
        return self

    def find(self, spec: MeasurementSpec) -> Lookup:
        """The entry with this identity (this run's first, then the file's baselines, then its
        recorded checks); else the entries for the same model and settings on another device
        type or dtype (a 0.2 entry, keyed without them, counts as found when they match)."""
        if spec.file_key in self.updated:  # recorded this run, under its file key
            return Lookup(self.updated[spec.file_key], spec.file_key)
        by_key, by_weights = self._index()
        if spec.file_key in by_key:
            return Lookup(*by_key[spec.file_key])
        elsewhere = []
        for key, entry, legacy in by_weights.get(spec.weights_key, ()):
            if legacy and (entry.get("device"), entry.get("dtype")) == (spec.device_type, spec.dtype):
                return Lookup(entry, key)
            elsewhere.append(entry)
        return Lookup(elsewhere=tuple(elsewhere))

    def _index(self) -> tuple[dict[str, tuple[dict[str, Any], str | None]],
                              dict[str, list[tuple[str, dict[str, Any], bool]]]]:
        """The loaded entries by file key (baselines before recorded checks) and baselines by weights
        key, built once: the loaded file does not change during a run."""
        if self._by_key is None or self._by_weights is None:
            by_key: dict[str, tuple[dict[str, Any], str | None]] = {}
            by_weights: dict[str, list[tuple[str, dict[str, Any], bool]]] = {}
            for key, entry in self.entries.items():
                file_key, weights_key = entry_keys(entry)
                if file_key is not None:
                    by_key.setdefault(file_key, (entry, key))
                by_weights.setdefault(key if file_key is None else weights_key, []).append(
                    (key, entry, file_key is None))
            for entries in self.checks.values():
                for entry in entries:
                    file_key = entry_keys(entry)[0]
                    if file_key is not None:
                        by_key.setdefault(file_key, (entry, None))
            self._by_key, self._by_weights = by_key, by_weights
        return self._by_key, self._by_weights

    def recorded_check(self, test: str, index: int) -> dict[str, Any] | None:
        """The committed record of the ``index``-th (0-based) ``ppl_check`` call of ``test``."""
        entries = self.checks.get(test, [])
        return entries[index] if index < len(entries) else None

    def recorded_elsewhere(self, model_fingerprint: str, test: str) -> str | None:
        """The test id under which a check of these very weights is recorded, other than ``test``
        (a renamed test or parametrize id leaves its record under the old one)."""
        for other, entries in sorted(self.checks.items()):
            if other != test and any(e.get("model_fingerprint") == model_fingerprint for e in entries):
                return other
        return None

    def entries_for_test(self, test: str) -> list[dict[str, Any]]:
        return [e for e in {**self.entries, **self.updated}.values() if e.get("test") == test]

    def record(self, file_key: str, entry: dict[str, Any]) -> None:
        """Record a measured baseline.  Deterministic: among tests sharing a baseline in this run
        the first test id (sorted) names it, and an entry that equals the committed one within
        float noise (batch sizes change the last digits) keeps the committed numbers, so a
        refresh of unchanged models leaves the file as it was."""
        self.used.add(file_key)
        earlier = self.updated.get(file_key)
        if earlier is not None and earlier["test"] <= entry["test"]:
            return
        committed = self.entries.get(file_key)
        if committed is not None and same_numbers(committed, entry):
            entry = _keep_committed(committed, entry)
        self.updated[file_key] = entry

    def name_entries(self, finished: set[str], seen: set[str], whole_files: set[str]) -> None:
        """A recorded baseline is named by the first test id (sorted) known to use it: those of this
        run, and the committed entry's own test if that did not run to its end here (``finished``)
        and is not gone (missing from a file this run collected whole).  So a refresh of part of a
        suite, or two branches that each add a test, leave the name as it was (no diff, no merge
        conflict)."""
        for key, entry in self.updated.items():
            named = self.entries.get(key, {}).get("test")
            if not isinstance(named, str) or named in finished:
                continue
            gone = named.split("::")[0] in whole_files and named not in seen
            if not gone and named < entry["test"]:
                self.updated[key] = {**entry, "test": named}

    def record_check(self, test: str, index: int, entry: dict[str, Any]) -> None:
        """Record the ``index``-th check of ``test``; numbers within float noise of the committed
        record keep the committed ones (no diff on a refresh of an unchanged model)."""
        committed = self.recorded_check(test, index)
        if committed is not None and same_numbers(committed, entry):
            entry = _keep_committed(committed, entry)
        entries = self.updated_checks.setdefault(test, [])
        entries[index:] = [entry]

    def recorded_versions(self) -> set[tuple[str, str]]:
        every = [*self.entries.values(), *(e for entries in self.checks.values() for e in entries)]
        return {(str(e.get("torch")), str(e.get("transformers"))) for e in every}

    def older_identities(self) -> int:
        """Entries whose model fingerprint an older version computed (0.3's covered the state dict,
        config and hooks only): they no longer match any model, and are re-measured until refreshed."""
        every = [*self.entries.values(), *(e for entries in self.checks.values() for e in entries)]
        return sum(1 for e in every if "model_fingerprint" in e and e.get("model_identity", 1) != IDENTITY_VERSION)

    def stale(self, passed: set[str], seen: set[str], whole_files: set[str]) -> tuple[list[str], list[str]]:
        """(baseline keys, tests whose recorded checks) to remove: loaded entries nobody used
        although their test passed (only a test that passed proves it no longer uses an entry;
        ``passed``), or whose test is gone from a file this run collected whole (``whole_files``;
        ``seen``: every test that reported).  A failed, skipped or deselected test keeps its entries."""
        def drop(test: str) -> bool:
            return test in passed or (test.split("::")[0] in whole_files and test not in seen)

        keys = [key for key, entry in self.entries.items()
                if key not in self.used and key not in self.updated and drop(str(entry.get("test", "")))]
        tests = [test for test in self.checks if test not in self.updated_checks and drop(test)]
        return keys, tests

    def unfinished(self, tests: set[str]) -> int:
        """How many loaded records belong to ``tests`` (collected, not run to their end): kept."""
        return sum(1 for e in self.entries.values() if e.get("test") in tests) + sum(
            len(v) for t, v in self.checks.items() if t in tests)

    def render(self, drop: list[str] | tuple[str, ...] = (), drop_checks: list[str] | tuple[str, ...] = ()) -> str:
        """One field per line, number lists on one line: readable and diff-friendly."""
        merged = {k: v for k, v in {**self.entries, **self.updated}.items() if k not in set(drop)}
        checks = {t: v for t, v in {**self.checks, **self.updated_checks}.items() if t not in set(drop_checks)}
        baselines = ",\n".join(f"  {json.dumps(key)}: {_render_entry(entry, '  ')}"
                               for key, entry in sorted(merged.items()))
        recorded = ",\n".join(f"  {json.dumps(test)}: [\n" + ",\n".join(f"   {_render_entry(e, '   ')}"
                                                                         for e in entries) + "\n  ]"
                              for test, entries in sorted(checks.items()))
        return (f'{{\n "format": {json.dumps(FILE_FORMAT)},\n "baselines": {{\n{baselines}\n }},\n'
                f' "checks": {{\n{recorded}\n }}\n}}\n')


def _render_entry(entry: dict[str, Any], indent: str) -> str:
    lines = ",\n".join(f"{indent} {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in entry.items())
    return f"{{\n{lines}\n{indent}}}"


def _test_of(entry: Any) -> str:
    return str(entry.get("test", "?")) if isinstance(entry, dict) else "?"


def _keep_committed(committed: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
    """The committed entry for the same numbers (no diff), with the fields this version records and
    the committed one lacks (a record made before KL existed gains its KL statistics), and its KL
    statistics when they were measured against other dense weights."""
    kept = {**committed, "test": entry["test"]}
    kept.update({k: v for k, v in entry.items() if k not in committed})
    new_kl, old_kl = entry.get("kl"), committed.get("kl")
    if isinstance(new_kl, dict) and isinstance(old_kl, dict) and \
            new_kl.get("dense_model_fingerprint") != old_kl.get("dense_model_fingerprint"):
        kept["kl"] = new_kl
    return kept
