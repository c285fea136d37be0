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

import itertools
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BaselineError
from ..identity.model_identity import IDENTITY_VERSION
from ..identity.spec import MeasurementSpec, entry_keys
from ..measure.perplexity_result import PerplexityResult

FILE_FORMAT = "pytest-llmppl baselines v3"
BASELINES_ONLY_FORMATS = ("pytest-llmppl baselines v2",)  # 0.2: read as baselines, rewritten as v3 on update
OLD_FORMATS = ("pytest-llmppl baselines v1",)
ENTRY_FIELDS: dict[str, Any] = {
    "test": str, "model": str, "corpus": str, "corpus_sha256": str, "protocol": str, "seqlen": int,
    "n_tokens": int, "n_windows_total": int, "device": str, "dtype": str, "attn_implementation": str,
    "torch": str, "transformers": str, "protocol_version": int, "ppl": (int, float),
    "window_index": list, "window_nll": list, "window_weight": list,
}
PPL_TOLERANCE = 1e-9  # relative: a committed ppl must be the one its window_nll give
NOISE = 1e-5  # relative: re-measured window NLLs this close are the committed ones (batching noise)


def entry_for(result: PerplexityResult, spec: MeasurementSpec, *, test: str, model: str,
              file_dir: Path) -> dict[str, Any]:
    """A finite result as a committed entry: names and paths relative to the file, no timings."""
    return {
        "test": test,
        "model": relative_name(model, file_dir),
        "model_fingerprint": spec.model,
        "model_identity": IDENTITY_VERSION,
        "tokenizer_fingerprint": spec.tokenizer,
        "corpus": relative_name(result.corpus, file_dir),
        "corpus_sha256": spec.corpus,
        "protocol": result.protocol,
        "seqlen": result.seqlen,
        "stride": result.stride,
        "max_windows": spec.max_windows,
        "n_tokens": result.n_tokens,
        "n_windows_total": result.n_windows_total,
        **spec.runtime_entry(),
        "ppl": result.ppl,
        "window_index": list(result.window_index),
        "window_nll": list(result.window_nll),
        "window_weight": list(result.window_weight),
        **({"lm_eval": result.lm_eval.to_json()} if result.lm_eval is not None else {}),
        **({"size": spec.size.to_json()} if spec.size is not None else {}),
    }


def relative_name(name: str, file_dir: Path) -> str:
    """A path as seen from the file's folder (POSIX separators); a name (hub id, corpus) as is.
    A committed file never holds a path outside its repository: a model in the Hugging Face
    cache is named by its hub id, anything else outside by its folder's or file's name."""
    if not name or not (os.path.isabs(name) or os.path.exists(name)):
        return name
    path = Path(os.path.abspath(name))
    hub = [part for part in path.parts if part.startswith(("models--", "datasets--"))]
    if hub:
        return hub[-1].split("--", 1)[1].replace("--", "/")
    root = _repository_root(file_dir)
    if root is not None and root != path and root not in path.parents:
        return path.name
    return Path(os.path.relpath(path, file_dir)).as_posix()


