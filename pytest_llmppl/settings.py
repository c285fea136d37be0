"""Option / env / ini / marker precedence -> one frozen Settings object, and value parsing.

Precedence for every setting: command-line option > ``PYTEST_LLMPPL_<NAME>`` env var >
ini ``ppl_<name>`` > default.  The budget has one more level on top: the
``@pytest.mark.ppl_budget(x)`` marker of the test.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace

from .errors import SettingsError

DEFAULT_BUDGET = "5%"
DTYPES = ("auto", "float32", "bfloat16", "float16")
PROTOCOLS = ("torch-pruning", "tokens", "sliding")


@dataclass(frozen=True)
class Budget:
    """How much PPL may rise: ``value`` in PPL units, or percent of the baseline when relative."""

    value: float
    relative: bool = False

    def threshold(self, baseline: float) -> float:
        return baseline * (1 + self.value / 100) if self.relative else baseline + self.value

    def __str__(self) -> str:
        return f"{self.value:g}%" if self.relative else f"{self.value:g}"


def parse_budget(raw) -> Budget:
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


def parse_batch_size(raw):
    if raw is None or str(raw).strip().lower() == "auto":
        return "auto"
    try:
        value = int(str(raw))
    except ValueError:
        raise SettingsError(f"invalid batch size {raw!r}: use a positive integer or 'auto'") from None
    if value < 1:
        raise SettingsError(f"invalid batch size {raw!r}: use a positive integer or 'auto'")
    return value


def parse_positive_int(raw, name: str, allow_none: bool = True):
    if raw is None or raw == "":
        if allow_none:
            return None
        raise SettingsError(f"{name} needs a value")
    try:
        value = int(str(raw))
    except ValueError:
        raise SettingsError(f"invalid {name} {raw!r}: use a positive integer") from None
    if value < 1:
        raise SettingsError(f"invalid {name} {raw!r}: use a positive integer")
    return value


def parse_confidence(raw) -> float:
    try:
        value = float(str(raw))
    except ValueError:
        raise SettingsError(f"invalid confidence {raw!r}: use a number in (0.5, 1), e.g. 0.99") from None
    if not 0.5 < value < 1.0:
        raise SettingsError(f"invalid confidence {raw!r}: use a number in (0.5, 1), e.g. 0.99")
    return value


def parse_choice(raw, name: str, choices) -> str:
    value = str(raw).strip().lower()
    if value not in choices:
        raise SettingsError(f"invalid {name} {raw!r}: choose one of {', '.join(choices)}")
    return value


def parse_bool(raw) -> bool:
    if isinstance(raw, bool):
        return raw
    value = str(raw).strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"invalid boolean {raw!r}: use true or false")


@dataclass(frozen=True)
class Settings:
    """Everything a ppl fixture needs, resolved once per session."""

    budget: Budget = field(default_factory=lambda: parse_budget(DEFAULT_BUDGET))
    corpus: str = "wikitext2"
    seqlen: int | None = None
    protocol: str = "torch-pruning"
    stride: int | None = None
    batch_size: object = "auto"
    max_windows: int | None = None
    device: str | None = None
    dtype: str = "auto"
    cache_dir: str | None = None
    no_cache: bool = False
    baselines: str | None = None
    update_baselines: bool = False
    strict: bool = False
    report: str | None = None
    report_md: str | None = None
    allow_long_seqlen: bool = False
    early_stop: bool = False
    confidence: float = 0.99

    def with_overrides(self, **overrides) -> "Settings":
        """Per-call overrides (``ppl_of(model, tok, seqlen=128)``), validated like options."""
        unknown = set(overrides) - set(PER_CALL)
        if unknown:
            raise SettingsError(
                f"unknown override(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(PER_CALL))}"
            )
        parsed = {k: PARSERS[k](v) for k, v in overrides.items()}
        return replace(self, **parsed)

    def engine_kwargs(self) -> dict:
        return dict(corpus=self.corpus, seqlen=self.seqlen, protocol=self.protocol, stride=self.stride,
                    max_windows=self.max_windows, batch_size=self.batch_size, device=self.device,
                    dtype=None if self.dtype == "auto" else self.dtype,
                    allow_long_seqlen=self.allow_long_seqlen)


PARSERS = {
    "budget": parse_budget,
    "corpus": lambda v: str(v),
    "seqlen": lambda v: parse_positive_int(v, "seqlen"),
    "protocol": lambda v: parse_choice(v, "protocol", PROTOCOLS),
    "stride": lambda v: parse_positive_int(v, "stride"),
    "batch_size": parse_batch_size,
    "max_windows": lambda v: parse_positive_int(v, "max_windows"),
    "device": lambda v: None if v in (None, "") else str(v),
    "dtype": lambda v: parse_choice(v, "dtype", DTYPES),
    "cache_dir": lambda v: None if v in (None, "") else str(v),
    "no_cache": parse_bool,
    "baselines": lambda v: None if v in (None, "") else str(v),
    "update_baselines": parse_bool,
    "strict": parse_bool,
    "report": lambda v: None if v in (None, "") else str(v),
    "report_md": lambda v: None if v in (None, "") else str(v),
    "allow_long_seqlen": parse_bool,
    "early_stop": parse_bool,
    "confidence": lambda v: parse_confidence(v),
}
PER_CALL = ("corpus", "seqlen", "protocol", "stride", "batch_size", "max_windows", "device", "dtype",
            "allow_long_seqlen", "early_stop", "confidence")
ENV_PREFIX = "PYTEST_LLMPPL_"


def resolve(option_values: dict, ini_values: dict, env: dict | None = None) -> Settings:
    """Build Settings from option values (None = not given), env and ini (None/'' = unset)."""
    env = os.environ if env is None else env
    chosen = {}
    for name, parse in PARSERS.items():
        for source, raw in (("option", option_values.get(name)),
                            ("env", env.get(ENV_PREFIX + name.upper())),
                            ("ini", ini_values.get(name))):
            if raw is None or raw == "" or raw is False:  # unset (a store_true option not given is False)
                continue
            try:
                chosen[name] = parse(raw)
            except SettingsError as exc:
                where = {"option": f"--ppl-{name.replace('_', '-')}", "env": ENV_PREFIX + name.upper(),
                         "ini": f"ini ppl_{name}"}[source]
                raise SettingsError(f"{where}: {exc}") from None
            break
    return Settings(**chosen)
