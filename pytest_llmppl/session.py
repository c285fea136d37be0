"""What the fixtures do, without pytest's hook machinery: identify, serve or measure, judge, keep.

One ``PPLSession`` per pytest process.  It coordinates: every fixture call is made concrete
once (``measure.call``), served by the chain of sources or measured (``sources.chain``), judged
(``judge.decision``), recorded into the committed file (``keep.recording``) and kept as a record
for the summary and the reports (published to the xdist controller with each test's report).
"""

from __future__ import annotations

import dataclasses
import math
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import (  # noqa: F401 - the warnings and PPLFailure are also importable from here
    BaselineMismatchWarning,
    PPLFailure,
    PrunedInPlaceWarning,
    RecordMismatchWarning,
    warn_at_user,
)
from .judge.against import Against, Baseline, PrunedInPlaceGuard
from .judge.records import BaselineRecord, MeasureRecord, Record, Source, Subject, Verdict, from_json, to_json
from .keep.recording import RunFacts
from .settings import Budget, Settings

if TYPE_CHECKING:
    from .keep.baselines import BaselinesFile
    from .keep.recording import Recording
    from .measure.call import Call
    from .measure.perplexity_result import PerplexityResult
    from .sources.chain import Chain
    from .sources.served import Served

__all__ = ["Baseline", "PPLFailure", "PPLSession", "load_file"]