def _repository_root(folder: Path) -> Path | None:
    """The git work tree holding ``folder`` (None outside one)."""
    for candidate in (folder, *folder.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def entry_result(entry: dict[str, Any], spec: MeasurementSpec) -> PerplexityResult:
    from .result_store import result_from_entry

    return result_from_entry(entry, identity=spec.with_runtime(entry), corpus=spec.corpus_name)


def validate_entry(entry: Any, where: str) -> dict[str, Any]:
    """Type-check a (possibly hand-edited) entry; raise BaselineError naming the field."""
    if not isinstance(entry, dict):
        raise BaselineError(f"{where}: expected an object, got {type(entry).__name__}")
    for name, kind in ENTRY_FIELDS.items():
        if name not in entry:
            raise BaselineError(f"{where}: missing field {name!r}; regenerate it with --ppl-update-baselines")
        value = entry[name]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise BaselineError(f"{where}: field {name!r} should be {_kind_name(kind)}, got {value!r:.60}")
    for name in ("model_fingerprint", "tokenizer_fingerprint"):
        if name in entry and not isinstance(entry[name], str):
            raise BaselineError(f"{where}: field {name!r} should be str, got {entry[name]!r:.60}")
    if "kl" in entry:
        _validate_kl(entry["kl"], where)
    if "size" in entry:
        from ..identity.size_facts import validate_size

        try:
            validate_size(entry["size"])
        except ValueError as exc:
            raise BaselineError(f"{where}: field 'size' is not what pytest-llmppl records ({exc}); regenerate it "
                                "with --ppl-update-baselines") from None
    n = len(entry["window_index"])
    if not (len(entry["window_nll"]) == len(entry["window_weight"]) == n) or n == 0:
        raise BaselineError(f"{where}: window_index, window_nll and window_weight must have the same non-zero length")
    numbers = entry["window_nll"] + entry["window_weight"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
        raise BaselineError(f"{where}: window_nll and window_weight must hold finite numbers")
    if not all(w > 0 for w in entry["window_weight"]):
        raise BaselineError(f"{where}: field 'window_weight' must hold positive numbers (tokens scored per window); "
                            "regenerate it with --ppl-update-baselines")
    _validate_windows(entry, where)
    ppl = float(entry["ppl"])
    if not math.isfinite(ppl) or ppl <= 0:
        raise BaselineError(f"{where}: ppl must be a positive finite number, got {entry['ppl']!r}")
    try:
        implied = math.exp(math.fsum(entry["window_nll"]) / math.fsum(entry["window_weight"]))
    except OverflowError:
        raise BaselineError(f"{where}: field 'window_nll' gives a perplexity too large to represent; the entry was "
                            "edited by hand: regenerate it with --ppl-update-baselines") from None
    if abs(implied - ppl) > PPL_TOLERANCE * implied:
        raise BaselineError(
            f"{where}: ppl {ppl!r} disagrees with its own window_nll (which give {implied!r}); the entry was edited "
            "by hand: regenerate it with --ppl-update-baselines"
        )
    return entry


def _validate_windows(entry: dict[str, Any], where: str) -> None:
    """``window_index``: distinct windows in order, within ``n_windows_total``, all of them unless the
    entry records a subset (``max_windows``, evenly spread): a hand-edited subset is never served as
    the whole corpus."""
    index, total = entry["window_index"], entry["n_windows_total"]
    fix = "regenerate it with --ppl-update-baselines"
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in index) or total < 1:
        raise BaselineError(f"{where}: field 'window_index' must hold window numbers; {fix}")
    if any(b <= a for a, b in itertools.pairwise(index)) or index[0] < 0 or index[-1] >= total:
        raise BaselineError(f"{where}: field 'window_index' must be increasing window numbers in 0..{total - 1} "
                            f"(n_windows_total {total}); {fix}")
    subset = entry.get("max_windows")
    if len(index) != (min(subset, total) if isinstance(subset, int) and subset > 0 else total):
        raise BaselineError(f"{where}: field 'window_index' holds {len(index)} windows, but n_windows_total is {total}"
                            f" and max_windows {subset}: the entry is not a whole measurement; {fix}")


def _validate_kl(value: Any, where: str) -> None:
    """A recorded check's KL statistics: an object naming the dense weights it was measured against."""
    from ..measure.divergence import KLDivergence

    try:
        if not isinstance(value, dict) or not isinstance(value.get("dense_model_fingerprint"), str):
            raise TypeError
        KLDivergence.from_json(value)
    except (KeyError, TypeError, ValueError):
        raise BaselineError(f"{where}: field 'kl' is not what pytest-llmppl records (the KL statistics against a "
                            "dense model); regenerate it with --ppl-update-baselines") from None


def _kind_name(kind: Any) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


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


def same_numbers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same windows and runtime, every window NLL within ``NOISE`` (relative)."""
    same_fields = all(a.get(k) == b.get(k) for k in ("window_index", "window_weight", "device", "dtype",
                                                     "attn_implementation", "torch", "transformers",
                                                     "protocol_version", "corpus_sha256", "model_fingerprint",
                                                     "tokenizer_fingerprint"))
    return same_fields and all(abs(x - y) <= NOISE * abs(y) for x, y in zip(a["window_nll"], b["window_nll"]))
