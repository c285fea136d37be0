"""What the summary, the JSON report and junit are built from: one typed record per fixture call.

Records are frozen and JSON round-trip (``to_json``/``from_json``), because under
pytest-xdist they travel from the workers to the controller inside test reports.
The JSON form is flat (the subject's fields beside the record's own) and is the JSON
report's public schema (see the README).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .stats import PairedDelta, Top1Agreement


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_FINITE = "nan"


class Source(str, Enum):
    """Where a number came from."""

    MEASURED = "measured"   # forwards ran in this call
    CACHE = "cache"         # the local store: identical weights and settings, measured earlier
    FILE = "file"           # the committed baselines file
    MEMORY = "memory"       # already served earlier in this process
    GIVEN = "given"         # a number or result the test passed in


@dataclass(frozen=True)
class Subject:
    """What was measured, in words: the same on every kind of record."""

    test: str
    model: str      # name (path or hub id as loaded)
    model_id: str   # short hash of the weights: tells apart models that share a name
    corpus: str
    seqlen: int
    protocol: str
    stride: int | None
    n_windows: int
    n_windows_total: int
    device: str
    dtype: str


@dataclass(frozen=True)
class EarlyInfo:
    """An early verdict: after how many windows, and the estimate it rests on."""

    decided_after: int
    of: int
    confidence: float
    estimate_ppl: float
    ln_ppl_se: float
    z: float


@dataclass(frozen=True)
class WindowLoss:
    """One window where the candidate lost most: its rise in nats per token and its text."""

    window: int
    start: int
    end: int
    delta_nll: float
    heading: str
    snippet: str


@dataclass(frozen=True)
class BaselineRecord:
    kind: ClassVar[str] = "baseline"
    subject: Subject
    baseline: float | None
    baseline_source: Source
    seconds: float
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MeasureRecord:
    kind: ClassVar[str] = "measure"
    subject: Subject
    measured: float | None
    measured_source: Source
    seconds: float


@dataclass(frozen=True)
class CheckRecord:
    kind: ClassVar[str] = "check"
    subject: Subject
    baseline: float
    baseline_source: Source
    baseline_model_id: str
    measured: float | None
    measured_source: Source
    budget: str
    threshold: float
    verdict: Verdict
    seconds: float
    paired: PairedDelta | None = None
    top1: Top1Agreement | None = None
    early: EarlyInfo | None = None
    worst: tuple[WindowLoss, ...] = ()
    window_index: tuple[int, ...] = ()
    window_delta: tuple[float | None, ...] = ()  # ΔNLL per token, per evaluated window
    notes: tuple[str, ...] = ()

    @property
    def relative_budget(self) -> bool:
        return self.budget.endswith("%")

    @property
    def delta(self) -> float | None:
        return None if self.measured is None or not math.isfinite(self.measured) else self.measured - self.baseline

    @property
    def delta_pct(self) -> float | None:
        return None if self.delta is None else 100 * (self.delta / self.baseline)

    @property
    def delta_se(self) -> float | None:
        """The Δ's SE from the same estimate as the Δ: the early rule's when it decided, else the
        paired one."""
        if self.early is not None:
            return self.early.estimate_ppl * self.early.ln_ppl_se
        return self.paired.delta_ppl_se if self.paired is not None else None


Record = BaselineRecord | MeasureRecord | CheckRecord
_KINDS: dict[str, type] = {cls.kind: cls for cls in (BaselineRecord, MeasureRecord, CheckRecord)}


def to_json(record: Record) -> dict[str, Any]:
    """Flat JSON: ``kind``, the subject's fields, then the record's own (non-finite floats -> null)."""
    out: dict[str, Any] = {"kind": record.kind}
    for f in fields(record.subject):
        out[f.name] = getattr(record.subject, f.name)
    for f in fields(record):
        if f.name != "subject":
            out[f.name] = _plain(getattr(record, f.name))
    if isinstance(record, CheckRecord):
        out["delta"] = _plain(record.delta)
        out["delta_pct"] = _plain(record.delta_pct)
        out["delta_se"] = _plain(record.delta_se)
    return out


def from_json(data: dict[str, Any]) -> Record:
    cls = _KINDS[data["kind"]]
    subject = Subject(**{f.name: data[f.name] for f in fields(Subject)})
    values: dict[str, Any] = {"subject": subject}
    for f in fields(cls):
        if f.name == "subject" or f.name not in data:
            continue
        values[f.name] = _typed(f.name, data[f.name])
    return cls(**values)


def _typed(name: str, value: Any) -> Any:
    if value is None:
        return None
    if name in ("baseline_source", "measured_source"):
        return Source(value)
    if name == "verdict":
        return Verdict(value)
    if name in ("paired", "top1"):
        from .stats import PairedDelta, Top1Agreement

        return (PairedDelta if name == "paired" else Top1Agreement).from_json(value)
    if name == "early":
        return EarlyInfo(**value)
    if name == "worst":
        return tuple(WindowLoss(**w) for w in value)
    if name in ("notes", "window_index", "window_delta"):
        return tuple(value)
    return value


def _plain(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if hasattr(value, "to_json"):
        return value.to_json()
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
