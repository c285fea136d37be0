"""The values of settings, parsed: budgets, tolerances, ``keep_at_most``, numbers, devices, flags.

Each parser takes what a user wrote (an option, an ini key, an env var, a marker or a keyword)
and returns the typed value, or raises one ``SettingsError`` that says what is accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import SettingsError

_DEVICE = re.compile(r"^(auto|cpu|mps|(cuda|xpu|npu|hpu)(:\d+)?)$")


@dataclass(frozen=True)
class Budget:
    """How much PPL may rise: ``value`` in PPL units, or percent of the baseline when relative."""

    value: float
    relative: bool = False

    def threshold(self, baseline: float) -> float:
        return baseline * (1 + self.value / 100) if self.relative else baseline + self.value

    def lower(self, baseline: float) -> float:
        """The same distance below: what counts as better than ``baseline``."""
        return baseline * (1 - self.value / 100) if self.relative else baseline - self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


def budget_words(budget: str) -> str:
    """A budget as printed: an absolute one below 1 PPL says its unit, so ``0.3`` meant as 30% is
    never read silently (``0.3 PPL (absolute; 30% would be relative)``)."""
    try:
        value = float(budget)
    except ValueError:
        return budget
    return f"{budget} PPL (absolute; {100 * value:g}% would be relative)" if 0 < value < 1 else budget


OFF = ("off", "none")
DEFAULT_REGRESSION_TOLERANCE = "1%"


def parse_budget(raw: Any) -> Budget:
    """``2.0`` (absolute PPL) or ``5%`` (relative); negative, NaN, inf or text are refused."""
    if isinstance(raw, Budget):
        return raw
    text = str(raw).strip()
    relative = text.endswith("%")
    number = text[:-1].strip() if relative else text
    try:
        value = float(number)
    except ValueError:
        raise SettingsError(
            f"invalid ppl budget {raw!r}: use an absolute PPL rise like 2.0 or a relative one like 5%"
        ) from None
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0:
        raise SettingsError(f"invalid ppl budget {raw!r}: it must be a finite number >= 0 (e.g. 2.0 or 5%)")
    return Budget(value, relative)


def _budget_or_off(raw: Any, usage: str) -> Budget | None:
    """The budget's grammar (``0.5``, ``1%``) or ``off`` (None); ``usage`` says what else to write."""
    if raw is None or isinstance(raw, Budget):
        return raw
    if str(raw).strip().lower() in OFF:
        return None
    try:
        return parse_budget(raw)
    except SettingsError:
        raise SettingsError(usage.format(raw=raw)) from None


def parse_tolerance(raw: Any) -> Budget | None:
    """The regression tolerance: the budget's grammar (``0.5``, ``1%``) or ``off`` (None)."""
    return _budget_or_off(raw, "invalid regression tolerance {raw!r}: use an absolute PPL rise like 0.5, a relative "
                               "one like 1%, or off")


def parse_size_tolerance(raw: Any) -> Budget | None:
    """How much a check's model may grow over its recorded size: a parameter count (``0``, the
    default: not at all), a share (``2%``), or ``off``."""
    return _budget_or_off(raw, "invalid size tolerance {raw!r}: use a number of parameters like 1000, a share like "
                               "2%, or off")


@dataclass(frozen=True)
class KeepAtMost:
    """The most a pruned model may keep: a share of the dense baseline's parameters or a count."""

    value: float
    relative: bool = True

    def limit(self, dense_params: int | None) -> float | None:
        """The largest parameter count allowed (None: a share with no dense count to take it of)."""
        if not self.relative:
            return self.value
        return dense_params * self.value / 100 if dense_params else None

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:,.0f}"


def parse_keep_at_most(raw: Any) -> KeepAtMost | None:
    """``80%`` (a share of the dense baseline's parameters), ``500000`` or ``6.5e9`` (a count), or
    ``off``; a bare number below 1 is refused (``0.8``: write ``80%``)."""
    if raw is None or isinstance(raw, KeepAtMost):
        return raw
    text = str(raw).strip().replace(",", "").replace("_", "")
    if text.lower() in OFF:
        return None
    relative = text.endswith("%")
    try:
        value = float(text[:-1] if relative else text)
    except ValueError:
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value <= 0 or (relative and value > 100):
        raise SettingsError(f"invalid keep_at_most {raw!r}: use a share of the dense model's parameters like 80%, "
                            "a parameter count like 500000, or off")
    if not relative and value < 1:
        raise SettingsError(f"invalid keep_at_most {raw!r}: a bare number is a parameter count; for a share of "
                            f"the dense model's parameters write {100 * value:g}%")
    return KeepAtMost(value, relative)


def parse_kl_budget(raw: Any) -> float | None:
    """The KL budget: a mean KL divergence in nats per token (``0.05``), or ``off`` (None)."""
    if raw is None or str(raw).strip().lower() in OFF:
        return None
    try:
        value = float(str(raw).strip())
    except ValueError:
        value = math.nan
    if isinstance(raw, bool) or not math.isfinite(value) or value < 0:
        raise SettingsError(f"invalid KL budget {raw!r}: use a mean KL divergence in nats per token >= 0, like "
                            "0.05, or off")
    return value


def parse_batch_size(raw: Any) -> int | str:
    if raw is None or str(raw).strip().lower() == "auto":
        return "auto"
    return positive_int(raw, "batch size", "a positive integer or 'auto'")


def positive_int(raw: Any, name: str, what: str = "a positive integer", minimum: int = 1) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise SettingsError(f"invalid {name} {raw!r}: use {what}") from None
    if isinstance(raw, bool) or value < minimum:
        raise SettingsError(f"invalid {name} {raw!r}: use {what}")
    return value


def parse_seqlen(raw: Any) -> int:
    return positive_int(raw, "seqlen", "an integer >= 2 (one token predicted from another)", minimum=2)


def parse_confidence(raw: Any) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        raise SettingsError(f"invalid confidence {raw!r}: use a number in (0.5, 1), e.g. 0.99") from None
    if not 0.5 < value < 1.0:
        raise SettingsError(f"invalid confidence {raw!r}: use a number in (0.5, 1), e.g. 0.99")
    return value


def parse_device(raw: Any) -> str:
    """``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``, ... (checked for form here, for presence at start-up)."""
    value = str(raw).strip().lower()
    if not _DEVICE.match(value):
        raise SettingsError(f"invalid device {raw!r}: use auto, cpu, cuda, cuda:N or mps")
    return value


def parse_bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"invalid boolean {raw!r}: use true or false")


def choice_of(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise SettingsError(f"invalid {name} {raw!r}: choose one of {', '.join(choices)}")
        return value

    return parse


def as_text(raw: Any) -> str:
    return str(raw)
