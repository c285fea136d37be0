"""A check's verdict (pure) and the message that explains it.

``decide`` turns a baseline, a candidate result and a budget into a ``CheckRecord``:
PASS when the candidate's PPL is at most ``baseline + budget`` (or, with an early
verdict, when the sequential rule was certain it is), FAIL otherwise, NOT_FINITE for a
NaN/inf candidate.  ``failure_message`` says by how much, against what, and where the
model lost most.
"""

from __future__ import annotations

import math
import random
from typing import Any

from .hotspots import describe, window_deltas, worst_windows
from .identity import MeasurementSpec
from .records import CheckRecord, EarlyInfo, Source, Verdict, WindowLoss
from .result import PerplexityResult
from .settings import Budget
from .stats import EarlyDecision, paired_delta, top1_agreement

WORST_WINDOWS = 3


def early_rule(base: PerplexityResult | None, base_spec: MeasurementSpec | None, call: Any,
               threshold: float) -> tuple[EarlyDecision | None, list[int] | None]:
    """The sequential rule and a fixed pseudo-random window order, when early verdicts are on
    and the baseline covers every window of the same (content-identified) corpus."""
    if not call.settings.early_stop or base is None or base_spec is None or base.subset or call.spec.max_windows:
        return None, None
    idx = list(base.window_index)
    rule = EarlyDecision(dict(zip(idx, base.window_nll)), dict(zip(idx, base.window_weight)), threshold,
                         call.settings.confidence)
    random.Random(0).shuffle(idx)
    return rule, idx


def decide(call: Any, test: str, base: PerplexityResult | None, base_ppl: float, base_source: Source,
           result: PerplexityResult, source: Source, budget: Budget, threshold: float,
           rule: EarlyDecision | None, seconds: float) -> CheckRecord:
    # An early verdict: the rule stopped the run before its end, certain of pass or fail.
    certain = rule is not None and result.subset and rule.verdict in ("pass", "fail") and rule.estimate is not None
    decided = rule if certain else None
    measured = math.exp(decided.estimate[0]) if decided is not None and decided.estimate else result.ppl
    finite = result.finite and math.isfinite(measured)
    if not finite:
        verdict = Verdict.NOT_FINITE
    elif decided is not None:
        verdict = Verdict.PASS if decided.verdict == "pass" else Verdict.FAIL
    else:
        verdict = Verdict.PASS if measured <= threshold else Verdict.FAIL
    deltas = window_deltas(base, result) if base is not None and finite else {}
    worst: tuple[WindowLoss, ...] = ()
    if verdict is Verdict.FAIL and deltas:
        prepared = call.prepared
        worst = worst_windows(deltas, prepared.windows, prepared.ids, prepared.tokenizer, WORST_WINDOWS)
    return CheckRecord(
        subject=call.subject(test, result),
        baseline=base_ppl,
        baseline_source=base_source,
        baseline_model_id=(base.identity.model_id if base is not None and base.identity is not None else ""),
        measured=measured,
        measured_source=source,
        budget=str(budget),
        threshold=threshold,
        verdict=verdict,
        seconds=seconds,
        paired=_paired(base, result) if finite else None,
        top1=_top1(base, result) if finite else None,
        early=_early_info(decided) if decided is not None else None,
        worst=worst,
        window_index=tuple(sorted(deltas)),
        window_delta=tuple(deltas[i] for i in sorted(deltas)),
    )


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


def _early_info(rule: EarlyDecision) -> EarlyInfo:
    assert rule.estimate is not None and rule.decided_at is not None
    est, se = rule.estimate
    return EarlyInfo(decided_after=rule.decided_at, of=rule.n_total, confidence=rule.confidence,
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
    """One message: by how much, against what, where in the corpus, and where the numbers came from."""
    served = ""
    if record.measured_source in (Source.CACHE, Source.MEMORY):
        served = f"; measured result served from {record.measured_source.value}, identical weights"
    if record.verdict is Verdict.NOT_FINITE:
        return (f"ppl_check: perplexity is {record.measured} (not finite) against baseline {record.baseline:.4f} "
                f"[{where(record)}{served}]. A half-precision overflow after pruning is the usual cause: evaluate in "
                "bfloat16/float32 (--ppl-dtype) or inspect the pruned layers.")
    assert record.measured is not None and record.delta is not None and record.delta_pct is not None
    noise = ""
    if record.delta_se is not None:
        label = "early estimate" if record.early is not None else "paired"
        noise = f"; {label} dPPL {record.delta:+.4f} ± {record.delta_se:.4f} (SE)"
    text = (f"ppl_check: PPL {record.measured:.4f} exceeds the threshold {record.threshold:.4f} by "
            f"{record.measured - record.threshold:.4f} (baseline {record.baseline:.4f} + budget {record.budget} = "
            f"{record.threshold:.4f}; {record.delta:+.4f}, {record.delta_pct:+.2f}% vs baseline{noise}) "
            f"[{where(record)}{served}]")
    if record.worst:
        text += f"\nworst windows: {describe(record.worst)}"
    return text
