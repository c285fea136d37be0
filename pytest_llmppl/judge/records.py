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
    from ..measure.call import Call
    from ..measure.divergence import KLDivergence
    from ..measure.lmeval import LMEvalMetrics
    from .stats import PairedDelta, Top1Agreement


class AgainstRecord(str, Enum):
    """How a check compares with its own recorded result in the committed file."""

    UNCHANGED = "unchanged"        # the recorded candidate itself (same weights and settings)
    WITHIN = "within"              # changed, within the regression tolerance
    BETTER = "better"              # better than recorded by more than the tolerance
    WORSE = "worse"                # worse than recorded by more than the tolerance: a regression
    NO_RECORD = "no record"        # the file holds no record for this check
    NOT_COMPARED = "not compared"  # recorded with other settings, device or dtype
    OFF = "off"                    # --ppl-regression-tolerance=off
    RECORDED = "recorded"          # --ppl-update-baselines: recorded by this run
    NONE = ""                      # no committed file


class Verdict(str, Enum):
    PASS = "pass"
    FAIL = "fail"
    NOT_FINITE = "nan"


class Source(str, Enum):
    """Where a number came from."""

    MEASURED = "measured"   # forwards ran in this call
    CACHE = "cache"         # the local store: identical weights and settings, measured earlier
    FILE = "file"           # the committed file (a baseline or a recorded check with this identity)
    MEMORY = "memory"       # already served earlier in this process
    GIVEN = "given"         # a number or result the test passed in


IDENTICAL_NOTE = "the candidate's weights are identical to the baseline's: pruning changed nothing"


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
    unpinned: str = ""  # what kept this model's function from being identified: measured, never served
    params: int | None = None       # the model's parameters (size_facts), all of them
    nonzero: int | None = None      # its non-zero parameters (what unstructured pruning removes)
    linear_macs: int | None = None  # its linear layers' multiply-accumulates per token
    forward_seconds: float | None = None  # what its result's forward took where it was measured (0: unknown)

    @classmethod
    def of(cls, call: Call, result: Any = None) -> Subject:
        """The subject of a fixture call, with what its result (if any) says of the windows and time."""
        s, size = call.spec, call.spec.size
        return cls(test=call.test, model=call.model_name, model_id=s.model_id, corpus=s.corpus_name,
                   seqlen=s.seqlen, protocol=s.protocol, stride=s.stride,
                   n_windows=result.n_windows if result is not None else s.n_windows,
                   n_windows_total=s.n_windows_total, device=s.device_type, dtype=s.dtype, unpinned=s.unpinned,
                   params=size.params if size is not None else None,
                   nonzero=size.nonzero if size is not None else None,
                   linear_macs=size.linear_macs if size is not None else None,
                   forward_seconds=result.seconds if result is not None else None)


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
class ShapeChange:
    """A module whose weight shape differs from the record (None: the module is new or gone)."""

    module: str
    recorded: tuple[int, ...] | None
    now: tuple[int, ...] | None


