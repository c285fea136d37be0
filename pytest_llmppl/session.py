"""What the fixtures do, without pytest's hook machinery: identify, serve or measure, decide.

One ``PPLSession`` per pytest process.  Every fixture call is identified once
(``MeasurementSpec``); its result then comes from, in order: the committed file (any
entry with this identity: a baseline or a recorded check), this process's memory, the
local store, and only then a measurement, done under a cross-process lock so xdist
workers needing the same result measure it once.  The file comes first so a verdict
does not depend on which tests ran before (under ``--ppl-strict`` it is a baseline's only
source).  Complete results are stored, so an unchanged model is judged with no forward.
A check is also compared with its own recorded result.  The session also owns its
records, their xdist publish/merge and the end-of-run files.
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
    LLMPPLError,
    PPLFailure,
    PrunedInPlaceWarning,
    RecordMismatchWarning,
    warn_at_user,
)
from .judge.records import (
    BaselineRecord,
    MeasureRecord,
    Record,
    Source,
    Subject,
    Verdict,
    from_json,
    to_json,
)
from .settings import Budget, Settings

if TYPE_CHECKING:  # loaded on first use: a run that calls no ppl fixture never imports them
    from .identity.spec import MeasurementSpec
    from .keep.baselines import BaselinesFile
    from .measure.perplexity_result import PerplexityResult


WAITED = "waited"


@dataclass(frozen=True)
class Baseline:
    """What ``ppl_baseline`` returns: the result plus where it came from."""

    result: PerplexityResult
    source: Source
    spec: MeasurementSpec
    model: str = ""
    # Measures the dense model's top-k later, if a check needs it and none was kept (``_lazy_reference``).
    reference_maker: Any = field(default=None, compare=False, repr=False)

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


@dataclass
class Call:
    """One fixture call made concrete: settings, prepared corpus and identity.  ``identity`` is
    known without the tokens; ``spec`` is the same with the corpus's window count, from the
    result that served the call (``learn_windows``) or, failing that, from the tokens."""

    settings: Settings
    prepared: Any  # measurement.Prepared
    identity: MeasurementSpec
    device: str | None
    model_name: str
    label: str = ""  # "ppl_check in test_x.py::test_y": what a progress line names
    keep_topk: int = 0  # a baseline keeps the dense model's top-k reference (for KL divergence)
    reference: PerplexityResult | None = None  # a check measured against this dense result's reference

    @property
    def spec(self) -> MeasurementSpec:
        if not self.identity.n_windows_total:
            self.identity = dataclasses.replace(self.identity, n_windows_total=self.prepared.n_windows_total)
        return self.identity

    def learn_windows(self, n_windows_total: int) -> None:
        """The window count from a result that serves this call (no tokens needed)."""
        if not self.identity.n_windows_total:
            self.identity = dataclasses.replace(self.identity, n_windows_total=int(n_windows_total))

    def subject(self, test: str, result: PerplexityResult | None = None) -> Subject:
        s, r = self.spec, result
        size = s.size
        return Subject(test=test, model=self.model_name, model_id=s.model_id, corpus=s.corpus_name,
                       seqlen=s.seqlen, protocol=s.protocol, stride=s.stride,
                       n_windows=r.n_windows if r is not None else s.n_windows, n_windows_total=s.n_windows_total,
                       device=s.device_type, dtype=s.dtype, unpinned=s.unpinned,
                       params=size.params if size is not None else None,
                       nonzero=size.nonzero if size is not None else None,
                       linear_macs=size.linear_macs if size is not None else None,
                       forward_seconds=r.seconds if r is not None else None)


@dataclass
class PPLSession:
    settings: Settings
    file: BaselinesFile | None = None
    auto_device: str | None = None  # what "auto" resolved to at start-up
    cache_root: Any = None          # pytest's own store folder (.pytest_cache/d/llmppl), if any
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    pending: list[Record] = field(default_factory=list)   # made in this process, not yet published
    collected: list[dict[str, Any]] = field(default_factory=list)  # every record of the run (controller)
    passed: set[str] = field(default_factory=set)  # tests whose call phase passed
    seen: set[str] = field(default_factory=set)   # tests that reported at all
    finished: set[str] = field(default_factory=set)  # tests that ran to their end (teardown reported)
    to_run: set[str] = field(default_factory=set)  # every test collected to run (after deselection)
    stopped: bool = False  # the run ended early (-x/--maxfail, an interrupt, an internal error)
    deselected: set[str] = field(default_factory=set)  # collected, then left out (-k, a splitter)
    checks_made: dict[str, int] = field(default_factory=dict)  # test -> ppl_check calls so far
    candidates: dict[str, str] = field(default_factory=dict)  # weights checked as a candidate -> first test
    waited: dict[str, float] = field(default_factory=dict)  # key -> seconds waited for another worker's result
    progress: Any = None  # (label) -> engine progress callback with close(); set by the plugin
    _recording: Any = None
    _memo: dict[str, tuple[PerplexityResult, bool]] = field(default_factory=dict)  # key -> (result, measured here)
    _kl: dict[tuple[str, str], Any] = field(default_factory=dict)  # (candidate key, dense weights) -> KLDivergence
    _store: Any = None
    _refused: bool = False  # no store could be trusted here (StoreRefused): run without one

    # -- the committed file: what this run records in it (``keep.recording``) --------------
    @property
    def recording(self) -> Any:
        """None without a committed file."""
        if self._recording is None and self.file is not None:
            from .keep.recording import Recording

            self._recording = Recording(self.file, self.settings)
        return self._recording

    def take_file_changes(self) -> dict[str, Any] | None:
        """A worker's changes to the committed file since it last sent them (with each test's report)."""
        return self.recording.take_changes() if self.recording is not None else None

    def merge_file_changes(self, changes: dict[str, Any] | None) -> None:
        if self.recording is not None:
            self.recording.merge_changes(changes)

    def version_note(self) -> str | None:
        return self.recording.version_note() if self.recording is not None else None

    # -- the store -----------------------------------------------------------------
    @property
    def store(self) -> Any:
        """The local store, opened on first use; None with --ppl-no-cache."""
        if self._store is None and not self.settings.no_cache and not self._refused:
            from .keep.store import Store, StoreRefused

            try:
                self._store = Store(self.settings.cache_dir or self.cache_root)
            except StoreRefused as exc:
                from .keep.store import CacheWarning

                self._refused = True
                warn_at_user(str(exc), CacheWarning)
        return self._store

    def _results(self) -> Any:
        from .keep.result_store import ResultStore

        return ResultStore(self.store) if self.store is not None else None

    # -- identifying a call ----------------------------------------------------------
    def _call(self, model: Any, tokenizer: Any, overrides: dict[str, Any], fixture: str, test: str = "") -> Call:
        from .measure.measurement import prepare_and_identify

        check_arguments(model, tokenizer, fixture)
        settings = self.settings.with_overrides(**overrides)
        device = self.resolve_device(settings.device)
        prepared, spec = prepare_and_identify(
            model, tokenizer, settings.corpus, settings.seqlen, protocol=settings.protocol, stride=settings.stride,
            max_windows=settings.max_windows, store=self.store, allow_long_seqlen=settings.allow_long_seqlen,
            device=device, dtype=None if settings.dtype == "auto" else settings.dtype)
        return Call(settings, prepared, spec, device, model_name(model), f"{fixture} {test}".strip())

    def resolve_device(self, device: str | None) -> str | None:
        """``auto`` as resolved at start-up (or now); a per-call device checked as options are."""
        if device is not None and device != "auto" and device != self.settings.device:
            from .startup import check_device

            check_device(device, "device")
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
        if self.settings.remeasure or call.identity.unpinned:
            return None, Source.MEASURED
        hit = self._memo.get(call.identity.key)
        if hit is not None and (hit[1] or not fresh_only):
            call.learn_windows(hit[0].n_windows_total)
            return hit[0], Source.MEMORY
        results = self._results()
        found = results.get(call.identity, run=self.run_id if fresh_only else None) if results is not None else None
        if found is None:
            return None, Source.MEASURED
        call.learn_windows(found.n_windows_total)
        return dataclasses.replace(found, identity=call.spec), Source.CACHE

    def _measure(self, model: Any, call: Call, *, fresh_only: bool = False, order: list[int] | None = None,
                 stop: Any = None) -> tuple[PerplexityResult, Source]:
        """Measure under the store's lock (re-checking it first); store a complete result."""
        results = self._results()
        if results is None or call.spec.unpinned:
            return self._forward(model, call, order, stop), Source.MEASURED
        t0 = time.perf_counter()
        with results.lock(call.spec):
            found, source = self._served(call, fresh_only=fresh_only)
            if found is not None:  # another xdist worker measured it while this one waited
                self.waited[call.spec.key] = time.perf_counter() - t0
                return found, source
            result = self._forward(model, call, order, stop)
            results.put(call.spec, result, run=self.run_id)
            return result, Source.MEASURED

    def _forward(self, model: Any, call: Call, order: list[int] | None, stop: Any) -> PerplexityResult:
        from .measure.measurement import run

        s = call.settings
        shown = self.progress(call.label) if self.progress is not None else None
        try:
            result = run(model, call.prepared, batch_size=s.batch_size, device=call.device,
                         dtype=None if s.dtype == "auto" else s.dtype, order=order, stop=stop, top1=True,
                         identity=call.spec, progress=shown, keep_topk=call.keep_topk, reference=call.reference)
        finally:
            if shown is not None:
                shown.close()
        if result.n_windows == call.spec.n_windows and not call.spec.unpinned:
            self._memo[call.spec.key] = (result, True)
        return result

    def _obtain(self, model: Any, call: Call, test: str, *,
                baseline: bool = False) -> tuple[PerplexityResult, Source, tuple[str, ...]]:
        """Served (``_serve``), else measured; a served result is remembered for this process."""
        found, source, notes = self._serve(call, test, baseline=baseline)
        if found is None:
            found, source = self._measure(model, call, fresh_only=self._fresh_only)
        if source is not Source.MEASURED:
            self._memo.setdefault(call.spec.key, (found, False))
        return found, source, notes

    def _serve(self, call: Call, test: str, *,
               baseline: bool = False) -> tuple[PerplexityResult | None, Source, tuple[str, ...]]:
        """The committed file, then memory, then the store.  The file comes first for a baseline
        even with ``--ppl-remeasure`` (it is what the suite compares against); while updating only
        what this run measured counts (``fresh_only``)."""
        if baseline or not self.settings.remeasure:
            found, notes = self._from_file(call, test, baseline=baseline)
            if found is not None:
                return dataclasses.replace(found, size=call.spec.size), Source.FILE, notes
        found, source = self._served(call, fresh_only=self._fresh_only)
        if found is not None:
            found = dataclasses.replace(found, size=call.spec.size)  # this very model: its size, counted now
        return found, source, ()

    @property
    def _updating(self) -> bool:
        return self.file is not None and self.settings.update_baselines

    @property
    def _fresh_only(self) -> bool:
        """Only what this run measured may serve (memory, the store filtered by run): a refresh
        records fresh numbers; a strict verdict comes from the committed file or from a forward on
        this runner, never from a store entry of earlier runs."""
        return self._updating or (self.file is not None and self.settings.strict)

    # -- the three fixtures ------------------------------------------------------------
    def measure(self, model: Any, tokenizer: Any = None, test: str = "", **overrides: Any) -> PerplexityResult:
        """``ppl_of``: a result (served when this identity was measured or recorded before)."""
        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides, "ppl_of", test)
        result, source, _ = self._obtain(model, call, test)
        self.pending.append(MeasureRecord(call.subject(test, result), _finite_or_none(result.ppl), source,
                                          time.perf_counter() - t0, self._wait_note(call), result.lm_eval))
        return result

    def baseline(self, model: Any, tokenizer: Any = None, test: str = "", **overrides: Any) -> Baseline:
        """``ppl_baseline``: from the committed file, memory, the store, or measured once."""
        from .measure.divergence import TOP_K

        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides, "ppl_baseline", test)
        call.keep_topk = TOP_K
        self._refuse_a_candidate(call)
        found, source, notes = self._obtain(model, call, test, baseline=True)
        if source is Source.MEMORY and found.topk is None:  # measured here as a candidate: the store may have it
            found = self._with_argmax(found, call)
        if self.file is not None and self._updating:
            self.recording.record_baseline(call, found, test)
        elif self.file is not None and source is not Source.FILE:
            self.file.used.add(call.spec.file_key)
        self.pending.append(BaselineRecord(call.subject(test, found), _finite_or_none(found.ppl), source,
                                           time.perf_counter() - t0, notes + self._wait_note(call)))
        trusted = source is Source.CACHE or not (self.settings.remeasure or self._fresh_only)  # the store's top-k
        maker = None if found.topk is not None or not found.finite else \
            self._lazy_reference(model, call, found, from_store=trusted)
        return Baseline(found, source, found.identity or call.spec, call.model_name, maker)

    def check(self, model: Any, tokenizer: Any = None, *, baseline: Any, budget: Budget, test: str = "",
              **overrides: Any) -> PerplexityResult:
        """``ppl_check``: serve or measure the candidate, decide against ``baseline + budget`` and
        against this check's recorded result ``+ regression tolerance``."""
        from .judge.decision import NO_RECORD, decide, early_rules

        t0 = time.perf_counter()
        call = self._call(model, tokenizer, overrides, "ppl_check", test)
        index = self.checks_made.get(test, 0)
        self.checks_made[test] = index + 1
        base, base_source, base_ppl = _unpack_baseline(baseline)
        maker = baseline.reference_maker if isinstance(baseline, Baseline) else None
        if not math.isfinite(base_ppl):
            raise PPLFailure(f"the baseline perplexity is {base_ppl}: a baseline must be finite to compare against.")
        base_spec = getattr(base, "identity", None)
        if base_spec is not None:
            _refuse_mismatch(base_spec, call)
        if base_spec is not None and base_spec.model != call.identity.model:
            # a candidate against a dense baseline: a later ppl_baseline of these weights means the shared
            # dense model was pruned in place (a model checked against a plain number may be dense)
            self.candidates.setdefault(call.identity.model, test)
        recorded = self.recording.recorded(call, test, index) if self.recording is not None else NO_RECORD
        kl_budget = call.settings.kl_budget
        if base is not None and base.topk is not None and base.topk.covers(base.window_index):
            call.reference = base
        result, source, _ = self._serve(call, test)
        kl = self._known_kl(call, base, result) if result is not None else None
        if kl_budget is not None and kl is None and call.reference is None and maker is not None:
            base = maker()  # the dense top-k, read or measured now: this candidate's divergence is not known yet
            call.reference = base
        if result is not None and kl is None and kl_budget is not None and call.reference is not None:
            result = None  # served, but its divergence from this dense model is unknown: measure it
        if kl_budget is not None and kl is None and call.reference is None:
            raise PPLFailure(_no_reference_message(base, base_source, kl_budget))
        rules, order = None, None
        if result is None:
            if call.reference is None and maker is not None:  # a forward reports KL when the store kept the top-k
                base = maker(forward=False)
                call.reference = base if base.topk is not None else None
            if not self._updating and kl_budget is None:  # a record, or KL, needs every window: no early verdict
                rules, order = early_rules(base, base_spec, call, budget, base_ppl, recorded)
            result, source = self._measure(model, call, fresh_only=self._fresh_only, order=order,
                                           stop=rules.decided if rules is not None else None)
            if source is not Source.MEASURED:
                rules = None  # another worker's complete result: exact, no early estimate
            kl = self._measured_kl(call, base, result) if source is Source.MEASURED else \
                self._known_kl(call, base, result)
        if self._updating:
            self.recording.record_check(call, result, test, index, kl, base)
        record = decide(call, test, base, base_ppl, base_source, result, source, budget, rules,
                        time.perf_counter() - t0, recorded, kl)
        if self._wait_note(call):
            record = dataclasses.replace(record, notes=record.notes + self._wait_note(call))
        self.pending.append(record)
        if record.verdict is not Verdict.PASS:
            from .judge.decision import failure_message

            raise PPLFailure(failure_message(record))
        return result

    # -- divergence from the dense model ----------------------------------------------------
    def _lazy_reference(self, model: Any, call: Call, found: PerplexityResult, from_store: bool) -> Any:
        """A baseline served without the dense top-k gets it only when a check needs it: from the
        store when it kept it and may serve it (``from_store``; a measured check then reports KL),
        else, for a KL budget (``forward``), from one forward of the dense model if its weights are
        still the baseline's.  An unchanged candidate served with its recorded KL needs neither."""
        import weakref

        held = weakref.ref(model)  # never keeps a dense model alive that the test let go (GPU memory)
        results = self._results()
        read: list[Any] = []  # the store is read once per baseline

        def make(forward: bool = True) -> PerplexityResult:
            from .measure.measurement import function_fingerprint

            if not read:
                read.append(results.topk(call.spec) if results is not None and from_store else None)
            if read[0] is not None and read[0].covers(found.window_index):
                return dataclasses.replace(found, topk=read[0])
            if not forward:
                return found
            dense = held()
            if dense is None:
                raise PPLFailure(
                    f"ppl_check: the KL budget needs the dense model's top-k, which is measured on first use, but "
                    f"{call.model_name} was freed after ppl_baseline: keep it until the check, or keep the local "
                    "store between runs.")
            if function_fingerprint(dense)[0] != call.identity.model:
                raise PPLFailure(
                    f"ppl_check: the KL budget needs the dense model's top-k, which is measured on first use, but "
                    f"{call.model_name} was changed after ppl_baseline (pruned in place?): prune a copy "
                    "(copy.deepcopy(model) or the ppl_pruned fixture), or keep the local store between runs.")
            measured = self._forward(dense, call, None, None)
            if results is not None and measured.topk is not None:
                results.put_topk(call.spec, measured.topk)
            if measured.topk is None or not measured.topk.covers(found.window_index):
                return found
            read[0] = measured.topk
            return dataclasses.replace(found, topk=measured.topk)

        return make

    def _known_kl(self, call: Call, base: PerplexityResult | None, result: PerplexityResult) -> Any:
        """A served candidate's KL against this dense model, when known: identical weights (0), this
        run, the store, or the check's recorded entry in the committed file."""
        if base is None or base.identity is None:
            return None
        dense = base.identity.model
        if dense == call.identity.model:
            from .measure.divergence import TOP_K, KLDivergence

            tokens = sum(result.window_weight) - (result.n_windows if result.protocol == "torch-pruning" else 0)
            return KLDivergence.identical(TOP_K, int(tokens), result.n_windows)
        known = self._kl.get((call.spec.key, dense))
        if known is None and (results := self._results()) is not None:
            known = results.kl(call.spec, dense)
        return known

    def _measured_kl(self, call: Call, base: PerplexityResult | None, result: PerplexityResult) -> Any:
        """The KL statistics of a candidate just measured against ``base``'s reference; kept."""
        if result.divergence is None or base is None or base.identity is None:
            return None
        kl = result.kl
        if kl is not None and not result.subset:
            self._kl[(call.spec.key, base.identity.model)] = kl
            results = self._results()
            if results is not None and not call.spec.unpinned:
                results.put_kl(call.spec, base.identity.model, kl)
        return kl

    def _wait_note(self, call: Call) -> tuple[str, ...]:
        """A record's note when its seconds were mostly a wait for another xdist worker."""
        wait = self.waited.get(call.identity.key)
        return (f"{WAITED} {wait:.1f} s for another xdist worker measuring it",) if wait else ()

    def _refuse_a_candidate(self, call: Call) -> None:
        """A baseline whose weights a check judged as a pruned candidate earlier in this session:
        the shared dense model was pruned in place, and every later check would compare the
        pruned model with itself.  A warning; an error where it would be committed or trusted."""
        checked_by = self.candidates.get(call.identity.model)
        if checked_by is None:
            return
        msg = (f"ppl_baseline: these weights (id {call.spec.model_id}) are the pruned candidate that {checked_by} "
               "checked earlier in this session: the shared dense model was probably pruned in place, so this "
               "baseline would compare the pruned model with itself. Prune a copy (copy.deepcopy(model), or the "
               "ppl_pruned fixture, which copies) or load the dense model afresh")
        if self.settings.update_baselines or self.settings.strict:
            flag = "--ppl-update-baselines" if self.settings.update_baselines else "--ppl-strict"
            raise PPLFailure(f"{msg} ({flag}: refused).")
        warn_at_user(msg + ".", PrunedInPlaceWarning)

    # -- the committed file --------------------------------------------------------------
    def _from_file(self, call: Call, test: str, *, baseline: bool = False) -> tuple[PerplexityResult | None,
                                                                                    tuple[str, ...]]:
        """The file's entry with this identity (a baseline's or a recorded check's), with the dense
        argmax of memory or the store when they hold this identity.  For a baseline, a miss is
        explained: measured on another device type or dtype (a warning), or, under
        ``--ppl-strict``, a failure."""
        if self.file is None or self.settings.update_baselines or call.identity.unpinned:
            return None, ()
        hit = self.file.find(call.identity)
        if hit.entry is None:
            if baseline and hit.elsewhere:
                entry = hit.elsewhere[0]
                msg = (f"committed baseline for {call.model_name} was measured on {entry['device']}/{entry['dtype']}, "
                       f"this run evaluates on {call.spec.device_type}/{call.spec.dtype}: refresh it with "
                       "--ppl-update-baselines on this runner")
                if self.settings.strict:
                    raise PPLFailure(msg + " (--ppl-strict).")
                warn_at_user(msg + "; measuring instead.", BaselineMismatchWarning)
            elif baseline and self.settings.strict:
                raise PPLFailure(self.recording.missing_message(call, test))
            return None, ()
        if hit.key is not None:
            self.file.used.add(hit.key)
        call.learn_windows(hit.entry["n_windows_total"])
        recorded_kl = hit.entry.get("kl")
        if isinstance(recorded_kl, dict) and isinstance(recorded_kl.get("dense_model_fingerprint"), str):
            from .measure.divergence import KLDivergence

            self._kl.setdefault((call.spec.key, recorded_kl["dense_model_fingerprint"]),
                                KLDivergence.from_json(recorded_kl))
        differ = call.spec.runtime_differences(call.spec.with_runtime(hit.entry))
        notes = tuple(f"committed {'baseline' if baseline else 'result'} recorded with {name} {was}, "
                      f"this run has {now}" for name, (was, now) in differ.items())
        if notes and baseline:
            warn_at_user(f"{call.model_name}: {'; '.join(notes)} (numbers may differ slightly; refresh with "
                          "--ppl-update-baselines)", BaselineMismatchWarning)
        from .keep.baselines import entry_result

        return self._with_argmax(entry_result(hit.entry, call.spec), call), notes

    def _with_argmax(self, result: PerplexityResult, call: Call) -> PerplexityResult:
        """A committed result carries neither the argmax nor the dense top-k; memory or the store
        may, for this very identity (whatever software recorded the file)."""
        hit = self._memo.get(call.spec.key)
        results = self._results()
        known = hit[0] if hit is not None else results.get(call.spec) if results is not None else None
        if known is not None and known.top1 and known.window_index == result.window_index:
            result = dataclasses.replace(result, top1=known.top1)
        topk = known.topk if known is not None else None  # else read from the store when a check needs it
        if topk is not None and topk.covers(result.window_index):
            result = dataclasses.replace(result, topk=topk)
        return result

    # -- records: publish (any process), collect (controller), finish --------------------
    def take_pending(self) -> list[dict[str, Any]]:
        out = [to_json(r) for r in self.pending]
        self.pending.clear()
        return out

    def end_test(self, nodeid: str) -> None:
        self.checks_made.pop(nodeid, None)

    def collect(self, nodeid: str, when: str, records: list[dict[str, Any]] | None, passed: bool = True) -> None:
        self.seen.add(nodeid)
        if when == "teardown":
            self.finished.add(nodeid)
        if when == "call" and passed:
            self.passed.add(nodeid)
        if records:
            self.collected.extend(records)

    def records(self) -> list[Record]:
        return [from_json(r) for r in self.collected]

    def finish(self, whole_files: set[str], outcome_counts: dict[str, int], header: str,
               narrowed: bool = False) -> list[str]:
        """End of run (controller only): the committed file (or this shard's changes to it), then
        the reports.  Returns lines for the terminal."""
        lines: list[str] = []
        if self.file is None and not (self.settings.report or self.settings.report_md):
            return lines
        if self.recording is not None:
            from .keep.recording import RunFacts

            run = RunFacts(self.passed, self.seen, self.finished, self.to_run, self.deselected, self.stopped)
            lines += self.recording.write(run, whole_files, narrowed)
        from .report.run_end import report_files

        lines += report_files(self.records(), self.settings, self.file, outcome_counts, header)
        return lines