@dataclass
class PPLSession:
    settings: Settings
    file: BaselinesFile | None = None
    auto_device: str | None = None  # what "auto" resolved to at start-up
    cache_root: Any = None          # pytest's own store folder (.pytest_cache/d/llmppl), if any
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    run: RunFacts = field(default_factory=RunFacts)
    pending: list[Record] = field(default_factory=list)   # made in this process, not yet published
    collected: list[dict[str, Any]] = field(default_factory=list)  # every record of the run (controller)
    checks_made: dict[str, int] = field(default_factory=dict)  # test -> ppl_check calls so far
    progress: Any = None  # (label) -> engine progress callback with close(); set by the plugin
    _recording: Recording | None = None
    _chain: Chain | None = None
    _store: Any = None
    _refused: bool = False  # no store could be trusted here (StoreRefused): run without one
    _guard: PrunedInPlaceGuard | None = None

    # -- what the session holds, opened on first use -------------------------------------
    @property
    def recording(self) -> Recording | None:
        """The committed file in this run (``keep.recording``); None without one."""
        if self._recording is None and self.file is not None:
            from .keep.recording import Recording

            self._recording = Recording(self.file, self.settings)
        return self._recording

    @property
    def store(self) -> Any:
        """The local store; None with --ppl-no-cache, or when it cannot be trusted (a warning)."""
        if self._store is None and not self.settings.no_cache and not self._refused:
            from .keep.store import CacheWarning, Store, StoreRefused

            try:
                self._store = Store(self.settings.cache_dir or self.cache_root)
            except StoreRefused as exc:
                self._refused = True
                warn_at_user(str(exc), CacheWarning)
        return self._store

    @property
    def chain(self) -> Chain:
        if self._chain is None:
            from .keep.result_store import ResultStore
            from .sources.chain import chain_for

            results = ResultStore(self.store) if self.store is not None else None
            self._chain = chain_for(self.settings, self.recording, results, self.run_id, self.progress)
        return self._chain

    @property
    def guard(self) -> PrunedInPlaceGuard:
        if self._guard is None:
            self._guard = PrunedInPlaceGuard(self.settings)
        return self._guard

    def _call(self, model: Any, tokenizer: Any, overrides: dict[str, Any], fixture: str, test: str) -> Call:
        from .measure.call import make_call

        settings = self.settings.with_overrides(**overrides)
        return make_call(model, tokenizer, settings, fixture=fixture, test=test,
                         device=self.resolve_device(settings.device), store=self.store)

    def resolve_device(self, device: str | None) -> str | None:
        """``auto`` as resolved at start-up (or now); a per-call device checked as options are."""
        from .startup import auto_device, check_device

        if device is not None and device != "auto" and device != self.settings.device:
            check_device(device, "device")
        if device != "auto":
            return device
        if self.auto_device is None:
            self.auto_device = auto_device(None, pin=False)  # as at start-up, without pinning
        return self.auto_device

    # -- the three fixtures ------------------------------------------------------------
    def measure(self, model: Any, tokenizer: Any = None, test: str = "", **overrides: Any) -> PerplexityResult:
        """``ppl_of``: a result (served when this identity was measured or recorded before)."""
        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides, "ppl_of", test)
        found = self.chain.obtain(model, call)
        self.pending.append(MeasureRecord(Subject.of(call, found.result), _finite_or_none(found.result.ppl),
                                          found.source, time.perf_counter() - t0, found.wait_notes,
                                          found.result.lm_eval))
        return found.result

    def baseline(self, model: Any, tokenizer: Any = None, test: str = "", **overrides: Any) -> Baseline:
        """``ppl_baseline``: from the committed file, memory, the store, or measured once."""
        from .measure.divergence import TOP_K
        from .sources.reference import reference_maker

        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides, "ppl_baseline", test)
        call.keep_topk = TOP_K
        self.guard.refuse(call)
        chain = self.chain
        found = chain.obtain(model, call)
        result, source = found.result, found.source
        if source is Source.MEMORY and result.topk is None:  # measured here as a candidate: the store may have it
            result = chain.enrich(result, call)
        if self.recording is not None and self.settings.update_baselines:
            self.recording.record_baseline(call, result, test)
        elif self.file is not None and source is not Source.FILE:
            self.file.used.add(call.spec.file_key)
        self.pending.append(BaselineRecord(Subject.of(call, result), _finite_or_none(result.ppl), source,
                                           time.perf_counter() - t0, found.notes + found.wait_notes))
        trusted = source is Source.CACHE or not (self.settings.remeasure or chain.fresh_only)  # the store's top-k
        maker = None if result.topk is not None or not result.finite else \
            reference_maker(model, call, result, chain.results, chain.forward, from_store=trusted)
        return Baseline(result, source, result.identity or call.spec, call.model_name, maker)

    def check(self, model: Any, tokenizer: Any = None, *, baseline: Any, budget: Budget, test: str = "",
              **overrides: Any) -> PerplexityResult:
        """``ppl_check``: serve or measure the candidate, decide against ``baseline + budget`` and
        against this check's recorded result ``+ regression tolerance``."""
        from .judge.decision import NO_RECORD, decide
        from .judge.messages import failure_message

        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides, "ppl_check", test)
        index = self.checks_made.get(test, 0)
        self.checks_made[test] = index + 1
        against = Against.of(baseline, call, self.guard)
        recorded = self.recording.recorded(call, test, index) if self.recording is not None else NO_RECORD
        found, kl, rules = self._candidate(model, call, against, budget, recorded)
        if self.recording is not None and self.settings.update_baselines:
            self.recording.record_check(call, found.result, test, index, kl, against.result)
        record = decide(call, against, found.result, found.source, budget, rules, time.perf_counter() - t0,
                        recorded, kl)
        served = found.notes + found.wait_notes  # the software a committed result was recorded with, a wait
        self.pending.append(dataclasses.replace(record, notes=record.notes + served) if served else record)
        if record.verdict is not Verdict.PASS:
            raise PPLFailure(failure_message(record))
        return found.result

    def _candidate(self, model: Any, call: Call, against: Against, budget: Budget,
                   recorded: Any) -> tuple[Served, Any, Any]:
        """The candidate's result, its KL divergence from the dense model (when known or needed)
        and the early-verdict rules it was measured under.  A served result whose divergence a KL
        budget needs but nobody knows is measured again, against the dense top-k."""
        from .judge.decision import early_rules

        chain, kl_budget = self.chain, call.settings.kl_budget
        if against.has_reference:
            call.reference = against.result
        found = chain.serve(call)
        served_before = found is not None
        kl = chain.divergences.known(call, against.result, found.result) if found is not None else None
        if kl_budget is not None and kl is None:
            if call.reference is None and against.with_reference():
                call.reference = against.result
            if call.reference is None:
                raise PPLFailure(against.no_reference_message(kl_budget))
            found = None  # served, but its divergence from this dense model is unknown: measure it
        if found is not None:
            return found, kl, None
        if call.reference is None and against.with_reference(False):  # a forward reports KL when the store kept it
            call.reference = against.result
        rules, order = None, None
        if not (self.recording is not None and self.settings.update_baselines) and kl_budget is None:
            rules, order = early_rules(against, call, budget, recorded)  # a record or KL needs every window
        found = chain.forward.measure(model, call, order, rules.decided if rules is not None else None,
                                      served_before)
        if found.source is not Source.MEASURED:
            chain.memory.served(call.spec.key, found.result)
            return found, chain.divergences.known(call, against.result, found.result), None  # exact: no estimate
        return found, found.kl, rules

    # -- the committed file and the records: publish (any process), collect (controller), finish --
    def take_file_changes(self) -> dict[str, Any] | None:
        """A worker's changes to the committed file since it last sent them (with each test's report)."""
        return self.recording.take_changes() if self.recording is not None else None

    def merge_file_changes(self, changes: dict[str, Any] | None) -> None:
        if self.recording is not None:
            self.recording.merge_changes(changes)

    def version_note(self) -> str | None:
        return self.recording.version_note() if self.recording is not None else None

    def take_pending(self) -> list[dict[str, Any]]:
        out = [to_json(r) for r in self.pending]
        self.pending.clear()
        return out

    def end_test(self, nodeid: str) -> None:
        self.checks_made.pop(nodeid, None)

    def collect(self, nodeid: str, when: str, records: list[dict[str, Any]] | None, passed: bool = True) -> None:
        self.run.report(nodeid, when, passed)
        if records:
            self.collected.extend(records)

    def records(self) -> list[Record]:
        return [from_json(r) for r in self.collected]

    def finish(self, outcome_counts: dict[str, int], header: str, narrowed: bool = False) -> list[str]:
        """End of run (controller only): the committed file (or this shard's changes to it), then
        the reports.  Returns lines for the terminal."""
        lines: list[str] = []
        if self.file is None and not (self.settings.report or self.settings.report_md):
            return lines
        if self.recording is not None:
            lines += self.recording.write(self.run, self.run.whole_files(narrowed), narrowed)
        from .report.run_end import report_files

        lines += report_files(self.records(), self.settings, self.file, outcome_counts, header)
        return lines


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def load_file(settings: Settings) -> BaselinesFile | None:
    """The committed file, validated now (so a malformed one is a start-up error)."""
    if not settings.baselines:
        return None
    from .keep.baselines import BaselinesFile

    return BaselinesFile.load(settings.baselines, must_exist=settings.strict and not settings.update_baselines,
                              replacing=settings.update_baselines)
