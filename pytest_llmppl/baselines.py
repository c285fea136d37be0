"""The committed baselines file: human-readable, deterministic, validated at start-up.

``{"format": "pytest-llmppl baselines v2", "baselines": {file_key: entry}}``, one field
per line.  An entry is addressed by ``MeasurementSpec.file_key`` (weights, tokenizer,
corpus content, protocol, seqlen, stride, window subset) and records where it was
measured (device, dtype, attention, torch and transformers versions), so a mismatch
is reported rather than silently compared.  Entries hold no timestamps or timings, and
paths are relative to the file, so a refresh with unchanged numbers gives no diff.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import BaselineError
from .identity import MeasurementSpec
from .result import PerplexityResult

FILE_FORMAT = "pytest-llmppl baselines v2"
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
    }


def relative_name(name: str, file_dir: Path) -> str:
    """A path as seen from the file's folder (POSIX separators); a name (hub id, corpus) as is."""
    if not name or not (os.path.isabs(name) or os.path.exists(name)):
        return name
    return Path(os.path.relpath(os.path.abspath(name), file_dir)).as_posix()


def entry_result(entry: dict[str, Any], spec: MeasurementSpec) -> PerplexityResult:
    from .results import result_from_entry

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
    n = len(entry["window_index"])
    if not (len(entry["window_nll"]) == len(entry["window_weight"]) == n) or n == 0:
        raise BaselineError(f"{where}: window_index, window_nll and window_weight must have the same non-zero length")
    numbers = entry["window_nll"] + entry["window_weight"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in numbers):
        raise BaselineError(f"{where}: window_nll and window_weight must hold finite numbers")
    ppl = float(entry["ppl"])
    if not math.isfinite(ppl) or ppl <= 0:
        raise BaselineError(f"{where}: ppl must be a positive finite number, got {entry['ppl']!r}")
    implied = math.exp(math.fsum(entry["window_nll"]) / math.fsum(entry["window_weight"]))
    if abs(implied - ppl) > PPL_TOLERANCE * implied:
        raise BaselineError(
            f"{where}: ppl {ppl!r} disagrees with its own window_nll (which give {implied!r}); the entry was edited "
            "by hand: regenerate it with --ppl-update-baselines"
        )
    return entry


def _kind_name(kind: Any) -> str:
    return " or ".join(k.__name__ for k in kind) if isinstance(kind, tuple) else kind.__name__


@dataclass
class BaselinesFile:
    """The committed file: entries as loaded, entries recorded in this run, keys used in this run."""

    path: Path
    entries: dict[str, dict[str, Any]] = field(default_factory=dict)
    updated: dict[str, dict[str, Any]] = field(default_factory=dict)
    used: set[str] = field(default_factory=set)

    @property
    def folder(self) -> Path:
        return self.path.resolve().parent

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
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
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
        if fmt != FILE_FORMAT or not isinstance(data.get("baselines"), dict):
            raise BaselineError(
                f"baselines file {self.path} is not a pytest-llmppl baselines file (expected "
                f'{{"format": "{FILE_FORMAT}", "baselines": {{...}}}}); regenerate it with --ppl-update-baselines.'
            )
        for key, entry in data["baselines"].items():
            validate_entry(entry, f"baselines file {self.path}, entry {key[:12]} ({_test_of(entry)})")
        self.entries = data["baselines"]
        return self

    def get(self, file_key: str) -> dict[str, Any] | None:
        return self.updated.get(file_key) or self.entries.get(file_key)

    def entries_for_test(self, test: str) -> list[dict[str, Any]]:
        return [e for e in {**self.entries, **self.updated}.values() if e.get("test") == test]

    def record(self, file_key: str, entry: dict[str, Any]) -> None:
        """Record a measured entry.  Deterministic: among tests sharing a baseline the first test
        id (sorted) names it, and an entry that equals the committed one within float noise
        (batch sizes change the last digits) keeps the committed numbers, so a refresh of
        unchanged models leaves the file as it was."""
        self.used.add(file_key)
        earlier = self.updated.get(file_key)
        if earlier is not None and earlier["test"] <= entry["test"]:
            return
        committed = self.entries.get(file_key)
        if committed is not None and _same_numbers(committed, entry):
            entry = {**committed, "test": min(committed["test"], entry["test"])}
        self.updated[file_key] = entry

    def recorded_versions(self) -> set[tuple[str, str]]:
        return {(str(e.get("torch")), str(e.get("transformers"))) for e in self.entries.values()}

    def stale(self, ran: set[str], seen: set[str], whole_files: set[str]) -> list[str]:
        """Keys of loaded entries nobody used although their test ran (``ran``: call phase), or
        whose test is gone from a file this run collected whole (``whole_files``; ``seen``: every
        test that reported).  A skipped or deselected test keeps its entries."""
        out = []
        for key, entry in self.entries.items():
            if key in self.used or key in self.updated:
                continue
            test = str(entry.get("test", ""))
            gone = test.split("::")[0] in whole_files and test not in seen
            if test in ran or gone:
                out.append(key)
        return out

    def render(self, drop: list[str] | tuple[str, ...] = ()) -> str:
        """One field per line, number lists on one line: readable and diff-friendly."""
        merged = {k: v for k, v in {**self.entries, **self.updated}.items() if k not in set(drop)}
        blocks = []
        for key, entry in sorted(merged.items()):
            lines = ",\n".join(f"   {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in entry.items())
            blocks.append(f"  {json.dumps(key)}: {{\n{lines}\n  }}")
        body = ",\n".join(blocks)
        return f'{{\n "format": {json.dumps(FILE_FORMAT)},\n "baselines": {{\n{body}\n }}\n}}\n'


def _test_of(entry: Any) -> str:
    return str(entry.get("test", "?")) if isinstance(entry, dict) else "?"


def _same_numbers(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Same windows and runtime, every window NLL within ``NOISE`` (relative)."""
    same_fields = all(a.get(k) == b.get(k) for k in ("window_index", "window_weight", "device", "dtype",
                                                     "attn_implementation", "torch", "transformers",
                                                     "protocol_version", "corpus_sha256"))
    return same_fields and all(abs(x - y) <= NOISE * abs(y) for x, y in zip(a["window_nll"], b["window_nll"]))