def check_arguments(model: Any, tokenizer: Any, fixture: str) -> None:
    """The model first, then the tokenizer (or None, or a name to load it from): one message that
    names the fix rather than an AttributeError from deep inside."""
    def is_tokenizer(x: Any) -> bool:
        return hasattr(x, "get_vocab") and hasattr(x, "encode") and not hasattr(x, "parameters")

    if is_tokenizer(model) and hasattr(tokenizer, "parameters"):
        raise LLMPPLError(f"{fixture}(model, tokenizer): the arguments are swapped (got a {type(model).__name__} "
                          f"first and a {type(tokenizer).__name__} second): call {fixture}(model, tokenizer)")
    if not hasattr(model, "parameters") or not callable(model):
        raise LLMPPLError(f"{fixture}(model, tokenizer): the first argument must be the model (a torch.nn.Module "
                          f"causal LM), got {type(model).__name__}")
    if tokenizer is not None and not isinstance(tokenizer, str) and not hasattr(tokenizer, "encode"):
        raise LLMPPLError(f"{fixture}(model, tokenizer): the second argument must be the model's tokenizer (or "
                          f"its name, or None to load it from the model's path), got {type(tokenizer).__name__}")


def _no_reference_message(base: PerplexityResult | None, source: Source, kl_budget: float) -> str:
    """Why a KL budget cannot be judged: the baseline carries no dense distribution."""
    if base is None:
        why = "the baseline was given as a number, which carries no dense distribution"
    elif source is Source.GIVEN:
        why = "the baseline is a PerplexityResult measured without keep_topk (ppl_of keeps no dense distribution)"
    else:
        why = ("the baseline was served without the dense model's top-k (the committed file does not keep it) and "
               "the KL budget was set on ppl_check alone, after the baseline was made")
    return (f"ppl_check: the KL budget {kl_budget:g} cannot be judged: {why}. Pass baseline=ppl_baseline(dense_model, "
            "tok) and set the KL budget where ppl_baseline sees it too (--ppl-kl-budget, ini ppl_kl_budget, "
            "@pytest.mark.ppl_kl_budget or ppl_baseline(..., kl_budget=...)), so the dense model's top-k is kept.")


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _unpack_baseline(baseline: Any) -> tuple[PerplexityResult | None, Source, float]:
    from .measure.perplexity_result import PerplexityResult

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


def _refuse_mismatch(base: MeasurementSpec, call: Call) -> None:
    differ = base.mismatch(call.identity)
    if differ:
        check = call.spec
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
    from .keep.baselines import BaselinesFile

    return BaselinesFile.load(settings.baselines, must_exist=settings.strict and not settings.update_baselines,
                              replacing=settings.update_baselines)
