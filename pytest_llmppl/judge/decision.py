"""A check's verdict (pure).

``decide`` turns a baseline, a candidate result, a budget and the check's own recorded
result into a ``CheckRecord``.  Two comparisons: ``baseline + budget`` (how much pruning
may cost) and, where the committed file records this check, ``recorded + regression
tolerance`` (a refactor must not make the pruned model worse); and with a KL budget a
third, the mean KL divergence from the dense model.  PASS when all hold (or, with an
early verdict, when the sequential rules were certain of both), FAIL otherwise,
NOT_FINITE for a NaN/inf candidate.  The windows are compared once (``stats.Comparison``);
the size half is ``size_verdict``; ``messages.failure_message`` explains a failure.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..measure.perplexity_result import PerplexityResult
from ..settings import Budget
from .hotspots import worst_windows
from .records import (
    IDENTICAL_NOTE,
    AgainstRecord,
    CheckRecord,
    EarlyInfo,
    Source,
    Subject,
    Verdict,
    WindowLoss,
)
from .size_verdict import MAX_SHAPES_KEPT, SizeVerdict
from .stats import Comparison, EarlyDecision

if TYPE_CHECKING:
    from ..identity.size_facts import SizeFacts
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
    vs_base = Comparison.of(base, result) if base is not None and finite else None
    vs_record = Comparison.of(reg, result) if reg is not None and finite else None
    deltas = vs_base.deltas if vs_base is not None else {}
    recorded_deltas = vs_record.deltas if vs_record is not None and over_record else {}
    prepared = call.prepared

    def worst_of(rises: dict[int, float]) -> tuple[WindowLoss, ...]:
        return worst_windows(rises, prepared.windows, prepared.ids, prepared.tokenizer, WORST_WINDOWS) if rises else ()

    worst = worst_of(deltas if over_budget else {})
    worst_recorded = worst_of(recorded_deltas)
    worst_kl = worst_of(dict(kl.worst) if over_kl and kl is not None and kl.worst else {})
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
        paired=vs_base.paired if vs_base is not None else None,
        top1=vs_base.top1 if vs_base is not None else None,
        early=_early_info(decided.budget, call.settings.confidence) if decided is not None else None,
        worst=worst,
        window_index=tuple(sorted(deltas)),
        window_delta=tuple(deltas[i] for i in sorted(deltas)),
        notes=((IDENTICAL_NOTE,) if identical else ()) + size.notes
        + _dense_notes(base, base_source, finite, vs_base.top1 if vs_base is not None else None, kl),
        recorded=recorded.result.ppl if recorded.result is not None else None,
        regression_tolerance=(None if recorded.status is AgainstRecord.NONE
                              else str(recorded.tolerance) if recorded.tolerance is not None else "off"),
        regression_threshold=recorded.threshold,
        recorded_paired=vs_record.paired if vs_record is not None else None,
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


def _early_info(rule: EarlyDecision, confidence: float) -> EarlyInfo:
    assert rule.estimate is not None and rule.decided_at is not None
    est, se = rule.estimate
    return EarlyInfo(decided_after=rule.decided_at, of=rule.n_total, confidence=confidence,
                     estimate_ppl=math.exp(est), ln_ppl_se=se, z=rule.z)
