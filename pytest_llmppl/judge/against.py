"""What a check is judged against: the baseline ``ppl_baseline`` returns, the ``baseline=``
argument of ``ppl_check`` unpacked (a baseline, a result or a number), and the refusals that
keep the comparison honest (different windows, a dense model pruned in place)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import LLMPPLError, PPLFailure, PrunedInPlaceWarning, warn_at_user
from .records import Source

if TYPE_CHECKING:
    from ..identity.spec import MeasurementSpec
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult
    from ..settings import Settings


@dataclass(frozen=True)
class Baseline:
    """What ``ppl_baseline`` returns: the result plus where it came from."""

    result: PerplexityResult
    source: Source
    spec: MeasurementSpec
    model: str = ""
    # Reads or measures the dense model's top-k later, if a check needs it (``sources.reference``).
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
class Against:
    """The ``baseline=`` argument of a check: ``result`` is None for a plain number; it gains the
    dense top-k when the reference maker reads or measures it (``with_reference``)."""

    result: PerplexityResult | None
    source: Source
    ppl: float
    maker: Any = None

    @classmethod
    def of(cls, baseline: Any, call: Call | None = None, guard: PrunedInPlaceGuard | None = None) -> Against:
        """Unpacked and checked: finite, and (given the ``call``) measured on the same windows; the
        ``guard`` notes the call's model as a candidate checked against this baseline."""
        from ..measure.perplexity_result import PerplexityResult

        if isinstance(baseline, Baseline):
            found = cls(baseline.result, baseline.source, float(baseline), baseline.reference_maker)
        elif isinstance(baseline, PerplexityResult):
            found = cls(baseline, Source.GIVEN, baseline.ppl)
        else:
            try:
                found = cls(None, Source.GIVEN, float(baseline))
            except (TypeError, ValueError):
                raise LLMPPLError("baseline must be what ppl_baseline returned, a PerplexityResult or a number, "
                                  f"not {type(baseline).__name__}") from None
        if not math.isfinite(found.ppl):
            raise PPLFailure(f"the baseline perplexity is {found.ppl}: a baseline must be finite to compare against.")
        if call is not None:
            found.refuse_mismatch(call)
            if guard is not None:
                guard.checked(call, found)
        return found

    @property
    def spec(self) -> MeasurementSpec | None:
        return getattr(self.result, "identity", None)

    @property
    def has_reference(self) -> bool:
        """It carries the dense top-k over its windows (a KL divergence can be measured against it)."""
        return self.result is not None and self.result.carries_reference

    def with_reference(self, forward_allowed: bool = True) -> bool:
        """Reads (or, ``forward_allowed``, measures) the dense top-k now; whether it has it."""
        if self.maker is not None and not self.has_reference:
            self.result = self.maker(forward_allowed)
        return self.has_reference

    def refuse_mismatch(self, call: Call) -> None:
        """Windows measured differently cannot be compared."""
        base = self.spec
        differ = base.mismatch(call.identity) if base is not None else None
        if base is not None and differ:
            check = call.spec
            verb = "differs" if len(differ) == 1 else "differ"
            contents = "tokenizer" in differ or "corpus" in differ
            raise PPLFailure(
                f"ppl_check: the baseline was measured differently ({', '.join(differ)} {verb}), so their windows "
                f"cannot be compared. baseline: {base.describe(contents)}; this check: {check.describe(contents)}. "
                "Measure the baseline with the same corpus, tokenizer, seqlen, protocol, stride and max_windows.")

    def no_reference_message(self, kl_budget: float) -> str:
        """Why a KL budget cannot be judged: the baseline carries no dense distribution."""
        if self.result is None:
            why = "the baseline was given as a number, which carries no dense distribution"
        elif self.source is Source.GIVEN:
            why = "the baseline is a PerplexityResult measured without keep_topk (ppl_of keeps no dense distribution)"
        else:
            why = ("the baseline was served without the dense model's top-k (the committed file does not keep it) "
                   "and the KL budget was set on ppl_check alone, after the baseline was made")
        return (f"ppl_check: the KL budget {kl_budget:g} cannot be judged: {why}. Pass baseline=ppl_baseline("
                "dense_model, tok) and set the KL budget where ppl_baseline sees it too (--ppl-kl-budget, ini "
                "ppl_kl_budget, @pytest.mark.ppl_kl_budget or ppl_baseline(..., kl_budget=...)), so the dense model's "
                "top-k is kept.")


@dataclass
class PrunedInPlaceGuard:
    """Remembers the weights each check judged as a pruned candidate, so a later baseline of the
    same weights (the shared dense model pruned in place) is caught."""

    settings: Settings
    candidates: dict[str, str] = field(default_factory=dict)  # weights checked as a candidate -> first test

    def checked(self, call: Call, against: Against) -> None:
        """A candidate against a dense baseline (a model checked against a plain number may be dense)."""
        if against.spec is not None and against.spec.model != call.identity.model:
            self.candidates.setdefault(call.identity.model, call.test)

    def refuse(self, call: Call) -> None:
        """A warning; an error where the baseline would be committed or trusted."""
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
