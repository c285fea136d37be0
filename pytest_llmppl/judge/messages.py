"""The message of a failed check: by how much, against what (the budget, the recorded result, the
KL budget, the recorded size, ``keep_at_most``), where in the corpus, and how to accept it."""

from __future__ import annotations

import math

from ..identity.size_facts import SHOWN_CHANGES
from ..settings import budget_words
from .hotspots import describe
from .records import IDENTICAL_NOTE, AgainstRecord, CheckRecord, Source, Verdict, se_text, signed


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
