"""A check's verdict (pure) and the message that explains it.

``decide`` turns a baseline, a candidate result, a budget and the check's own recorded
result into a ``CheckRecord``.  Two comparisons: ``baseline + budget`` (how much pruning
may cost) and, where the committed file records this check, ``recorded + regression
tolerance`` (a refactor must not make the pruned model worse); and with a KL budget a
third, the mean KL divergence from the dense model.  PASS when all hold (or, with an
early verdict, when the sequential rules were certain of both), FAIL otherwise,
NOT_FINITE for a NaN/inf candidate.  ``failure_message`` says by how much, against what,
and where the model lost most.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..identity.size_facts import SHOWN_CHANGES, SizeFacts, grew
from ..measure.perplexity_result import PerplexityResult
from ..settings import Budget, budget_words
from .hotspots import describe, window_deltas, worst_windows
from .records import (
    AgainstRecord,
    CheckRecord,
    EarlyInfo,
    ShapeChange,
    SizeGrowth,
    Source,
    Subject,
    Verdict,
    WindowLoss,
    se_text,
    signed,
)
from .stats import EarlyDecision, paired_delta, top1_agreement

if TYPE_CHECKING:
    from ..measure.call import Call
    from ..measure.divergence import KLDivergence
    from .against import Against

WORST_WINDOWS = 3


@dataclass(frozen=True)
class Recorded:
    """This check's recorded result, as the comparison needs it: the result when it can be
    compared (same settings, device type and dtype), the tolerance (None: off) and why not."""

    result: PerplexityResult | None
    tolerance: Budget | None
    status: AgainstRecord
    same_weights: bool = False  # the recorded candidate's weights are this candidate's
    entry: bool = False         # the file holds a record of this check (whatever its settings)
    size: SizeFacts | None = None  # what the record kept (None: recorded before 0.4, or no record)

    @property
    def threshold(self) -> float | None:
        if self.result is None or self.tolerance is None:
            return None
        return self.tolerance.threshold(self.result.ppl)


NO_RECORD = Recorded(None, None, AgainstRecord.NONE)


@dataclass
class EarlyRules:
    """The sequential rule against the baseline and, with a recorded result, one against it:
    the run stops only when both verdicts are certain.  With two rules each runs at half the
    error (Bonferroni), so the chance of any wrong early verdict stays ``1 - confidence``."""

    budget: EarlyDecision
    regression: EarlyDecision | None = None

    def decided(self, indices: list[int], nlls: list[float]) -> bool:
        done = self.budget.decided(indices, nlls)  # both see every look: no short circuit
        if self.regression is not None:
            done = self.regression.decided(indices, nlls) and done
        return done

    def certain(self) -> bool:
        return all(r.verdict in ("pass", "fail") and r.estimate is not None
                   for r in (self.budget, self.regression) if r is not None)


def early_rules(against: Against, call: Call, budget: Budget,
                recorded: Recorded) -> tuple[EarlyRules | None, list[int] | None]:
    """The sequential rules and a fixed pseudo-random window order, when early verdicts are on
    and the baseline (and a recorded result being compared) covers every window of the same
    (content-identified) corpus."""
    base, base_ppl = against.result, against.ppl
    if not call.settings.early_stop or base is None or against.spec is None or base.subset or call.spec.max_windows:
        return None, None
    reg = recorded.result if recorded.threshold is not None else None
    if reg is not None and (reg.subset or reg.window_index != base.window_index):
        return None, None
    confidence = call.settings.confidence
    if reg is not None:
        confidence = 1 - (1 - confidence) / 2
    rules = EarlyRules(_rule(base, budget.threshold(base_ppl), confidence))
    if reg is not None and recorded.threshold is not None:
        rules.regression = _rule(reg, recorded.threshold, confidence)
    idx = list(base.window_index)
    random.Random(0).shuffle(idx)
    return rules, idx


def _rule(reference: PerplexityResult, threshold: float, confidence: float) -> EarlyDecision:
    idx = reference.window_index
    return EarlyDecision(dict(zip(idx, reference.window_nll)), dict(zip(idx, reference.window_weight)), threshold,
                         confidence)


def decide(call: Call, against: Against, result: PerplexityResult, source: Source, budget: Budget,
           rules: EarlyRules | None, seconds: float, recorded: Recorded = NO_RECORD,
           kl: KLDivergence | None = None) -> CheckRecord:
    base, base_ppl, base_source = against.result, against.ppl, against.source
    threshold = budget.threshold(base_ppl)
    # An early verdict: the rules stopped the run before its end, certain of every comparison.
    decided = rules if rules is not None and result.subset and rules.certain() else None
    est = decided.budget.estimate if decided is not None else None
    measured = math.exp(est[0]) if est is not None else result.ppl
    finite = result.finite and math.isfinite(measured)
    reg = recorded.result if recorded.threshold is not None else None
    over_budget = over_record = False
    if finite and decided is not None:
        over_budget = decided.budget.verdict == "fail"
        over_record = decided.regression is not None and decided.regression.verdict == "fail"
    elif finite:
        over_budget = measured > threshold
        over_record = reg is not None and recorded.threshold is not None and measured > recorded.threshold
    kl_budget = call.settings.kl_budget
    # not "mean > budget": an infinite or NaN divergence fails its budget, it never slips through a comparison
    over_kl = finite and kl is not None and kl_budget is not None and not kl.mean <= kl_budget
    size = SizeVerdict.of(call.spec.size, recorded, call.settings, base)
    if not finite:
        verdict = Verdict.NOT_FINITE
    else:
        failed = over_budget or over_record or over_kl or size.grew or size.over_keep
        verdict = Verdict.FAIL if failed else Verdict.PASS
    deltas = window_deltas(base, result) if base is not None and finite else {}
    worst: tuple[WindowLoss, ...] = ()
    worst_recorded: tuple[WindowLoss, ...] = ()
    prepared = call.prepared
    if over_budget and deltas:
        worst = worst_windows(deltas, prepared.windows, prepared.ids, prepared.tokenizer, WORST_WINDOWS)
    recorded_deltas: dict[int, float] = {}
    if over_record and reg is not None:
        recorded_deltas = window_deltas(reg, result)
        worst_recorded = worst_windows(recorded_deltas, prepared.windows, prepared.ids, prepared.tokenizer,
                                       WORST_WINDOWS)
    worst_kl: tuple[WindowLoss, ...] = ()
    if over_kl and kl is not None and kl.worst:
        worst_kl = worst_windows(dict(kl.worst), prepared.windows, prepared.ids, prepared.tokenizer, WORST_WINDOWS)
    reasons = {"budget": over_budget, "regression": over_record, "kl": over_kl, "size": bool(size.grew),
               "keep_at_most": size.over_keep}
    decided_by = "+".join(name for name, failed in reasons.items() if failed) if finite else ""
    base_id = base.identity.model_id if base is not None and base.identity is not None else ""
    identical = bool(base is not None and base.identity is not None and base.identity.model == call.spec.model)
    return CheckRecord(
        subject=Subject.of(call, result),
        baseline=base_ppl,
        baseline_source=base_source,
        baseline_model_id=base_id,
        measured=measured,
        measured_source=source,
        budget=str(budget),
        threshold=threshold,
        verdict=verdict,
        seconds=seconds,
        paired=_paired(base, result) if finite else None,
        top1=_top1(base, result) if finite else None,
        early=_early_info(decided.budget, call.settings.confidence) if decided is not None else None,
        worst=worst,
        window_index=tuple(sorted(deltas)),
        window_delta=tuple(deltas[i] for i in sorted(deltas)),
        notes=((IDENTICAL_NOTE,) if identical else ()) + size.notes(call.spec.size, recorded.size)
        + _dense_notes(base, base_source, finite, _top1(base, result) if finite else None, kl),
        recorded=recorded.result.ppl if recorded.result is not None else None,
        regression_tolerance=(None if recorded.status is AgainstRecord.NONE
                              else str(recorded.tolerance) if recorded.tolerance is not None else "off"),
        regression_threshold=recorded.threshold,
        recorded_paired=_paired(reg, result) if finite and reg is not None else None,
        against_record=_against(recorded, measured, finite, over_record),
        decided_by=decided_by,
        worst_recorded=worst_recorded,
        window_delta_recorded=tuple(recorded_deltas[i] for i in sorted(recorded_deltas)),
        identical_to_baseline=identical,
        kl=kl if finite else None,
        lm_eval=result.lm_eval,
        kl_budget=kl_budget,
        worst_kl=worst_kl,
        baseline_params=size.baseline_params,
        recorded_params=recorded.size.params if recorded.size is not None else None,
        recorded_nonzero=recorded.size.nonzero if recorded.size is not None else None,
        recorded_linear_macs=recorded.size.linear_macs if recorded.size is not None else None,
        size_against_record=size.status,
        size_tolerance=size.tolerance,
        size_grew=size.grew,
        changed_shapes=size.changes[:MAX_SHAPES_KEPT],
        n_changed_shapes=len(size.changes),
        keep_at_most=str(call.settings.keep_at_most) if call.settings.keep_at_most is not None else None,
        keep_limit=size.keep_limit,
    )


MAX_SHAPES_KEPT = 20  # changed modules a record keeps (a message names the first few)


@dataclass(frozen=True)
class SizeVerdict:
    """The size half of a check: against its record (grown beyond the size tolerance fails) and
    against ``keep_at_most`` (a share of the dense baseline's parameters, or a count)."""

    status: str = ""
    tolerance: str | None = None
    grew: tuple[SizeGrowth, ...] = ()
    changes: tuple[ShapeChange, ...] = ()
    baseline_params: int | None = None
    keep_limit: float | None = None
    over_keep: bool = False

    @classmethod
    def of(cls, now: SizeFacts | None, recorded: Recorded, settings: Any,
           base: PerplexityResult | None) -> SizeVerdict:
        dense = base.size if base is not None and base.size is not None else None
        if dense is None and base is not None and base.identity is not None:
            dense = base.identity.size
        baseline_params = dense.params if dense is not None else None
        keep = settings.keep_at_most
        limit = keep.limit(baseline_params) if keep is not None else None
        over_keep = now is not None and limit is not None and now.params > limit
        tolerance = settings.size_tolerance
        if now is None or not recorded.entry or recorded.status is AgainstRecord.RECORDED:
            return cls(baseline_params=baseline_params, keep_limit=limit, over_keep=over_keep)
        if recorded.size is None:
            return cls("not recorded", None, baseline_params=baseline_params, keep_limit=limit, over_keep=over_keep)
        changes = tuple(ShapeChange(m, old, new) for m, old, new in now.changed_shapes(recorded.size))
        growth = tuple(SizeGrowth(*g) for g in grew(now, recorded.size, tolerance))
        old = recorded.size
        if growth:
            status = "grew"
        elif (now.params, now.nonzero, now.linear_macs) == (old.params, old.nonzero, old.linear_macs):
            status = "same" if not changes else "reshaped"
        elif now.params <= old.params and now.nonzero <= old.nonzero and now.linear_macs <= old.linear_macs:
            status = "smaller"
        else:
            status = "grew within tolerance"
        return cls(status, str(tolerance) if tolerance is not None else "off", growth, changes, baseline_params,
                   limit, over_keep)

    def notes(self, now: SizeFacts | None, recorded: SizeFacts | None) -> tuple[str, ...]:
        """What a reviewer should know of the size when the verdict does not say it."""
        if self.status == "not recorded":
            return ("size not recorded: the record predates size facts; refresh it with --ppl-update-baselines",)
        if self.status == "smaller" and now is not None and recorded is not None:
            change = signed(100 * (now.params - recorded.params) / recorded.params, 1)
            return (f"smaller than recorded: {now.params:,} parameters ({change}%), {now.nonzero:,} non-zero, "
                    f"{now.linear_macs:,} linear MACs per token",)
        return ()


IDENTICAL_NOTE = "the candidate's weights are identical to the baseline's: pruning changed nothing"


def _dense_notes(base: PerplexityResult | None, base_source: Source, finite: bool, top1: Any,
                 kl: Any) -> tuple[str, ...]:
    """Why a row's top-1 or KL cell is empty when the baseline came from the committed file: the
    dense model's distribution is kept in the local store, not in the file."""
    missing = [name for name, value in (("top-1", top1), ("KL", kl)) if value is None]
    if base is None or not finite or not missing or base_source is not Source.FILE:
        return ()
    return (f"{' and '.join(missing)} not measured: dense top-k not on this runner (the committed file does not "
            "keep the dense model's distribution; the local store does, and a KL budget measures it)",)


def _against(recorded: Recorded, measured: float, finite: bool, over_record: bool) -> AgainstRecord:
    if recorded.result is None or recorded.tolerance is None or not finite:
        return recorded.status
    if recorded.same_weights:
        return AgainstRecord.UNCHANGED
    if over_record:
        return AgainstRecord.WORSE
    if measured < recorded.tolerance.lower(recorded.result.ppl):
        return AgainstRecord.BETTER
    return AgainstRecord.WITHIN


def _paired(base: PerplexityResult | None, result: PerplexityResult) -> Any:
    if base is None:
        return None
    by_window = {i: (n, w) for i, n, w in zip(base.window_index, base.window_nll, base.window_weight)}
    if not all(i in by_window for i in result.window_index):
        return None
    pairs = [by_window[i] for i in result.window_index]
    return paired_delta([p[0] for p in pairs], [p[1] for p in pairs], result.window_nll, result.window_weight,
                        result.n_windows_total)


def _top1(base: PerplexityResult | None, result: PerplexityResult) -> Any:
    if base is None or not base.top1 or not result.top1:
        return None
    try:
        return top1_agreement(base.top1, result.top1)
    except ValueError:
        return None


def _early_info(rule: EarlyDecision, confidence: float) -> EarlyInfo:
    assert rule.estimate is not None and rule.decided_at is not None
    est, se = rule.estimate
    return EarlyInfo(decided_after=rule.decided_at, of=rule.n_total, confidence=confidence,
                     estimate_ppl=math.exp(est), ln_ppl_se=se, z=rule.z)


def where(record: CheckRecord) -> str:
    s = record.subject
    text = f"corpus {s.corpus}, seqlen {s.seqlen}, {s.n_windows}/{s.n_windows_total} windows, protocol {s.protocol}"
    if s.stride is not None:
        text += f", stride {s.stride}"
    if record.early is not None:
        text += (f"; early verdict after {record.early.decided_after}/{record.early.of} windows at "
                 f"{100 * record.early.confidence:g}% confidence, PPL is an estimate")
    return text


def failure_message(record: CheckRecord) -> str:
    """One message: by how much, against what (the budget, the recorded result, or both), where in
    the corpus, and where the numbers came from."""
    served = ""
    if record.measured_source in (Source.CACHE, Source.MEMORY, Source.FILE):
        served = f"; measured result served from {record.measured_source.value}, identical weights"
    if record.verdict is Verdict.NOT_FINITE:
        return (f"ppl_check: perplexity is {record.measured} (not finite) against baseline {record.baseline:.4f} "
                f"[{where(record)}{served}]. A half-precision overflow after pruning is the usual cause: evaluate in "
                "bfloat16/float32 (--ppl-dtype) or inspect the pruned layers.")
    assert record.measured is not None and record.delta is not None and record.delta_pct is not None
    parts = []
    if record.measured > record.threshold:
        noise = ""
        if record.delta_se is not None:
            label = "early estimate" if record.early is not None else "paired"
            noise = f"; {label} dPPL {signed(record.delta)} ± {se_text(record.delta_se)} (SE)"
        text = (f"ppl_check: PPL {record.measured:.4f} exceeds the threshold {record.threshold:.4f} by "
                f"{record.measured - record.threshold:.4f} (baseline {record.baseline:.4f} + budget "
                f"{budget_words(record.budget)} = "
                f"{record.threshold:.4f}; {signed(record.delta)}, {signed(record.delta_pct, 2)}% vs baseline{noise}) "
                f"[{where(record)}{served}]")
        if record.identical_to_baseline:
            text += f" ({IDENTICAL_NOTE})"
        if record.worst:
            text += f"\nworst windows: {describe(record.worst)}"
        parts.append(text)
    if record.against_record is AgainstRecord.WORSE:
        parts.append(regression_message(record, with_where=not parts))
    if record.kl is not None and record.kl_budget is not None and not record.kl.mean <= record.kl_budget:
        parts.append(kl_message(record, with_where=not parts))
    if record.size_grew:
        parts.append(size_message(record))
    if record.keep_limit is not None and record.subject.params is not None and \
            record.subject.params > record.keep_limit:
        parts.append(keep_message(record))
    kept = size_line(record)
    if kept and not (record.size_grew or "keep_at_most" in record.decided_by):
        parts.append(kept)
    return "\n".join(parts)


def size_line(record: CheckRecord) -> str:
    """``size: 499,068 parameters, 75.8% of the baseline's 658,048``: the other half of the trade-off."""
    params = record.subject.params
    if params is None:
        return ""
    text = f"size: {params:,} parameters"
    if record.kept is not None and record.baseline_params is not None:
        text += f", {100 * record.kept:.1f}% of the baseline's {record.baseline_params:,}"
    if record.subject.nonzero is not None and record.subject.nonzero != params:
        text += f" ({record.subject.nonzero:,} non-zero)"
    return text


def size_message(record: CheckRecord) -> str:
    """A check whose model grew over its record: by how much, and which modules changed shape."""
    first, *also = record.size_grew
    text = (f"ppl_check: the pruned model keeps {first.now:,} {first.what}, {_pct_more(first.now, first.recorded)} "
            f"than recorded ({first.recorded:,})")
    if also:
        text += " (and " + ", ".join(f"{g.what} {_pct_more(g.now, g.recorded)}" for g in also) + ")"
    if record.kept is not None and record.baseline_params is not None:
        text += f"; it keeps {100 * record.kept:.1f}% of the baseline's {record.baseline_params:,} parameters"
    if record.n_changed_shapes:
        shown = ", ".join(f"{c.module} {_shape_text(c.recorded)} → {_shape_text(c.now)}"
                          for c in record.changed_shapes[:SHOWN_CHANGES])
        more = record.n_changed_shapes - min(SHOWN_CHANGES, len(record.changed_shapes))
        text += (f": {record.n_changed_shapes} module{'s' if record.n_changed_shapes != 1 else ''} changed shape, "
                 f"{shown}{f' and {more} more' if more > 0 else ''}")
    tolerance = record.size_tolerance
    text += (f"; the pruning removes less than it did (size tolerance {tolerance}). If that is intended, accept it "
             "on purpose: run with --ppl-update-baselines and commit the baselines file.")
    return text


def keep_message(record: CheckRecord) -> str:
    """A check whose model keeps more than ``keep_at_most`` allows."""
    params, limit = record.subject.params, record.keep_limit
    assert params is not None and limit is not None
    share = (f", {100 * record.kept:.1f}% of the baseline's {record.baseline_params:,}"
             if record.kept is not None and record.baseline_params is not None else "")
    return (f"ppl_check: the pruned model keeps {params:,} parameters{share}: more than keep_at_most "
            f"{record.keep_at_most} allows ({limit:,.0f}), by {params - limit:,.0f}; the pruning removes less than "
            "it should")


def _pct_more(now: int, recorded: int) -> str:
    return f"{100 * (now - recorded) / recorded:.1f}% more" if recorded else "more"


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "(none)" if shape is None else "[" + ", ".join(str(d) for d in shape) + "]"


def kl_message(record: CheckRecord, *, with_where: bool = True) -> str:
    """A check that diverges from the dense model more than the KL budget allows: by how much, the
    shape of the divergence (llama.cpp's statistics) and the windows where it is highest."""
    kl, budget = record.kl, record.kl_budget
    assert kl is not None and budget is not None
    text = (f"ppl_check: mean KL divergence from the dense model {kl.mean:.4f} ± {se_text(kl.se)} nats/token "
            f"exceeds the KL budget {budget:g} by {kl.mean - budget:.4f} (median {kl.median:.4f}, "
            f"99% {kl.percentiles.get('99', math.nan):.4f}, max {kl.maximum:.4f}; same top token "
            f"{100 * kl.same_top:.1f}%; RMS Δp {100 * kl.dp_rms:.2f}%; {kl.tokens} tokens)")
    if with_where:
        text += f" [{where(record)}]"
    if record.worst_kl:
        text += f"\nwindows where divergence is highest: {describe(record.worst_kl, 'KL')}"
    return text


def regression_message(record: CheckRecord, *, with_where: bool = True) -> str:
    """A check worse than its own recorded result: the recorded and the new PPL, the paired Δ
    against the recorded windows, where it lost most against them, and how to accept it."""
    assert record.measured is not None and record.recorded is not None and record.regression_threshold is not None
    d, pct = record.delta_recorded, record.delta_recorded_pct
    assert d is not None and pct is not None
    noise = ""
    if record.delta_recorded_se is not None:
        noise = f"; paired dPPL {signed(d)} ± {se_text(record.delta_recorded_se)} (SE) against the recorded windows"
    text = (f"ppl_check: regression: PPL {record.measured:.4f} is worse than this check's recorded PPL "
            f"{record.recorded:.4f} (recorded {record.recorded:.4f} + tolerance {record.regression_tolerance} = "
            f"{record.regression_threshold:.4f}, exceeded by {record.measured - record.regression_threshold:.4f}; "
            f"{signed(d)}, {signed(pct, 2)}% vs recorded{noise})")
    if with_where:
        text += f" [{where(record)}]"
    if record.worst_recorded:
        text += f"\nworst windows vs recorded: {describe(record.worst_recorded)}"
    return text + ("\nIf the change is intended, accept it on purpose: run with --ppl-update-baselines and commit "
                   "the baselines file.")
