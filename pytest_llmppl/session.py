"""What the fixtures do, without pytest's hook machinery: identify, serve or measure, decide.

One ``PPLSession`` per pytest process.  Every fixture call is identified once
(``MeasurementSpec``); its result then comes from, in order: this process's memory,
the committed file (baselines only), the local store, and only then a measurement,
done under a cross-process lock so xdist workers needing the same result measure it
once.  Complete results are stored, so an unchanged model is judged with no forward.
The session also owns its records, their xdist publish/merge and the end-of-run files.
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import LLMPPLError
from .records import BaselineRecord, MeasureRecord, Record, Source, Subject, Verdict, from_json, to_json
from .settings import Budget, Settings

if TYPE_CHECKING:  # loaded on first use: a run that calls no ppl fixture never imports them
    from .baselines import BaselinesFile
    from .identity import MeasurementSpec
    from .result import PerplexityResult


class PPLFailure(AssertionError):
    """A check over budget, a non-finite perplexity, a baseline that does not match its check,
    or a strict miss: an ordinary test failure, reported as one message."""



class BaselineMismatchWarning(UserWarning):
    """The committed baseline was measured elsewhere (device, dtype, attention, versions)."""


@dataclass(frozen=True)
class Baseline:
    """What ``ppl_baseline`` returns: the result plus where it came from."""

    result: PerplexityResult
    source: Source
    spec: MeasurementSpec
    model: str = ""

    def __float__(self) -> float:
        return float(self.result.ppl)

    # Compares with numbers as its result does (NaN compares false): ``assert base < 30``.
    def __lt__(self, other: Any) -> bool:
        return self.result < other

    def __le__(self, other: Any) -> bool:
        return self.result <= other

    def __gt__(self, other: Any) -> bool:
        return self.result > other

    def __ge__(self, other: Any) -> bool:
        return self.result >= other

    @property
    def ppl(self) -> float:
        return self.result.ppl

    @property
    def top1(self) -> dict[int, Any] | None:
        return self.result.top1

    def __repr__(self) -> str:
        return f"Baseline(ppl={self.ppl:.4f}, source={self.source.value!r})"


@dataclass(frozen=True)
class Call:
    """One fixture call made concrete: settings, tokens and identity."""

    settings: Settings
    prepared: Any  # measurement.Prepared
    spec: MeasurementSpec
    device: str | None
    model_name: str

    def subject(self, test: str, result: PerplexityResult | None = None) -> Subject:
        s, r = self.spec, result
        return Subject(test=test, model=self.model_name, model_id=s.model_id, corpus=s.corpus_name,
                       seqlen=s.seqlen, protocol=s.protocol, stride=s.stride,
                       n_windows=r.n_windows if r is not None else s.n_windows, n_windows_total=s.n_windows_total,
                       device=s.device_type, dtype=s.dtype)


@dataclass
class PPLSession:
    settings: Settings
    file: BaselinesFile | None = None
    auto_device: str | None = None  # what "auto" resolved to at start-up
    cache_root: Any = None          # pytest's own store folder (.pytest_cache/d/llmppl), if any
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    pending: list[Record] = field(default_factory=list)   # made in this process, not yet published
    collected: list[dict[str, Any]] = field(default_factory=list)  # every record of the run (controller)
    ran: set[str] = field(default_factory=set)    # tests whose call phase ran
    seen: set[str] = field(default_factory=set)   # tests that reported at all
    deselected: int = 0
    _memo: dict[str, tuple[PerplexityResult, bool]] = field(default_factory=dict)  # key -> (result, measured here)
    _store: Any = None

    # -- the store -----------------------------------------------------------------
    @property
    def store(self) -> Any:
        """The local store, opened on first use; None with --ppl-no-cache."""
        if self._store is None and not self.settings.no_cache:
            from .cache import Store

            self._store = Store(self.settings.cache_dir or self.cache_root)
        return self._store

    def _results(self) -> Any:
        from .results import ResultStore

        return ResultStore(self.store) if self.store is not None else None

    # -- identifying a call ----------------------------------------------------------
    def _call(self, model: Any, tokenizer: Any, overrides: dict[str, Any]) -> Call:
        from .measurement import identify, prepare

        settings = self.settings.with_overrides(**overrides)
        device = self.resolve_device(settings.device)
        prepared = prepare(model, tokenizer, settings.corpus, settings.seqlen, protocol=settings.protocol,
                           stride=settings.stride, max_windows=settings.max_windows, store=self.store,
                           allow_long_seqlen=settings.allow_long_seqlen)
        spec = identify(model, prepared, device, None if settings.dtype == "auto" else settings.dtype)
        return Call(settings, prepared, spec, device, model_name(model))

    def resolve_device(self, device: str | None) -> str | None:
        """``auto`` as resolved at start-up (or now); a per-call device checked as options are."""
        if device is not None and device != "auto" and device != self.settings.device:
            from .startup import check_device

            check_device(device)
        if device != "auto":
            return device
        if self.auto_device is None:
            from .startup import auto_device

            self.auto_device = auto_device(None, pin=False)  # as at start-up, without pinning
        return self.auto_device

    # -- serving or measuring ----------------------------------------------------------
    def _served(self, call: Call, *, fresh_only: bool = False) -> tuple[PerplexityResult | None, Source]:
        """A complete result for this identity from memory or the store, if there is one.
        ``fresh_only`` (--ppl-update-baselines): only what this run measured (here or in
        another xdist worker) counts."""
        if self.settings.remeasure:
            return None, Source.MEASURED
        hit = self._memo.get(call.spec.key)
        if hit is not None and (hit[1] or not fresh_only):
            return hit[0], Source.MEMORY
        results = self._results()
        found = results.get(call.spec, run=self.run_id if fresh_only else None) if results is not None else None
        return (found, Source.CACHE) if found is not None else (None, Source.MEASURED)

    def _measure(self, model: Any, call: Call, *, fresh_only: bool = False, order: list[int] | None = None,
                 stop: Any = None) -> tuple[PerplexityResult, Source]:
        """Measure under the store's lock (re-checking it first); store a complete result."""
        results = self._results()
        if results is None:
            return self._forward(model, call, order, stop), Source.MEASURED
        with results.lock(call.spec):
            found, source = self._served(call, fresh_only=fresh_only)
            if found is not None:
                return found, source
            result = self._forward(model, call, order, stop)
            results.put(call.spec, result, run=self.run_id)
            return result, Source.MEASURED

    def _forward(self, model: Any, call: Call, order: list[int] | None, stop: Any) -> PerplexityResult:
        from .measurement import run

        s = call.settings
        result = run(model, call.prepared, batch_size=s.batch_size, device=call.device,
                     dtype=None if s.dtype == "auto" else s.dtype, order=order, stop=stop, top1=True,
                     identity=call.spec)
        if result.n_windows == call.spec.n_windows:
            self._memo[call.spec.key] = (result, True)
        return result

    def _obtain(self, model: Any, call: Call, *, fresh_only: bool = False) -> tuple[PerplexityResult, Source]:
        found, source = self._served(call, fresh_only=fresh_only)
        if found is None:
            found, source = self._measure(model, call, fresh_only=fresh_only)
        if source is not Source.MEASURED:
            self._memo.setdefault(call.spec.key, (found, False))
        return found, source

    # -- the three fixtures ------------------------------------------------------------
    def measure(self, model: Any, tokenizer: Any = None, test: str = "", **overrides: Any) -> PerplexityResult:
        """``ppl_of``: a result (served when this identity was measured before)."""
        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides)
        result, source = self._obtain(model, call)
        self.pending.append(MeasureRecord(call.subject(test, result), _finite_or_none(result.ppl), source,
                                          time.perf_counter() - t0))
        return result

    def baseline(self, model: Any, tokenizer: Any = None, test: str = "", **overrides: Any) -> Baseline:
        """``ppl_baseline``: from memory, the committed file, the store, or measured once."""
        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides)
        updating = self.file is not None and self.settings.update_baselines
        notes: tuple[str, ...] = ()
        found: PerplexityResult | None = None
        source = Source.MEASURED
        if not updating:
            hit = None if self.settings.remeasure else self._memo.get(call.spec.key)
            if hit is not None:
                found, source = hit[0], Source.MEMORY
            elif self.file is not None:
                found, notes = self._from_file(call, test)
                source = Source.FILE
        if found is None:
            found, source = self._obtain(model, call, fresh_only=updating)
        if updating and self.file is not None:
            self._record_in_file(call, found, test)
        elif self.file is not None and source is not Source.FILE:
            self.file.used.add(call.spec.file_key)
        self.pending.append(BaselineRecord(call.subject(test, found), _finite_or_none(found.ppl), source,
                                           time.perf_counter() - t0, notes))
        return Baseline(found, source, found.identity or call.spec, call.model_name)

    def check(self, model: Any, tokenizer: Any = None, *, baseline: Any, budget: Budget, test: str = "",
              **overrides: Any) -> PerplexityResult:
        """``ppl_check``: serve or measure the candidate, decide against ``baseline + budget``."""
        from .decision import decide, early_rule

        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides)
        base, base_source, base_ppl = _unpack_baseline(baseline)
        if not math.isfinite(base_ppl):
            raise PPLFailure(f"the baseline perplexity is {base_ppl}: a baseline must be finite to compare against.")
        base_spec = getattr(base, "identity", None)
        if base_spec is not None:
            _refuse_mismatch(base_spec, call.spec)
        threshold = budget.threshold(base_ppl)
        result, source = self._served(call)
        rule = None
        if result is None:
            rule, order = early_rule(base, base_spec, call, threshold)
            result, source = self._measure(model, call, order=order, stop=rule.decided if rule is not None else None)
            if source is not Source.MEASURED:
                rule = None  # another worker's complete result: exact, no early estimate
        record = decide(call, test, base, base_ppl, base_source, result, source, budget, threshold, rule,
                        time.perf_counter() - t0)
        self.pending.append(record)
        if record.verdict is not Verdict.PASS:
            from .decision import failure_message

            raise PPLFailure(failure_message(record))
        return result

    # -- the committed file --------------------------------------------------------------
    def _from_file(self, call: Call, test: str) -> tuple[PerplexityResult | None, tuple[str, ...]]:
        assert self.file is not None
        entry = self.file.get(call.spec.file_key)
        if entry is None:
            if self.settings.strict:
                raise PPLFailure(self._missing_message(call, test))
            return None, ()
        self.file.used.add(call.spec.file_key)
        differ = call.spec.runtime_differences(call.spec.with_runtime(entry))
        if "device" in differ or "dtype" in differ:
            msg = (f"committed baseline for {call.model_name} was measured on {entry['device']}/{entry['dtype']}, "
                   f"this run evaluates on {call.spec.device_type}/{call.spec.dtype}: refresh it with "
                   "--ppl-update-baselines on this runner")
            if self.settings.strict:
                raise PPLFailure(msg + " (--ppl-strict).")
            warnings.warn(msg + "; measuring instead.", BaselineMismatchWarning, stacklevel=4)
            return None, ()
        notes = tuple(f"committed baseline recorded with {name} {was}, this run has {now}"
                      for name, (was, now) in differ.items())
        if notes:
            warnings.warn(f"{call.model_name}: {'; '.join(notes)} (numbers may differ slightly; refresh with "
                          "--ppl-update-baselines)", BaselineMismatchWarning, stacklevel=4)
        from .baselines import entry_result

        result = entry_result(entry, call.spec)
        results = self._results()
        cached = results.get(call.spec) if results is not None and not differ else None
        if cached is not None and cached.window_nll == result.window_nll:  # the same numbers: keep its argmax
            result = dataclasses.replace(result, top1=cached.top1)
        return result, notes

    def _missing_message(self, call: Call, test: str) -> str:
        """Why the committed file has no entry: what differs from the one it has for this test."""
        assert self.file is not None
        msg = (f"baseline for {call.model_name} ({call.spec.describe()}) is missing from {self.file.path} and "
               "--ppl-strict is on: run the suite once with --ppl-update-baselines on this runner and commit the file.")
        spec = call.spec
        here = {"corpus_sha256": spec.corpus, "seqlen": spec.seqlen, "protocol": spec.protocol,
                "stride": spec.stride, "max_windows": spec.max_windows}
        for entry in self.file.entries_for_test(test):
            differ = [k.replace("_sha256", "") for k, v in here.items() if entry.get(k) != v]
            msg += (f" The file's entry for this test was recorded with another {', '.join(differ)}." if differ else
                    " The file's entry for this test was recorded for other weights or another tokenizer.")
        return msg

    def _record_in_file(self, call: Call, result: PerplexityResult, test: str) -> None:
        assert self.file is not None
        if not result.finite:
            warnings.warn(f"baseline for {call.model_name} is {result.ppl} (not finite): not recorded in "
                          f"{self.file.path}", BaselineMismatchWarning, stacklevel=4)
            return
        from .baselines import entry_for

        self.file.record(call.spec.file_key, entry_for(result, call.spec, test=test, model=call.model_name,
                                                       file_dir=self.file.folder))

    # -- records: publish (any process), collect (controller), finish --------------------
    def take_pending(self) -> list[dict[str, Any]]:
        out = [to_json(r) for r in self.pending]
        self.pending.clear()
        return out

    def collect(self, nodeid: str, when: str, records: list[dict[str, Any]] | None) -> None:
        self.seen.add(nodeid)
        if when == "call":
            self.ran.add(nodeid)
        if records:
            self.collected.extend(records)

    def worker_output(self) -> dict[str, Any]:
        """What a worker hands the controller at its end (records travel with the reports)."""
        if self.file is None:
            return {}
        return {"updated": dict(self.file.updated), "used": sorted(self.file.used)}

    def merge_worker(self, output: dict[str, Any]) -> None:
        if self.file is None or not output:
            return
        for key, entry in output.get("updated", {}).items():
            self.file.record(key, entry)
        self.file.used.update(output.get("used", ()))

    def records(self) -> list[Record]:
        return [from_json(r) for r in self.collected]

    def finish(self, whole_files: set[str], outcome_counts: dict[str, int], header: str) -> list[str]:
        """End of run (controller only): rewrite the committed file, write the reports.
        Returns lines for the terminal."""
        lines: list[str] = []
        if self.file is None and not (self.settings.report or self.settings.report_md):
            return lines
        from .files import write_text_file

        if self.file is not None and self.settings.update_baselines:
            stale = self.file.stale(self.ran, self.seen, whole_files)
            if self.file.updated or stale:
                write_text_file(self.file.path, self.file.render(drop=stale))
                lines.append(f"llmppl baselines written to {self.file.path}: {len(self.file.updated)} recorded, "
                             f"{len(stale)} unused removed")
        if self.settings.report or self.settings.report_md:
            from . import report

            records = self.records()
            if self.settings.report:
                write_text_file(self.settings.report, report.json_report(records, self.settings, outcome_counts))
                lines.append(f"llmppl report written to {self.settings.report}")
            if self.settings.report_md:
                write_text_file(self.settings.report_md, report.markdown(records, header, outcome_counts))
                lines.append(f"llmppl report written to {self.settings.report_md}")
        return lines

    def version_note(self) -> str | None:
        """A header line when the committed file was recorded with other torch/transformers."""
        if self.file is None:
            return None
        from .identity import software_versions

        here = software_versions()
        other = sorted(v for v in self.file.recorded_versions() if v != (here["torch"], here["transformers"]))
        if not other:
            return None
        there = ", ".join(f"torch {t} / transformers {tf}" for t, tf in other)
        return (f"llmppl: baselines in {self.file.path.name} were recorded with {there}; this run has "
                f"torch {here['torch']} / transformers {here['transformers']} (numbers may differ slightly)")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unpack_baseline(baseline: Any) -> tuple[PerplexityResult | None, Source, float]:
    from .result import PerplexityResult

    if isinstance(baseline, Baseline):
        return baseline.result, baseline.source, float(baseline)
    if isinstance(baseline, PerplexityResult):
        return baseline, Source.GIVEN, baseline.ppl
    try:
        return None, Source.GIVEN, float(baseline)
    except (TypeError, ValueError):
        raise LLMPPLError(
            "baseline must be what ppl_baseline returned, a PerplexityResult or a number, "
            f"not {type(baseline).__name__}"
        ) from None


def _refuse_mismatch(base: MeasurementSpec, check: MeasurementSpec) -> None:
    differ = base.mismatch(check)
    if differ:
        verb = "differs" if len(differ) == 1 else "differ"
        contents = "tokenizer" in differ or "corpus" in differ
        raise PPLFailure(
            f"ppl_check: the baseline was measured differently ({', '.join(differ)} {verb}), so their windows "
            f"cannot be compared. baseline: {base.describe(contents)}; this check: {check.describe(contents)}. "
            "Measure the baseline with the same corpus, tokenizer, seqlen, protocol, stride and max_windows."
        )


def model_name(model: Any) -> str:
    name = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "_name_or_path", None)
    return str(name or type(model).__name__)


def load_file(settings: Settings) -> BaselinesFile | None:
    """The committed file, validated now (so a malformed one is a start-up error)."""
    if not settings.baselines:
        return None
    from .baselines import BaselinesFile

    return BaselinesFile.load(settings.baselines, must_exist=settings.strict and not settings.update_baselines,
                              replacing=settings.update_baselines)