@dataclass(frozen=True)
class SizeGrowth:
    """A size count that grew beyond the size tolerance: parameters, non-zeros or linear MACs."""

    what: str
    recorded: int
    now: int


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
    notes: tuple[str, ...] = ()
    lm_eval: LMEvalMetrics | None = None  # word/byte perplexity, bits per byte (--ppl-protocol=lm-eval)


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
    # The comparison with this check's recorded result (guarding a refactor).
    recorded: float | None = None                 # the recorded PPL, when compared
    regression_tolerance: str | None = None       # "1%", "0.5" or "off"; None without a committed file
    regression_threshold: float | None = None     # recorded + tolerance
    recorded_paired: PairedDelta | None = None    # paired Δ against the recorded per-window NLLs
    against_record: AgainstRecord = AgainstRecord.NONE
    decided_by: str = ""                          # a failure's comparisons: budget+regression+kl+size+keep_at_most
    worst_recorded: tuple[WindowLoss, ...] = ()   # where it lost most against the recorded candidate
    window_delta_recorded: tuple[float | None, ...] = ()  # ΔNLL per token against the record, when it failed
    identical_to_baseline: bool = False           # candidate weights == baseline weights: pruning did nothing
    # The divergence from the dense model, token by token (llama.cpp's statistics), and its budget.
    kl: KLDivergence | None = None
    kl_budget: float | None = None                # nats per token; None = off
    worst_kl: tuple[WindowLoss, ...] = ()         # where the divergence is highest, when over the KL budget
    lm_eval: LMEvalMetrics | None = None          # word/byte perplexity, bits per byte (--ppl-protocol=lm-eval)
    # The size half of the trade-off: against the dense baseline, the record and keep_at_most.
    baseline_params: int | None = None            # the dense baseline model's parameters
    recorded_params: int | None = None            # what the record kept (None: no record, or recorded before 0.4)
    recorded_nonzero: int | None = None
    recorded_linear_macs: int | None = None
    size_against_record: str = ""                 # same | smaller | grew | reshaped | not recorded | ""
    size_tolerance: str | None = None             # "0", "2%" or "off"; None when not compared
    size_grew: tuple[SizeGrowth, ...] = ()        # the counts that grew beyond the size tolerance
    changed_shapes: tuple[ShapeChange, ...] = ()  # the first modules whose weight shape differs from the record
    n_changed_shapes: int = 0
    keep_at_most: str | None = None               # "80%" or a count; None: off
    keep_limit: float | None = None               # the parameter count keep_at_most allows

    @property
    def kept(self) -> float | None:
        """The share of the dense baseline's parameters the candidate keeps."""
        p = self.subject.params
        return p / self.baseline_params if p is not None and self.baseline_params else None

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
    def delta_recorded(self) -> float | None:
        if self.recorded is None or self.measured is None or not math.isfinite(self.measured):
            return None
        return self.measured - self.recorded

    @property
    def delta_recorded_pct(self) -> float | None:
        d = self.delta_recorded
        return None if d is None or self.recorded is None else 100 * d / self.recorded

    @property
    def delta_recorded_se(self) -> float | None:
        return self.recorded_paired.delta_ppl_se if self.recorded_paired is not None else None

    @property
    def delta_se(self) -> float | None:
        """The Δ's SE from the same estimate as the Δ: the early rule's when it decided, else the
        paired one."""
        if self.early is not None:
            return self.early.estimate_ppl * self.early.ln_ppl_se
        return self.paired.delta_ppl_se if self.paired is not None else None


Record = BaselineRecord | MeasureRecord | CheckRecord


def se_text(x: float | None, digits: int = 4) -> str:
    """A standard error, or ``n/a`` where it cannot be estimated (one window)."""
    return f"{x:.{digits}f}" if x is not None and math.isfinite(x) else "n/a"


def plural(n: int, noun: str) -> str:
    """``1 baseline``, ``2 baselines``, ``0 numbers``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def signed(x: float, digits: int = 4) -> str:
    """``+0.0123``; a value that rounds to zero is ``+0.0000``, never ``-0.0000``."""
    text = f"{x:+.{digits}f}"
    return "+" + text[1:] if text.startswith("-") and float(text) == 0 else text
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
        out["delta_recorded"] = _plain(record.delta_recorded)
        out["delta_recorded_pct"] = _plain(record.delta_recorded_pct)
        out["delta_recorded_se"] = _plain(record.delta_recorded_se)
        out["kept"] = _plain(record.kept)
    return out


def from_json(data: dict[str, Any]) -> Record:
    cls = _KINDS[data["kind"]]
    subject = Subject(**{f.name: data[f.name] for f in fields(Subject) if f.name in data})
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
    if name == "against_record":
        return AgainstRecord(value)
    if name in ("paired", "recorded_paired", "top1"):
        from .stats import PairedDelta, Top1Agreement

        return (Top1Agreement if name == "top1" else PairedDelta).from_json(value)
    if name == "kl":
        from ..measure.divergence import KLDivergence

        return KLDivergence.from_json(value)
    if name == "lm_eval":
        from ..measure.lmeval import LMEvalMetrics

        return LMEvalMetrics.from_json(value)
    if name == "early":
        return EarlyInfo(**value)
    if name in ("worst", "worst_recorded", "worst_kl"):
        return tuple(WindowLoss(**w) for w in value)
    if name == "size_grew":
        return tuple(SizeGrowth(**g) for g in value)
    if name == "changed_shapes":
        return tuple(ShapeChange(c["module"], _shape(c["recorded"]), _shape(c["now"])) for c in value)
    if name in ("notes", "window_index", "window_delta", "window_delta_recorded"):
        return tuple(value)
    return value


def _shape(value: Any) -> tuple[int, ...] | None:
    return tuple(value) if value is not None else None


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
