"""The size half of a check: the candidate's size against its record (grown beyond the size
tolerance fails: a refactor that prunes less) and against ``keep_at_most``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..identity.size_facts import SizeFacts, grew
from .records import AgainstRecord, ShapeChange, SizeGrowth, signed

if TYPE_CHECKING:
    from ..measure.perplexity_result import PerplexityResult
    from .decision import Recorded

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
    notes: tuple[str, ...] = ()  # what a reviewer should know of the size when the verdict does not say it

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
            return cls("not recorded", None, baseline_params=baseline_params, keep_limit=limit, over_keep=over_keep,
                       notes=("size not recorded: the record predates size facts; refresh it with "
                              "--ppl-update-baselines",))
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
        notes: tuple[str, ...] = ()
        if status == "smaller":
            change = signed(100 * (now.params - old.params) / old.params, 1)
            notes = (f"smaller than recorded: {now.params:,} parameters ({change}%), {now.nonzero:,} non-zero, "
                     f"{now.linear_macs:,} linear MACs per token",)
        return cls(status, str(tolerance) if tolerance is not None else "off", growth, changes, baseline_params,
                   limit, over_keep, notes)
