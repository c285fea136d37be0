"""One table of settings -> pytest options, ini keys, env vars, the CLI's choices and ``Settings``.

Every setting is declared once, as a field of ``Settings`` carrying its ``Option``
(parser, help, flag or value, per-call, path).  Precedence: command-line option >
``PYTEST_LLMPPL_<NAME>`` env var > ini ``ppl_<name>`` > default; the budget has one
more level on top, the ``@pytest.mark.ppl_budget(x)`` marker.  Values are checked
here, at start-up, so a typo never waits for a model to load.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import SettingsError

DTYPES = ("auto", "float32", "bfloat16", "float16")
PROTOCOLS = ("torch-pruning", "tokens", "sliding", "lm-eval", "llama.cpp")
DEFAULT_PROTOCOL = PROTOCOLS[0]
ENV_PREFIX = "PYTEST_LLMPPL_"
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
    return _positive_int(raw, "batch size", "a positive integer or 'auto'")


def _positive_int(raw: Any, name: str, what: str = "a positive integer", minimum: int = 1) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise SettingsError(f"invalid {name} {raw!r}: use {what}") from None
    if isinstance(raw, bool) or value < minimum:
        raise SettingsError(f"invalid {name} {raw!r}: use {what}")
    return value


def parse_seqlen(raw: Any) -> int:
    return _positive_int(raw, "seqlen", "an integer >= 2 (one token predicted from another)", minimum=2)


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


def _choice(name: str, choices: tuple[str, ...]) -> Callable[[Any], str]:
    def parse(raw: Any) -> str:
        value = str(raw).strip().lower()
        if value not in choices:
            raise SettingsError(f"invalid {name} {raw!r}: choose one of {', '.join(choices)}")
        return value

    return parse


def _text(raw: Any) -> str:
    return str(raw)


@dataclass(frozen=True)
class Option:
    """How one setting is given: its parser, help, and where it may appear."""

    parse: Callable[[Any], Any]
    help: str
    flag: bool = False       # a store_true option (and a boolean ini key / env var)
    per_call: bool = False   # may be overridden per fixture call (``ppl_of(m, t, seqlen=128)``)
    path: bool = False       # an ini value relative to the ini file
    choices: tuple[str, ...] | None = None


def setting(default: Any, parse: Callable[[Any], Any], help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"option": Option(parse, help, **kw)})


@dataclass(frozen=True)
class Settings:
    """Everything a ppl fixture needs, resolved once per session: the one table of settings."""

    budget: Budget = setting(Budget(5.0, True), parse_budget,
                             "allowed PPL rise over the baseline: absolute (2.0) or relative (5%%)")
    regression_tolerance: Budget | None = setting(
        parse_tolerance(DEFAULT_REGRESSION_TOLERANCE), parse_tolerance,
        "how much worse than its recorded result in --ppl-baselines a check may get: absolute (0.5), "
        "relative (1%%) or off (default 1%%)", per_call=True)
    size_tolerance: Budget | None = setting(
        Budget(0.0), parse_size_tolerance,
        "how much a check's model may grow over its recorded size (parameters, non-zeros, linear MACs): a count "
        "(1000), a share (2%%) or off (default 0: not at all)", per_call=True)
    keep_at_most: KeepAtMost | None = setting(
        None, parse_keep_at_most,
        "fail a check whose model keeps more than this of the dense baseline's parameters: a share (80%%) or a "
        "count (default: off)", per_call=True)
    kl_budget: float | None = setting(
        None, parse_kl_budget,
        "fail a check whose mean KL divergence from the dense model (nats per token, as llama.cpp reports it) "
        "exceeds this, e.g. 0.05 (default: off)", per_call=True)
    corpus: str = setting("wikitext2", _text, "wikitext2 | ptb | c4 | FILE | hf:NAME[:CONFIG]:SPLIT[:COLUMN]",
                          per_call=True)
    seqlen: int | None = setting(None, parse_seqlen,
                                 "window length (default: model.seqlen, else min(max_position_embeddings, 4096))",
                                 per_call=True)
    protocol: str = setting(DEFAULT_PROTOCOL, _choice("protocol", PROTOCOLS), " | ".join(PROTOCOLS),
                            per_call=True, choices=PROTOCOLS)
    stride: int | None = setting(None, lambda v: _positive_int(v, "stride"),
                                 "stride of --ppl-protocol=sliding (default: seqlen)", per_call=True)
    batch_size: int | str = setting("auto", parse_batch_size, "windows per forward: N or auto", per_call=True)
    max_windows: int | None = setting(None, lambda v: _positive_int(v, "max_windows"),
                                      "evaluate an evenly spread subset of N windows (an estimate)", per_call=True)
    device: str | None = setting(None, parse_device,
                                 "evaluate on this device (cpu, cuda, cuda:1, or auto: one GPU per xdist worker, "
                                 "else cuda:0, else cpu; default: where the model is)", per_call=True)
    dtype: str = setting("auto", _choice("dtype", DTYPES),
                         "auto | float32 | bfloat16 | float16 (lower than the weights: autocast)",
                         per_call=True, choices=DTYPES)
    cache_dir: str | None = setting(None, _text,
                                    "where tokens and results are cached (default: .pytest_cache/d/llmppl)",
                                    path=True)
    no_cache: bool = setting(False, parse_bool, "do not read or write the llmppl cache", flag=True)
    remeasure: bool = setting(False, parse_bool, "measure every result afresh (the cache is still written)",
                              flag=True)
    baselines: str | None = setting(None, _text,
                                    "committed baselines JSON file to read (and write with --ppl-update-baselines)",
                                    path=True)
    update_baselines: bool = setting(False, parse_bool,
                                     "measure baselines afresh and write them to --ppl-baselines", flag=True)
    file_changes: str | None = setting(
        None, _text, "with --ppl-update-baselines: write this run's changes to the committed file here instead of "
        "rewriting it (one shard of a split suite; combine them with python -m pytest_llmppl merge)", path=True)
    strict: bool = setting(False, parse_bool, "a baseline missing from --ppl-baselines fails instead of being measured",
                           flag=True)
    report: str | None = setting(None, _text, "write a JSON report to this file", path=True)
    report_md: str | None = setting(None, _text, "write a markdown report (for $GITHUB_STEP_SUMMARY) to this file",
                                    path=True)
    allow_long_seqlen: bool = setting(False, parse_bool, "allow seqlen beyond the model's max_position_embeddings",
                                      flag=True, per_call=True)
    early_stop: bool = setting(False, parse_bool,
                               "stop a check once its verdict is certain at --ppl-confidence "
                               "(windows in a fixed random order)", flag=True, per_call=True)
    confidence: float = setting(0.99, parse_confidence,
                                "confidence of an early verdict with --ppl-early-stop (default 0.99)", per_call=True)

    def __post_init__(self) -> None:
        if self.stride is not None and self.protocol != "sliding":
            raise SettingsError(
                f"stride {self.stride} applies only to protocol sliding (this is {self.protocol}): "
                "drop the stride or use protocol sliding (--ppl-protocol=sliding)"
            )
        if self.stride is not None and self.seqlen is not None and self.stride > self.seqlen:
            raise SettingsError(
                f"stride {self.stride} is longer than seqlen {self.seqlen}: tokens between windows would never "
                "be scored; use a stride <= seqlen"
            )

    def with_overrides(self, **overrides: Any) -> Settings:
        """Per-call overrides (``ppl_of(model, tok, seqlen=128)``), validated like options."""
        allowed = per_call_names()
        unknown = set(overrides) - set(allowed)
        if unknown:
            raise SettingsError(
                f"unknown override(s) {', '.join(sorted(unknown))}; allowed: {', '.join(sorted(allowed))}"
            )
        parsed = {k: OPTIONS[k].parse(v) for k, v in overrides.items() if v is not None}
        if "protocol" in parsed and parsed["protocol"] != "sliding" and "stride" not in parsed:
            parsed["stride"] = None
        return replace(self, **parsed)

    def engine_kwargs(self) -> dict[str, Any]:
        return {"protocol": self.protocol, "stride": self.stride, "max_windows": self.max_windows,
                    "batch_size": self.batch_size, "device": self.device,
                    "dtype": None if self.dtype == "auto" else self.dtype}

    def header(self, device: str | None = None) -> str:
        """The report header line; ``device`` is what ``auto`` resolved to."""
        parts = [f"budget={budget_words(str(self.budget))}", f"corpus={self.corpus}", f"seqlen={self.seqlen or 'auto'}",
                 f"protocol={self.protocol}"]
        if self.stride is not None:
            parts.append(f"stride={self.stride}")
        parts += [f"batch={self.batch_size}", f"device={device or self.device or 'model'}", f"dtype={self.dtype}"]
        if self.max_windows:
            parts.append(f"max_windows={self.max_windows}")
        if self.baselines:
            parts.append(f"baselines={self.baselines}{' (update)' if self.update_baselines else ''}"
                         f"{' (strict)' if self.strict else ''}")
            parts.append(f"regression_tolerance={self.regression_tolerance or 'off'}")
        if self.kl_budget is not None:
            parts.append(f"kl_budget={self.kl_budget:g}")
        if self.baselines and self.size_tolerance != Budget(0.0):
            parts.append(f"size_tolerance={self.size_tolerance or 'off'}")
        if self.keep_at_most is not None:
            parts.append(f"keep_at_most={self.keep_at_most}")
        flags = {"cache=off": self.no_cache, "remeasure": self.remeasure,
                 f"early_stop@{self.confidence:g}": self.early_stop}
        parts += [text for text, on in flags.items() if on]
        from .identity.spec import software_versions

        versions = software_versions()
        parts.append(f"torch={versions['torch']} transformers={versions['transformers']}")
        return "llmppl: " + " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """JSON with types kept (``"seqlen": 128``, ``"no_cache": false``); the budget as written."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = str(value) if isinstance(value, (Budget, KeepAtMost)) else value
        for name in ("regression_tolerance", "size_tolerance"):
            if getattr(self, name) is None:
                out[name] = "off"
        return out


OPTIONS: dict[str, Option] = {f.name: f.metadata["option"] for f in fields(Settings)}


# A check's settings, not an evaluation's: the command line's eval leaves them out.
CHECK_ONLY = ("early_stop", "confidence", "regression_tolerance", "size_tolerance", "keep_at_most", "kl_budget")


def per_call_names() -> tuple[str, ...]:
    return tuple(name for name, opt in OPTIONS.items() if opt.per_call)


def option_flag(name: str) -> str:
    return f"--ppl-{name.replace('_', '-')}"


def _given(option_values: Mapping[str, Any], ini_values: Mapping[str, Any],
           env: Mapping[str, str]) -> dict[str, tuple[str, Any]]:
    """Each setting given anywhere: name -> (where, raw value), by precedence."""
    given: dict[str, tuple[str, Any]] = {}
    for name in OPTIONS:
        for where, raw in ((option_flag(name), option_values.get(name)),
                           (ENV_PREFIX + name.upper(), env.get(ENV_PREFIX + name.upper())),
                           (f"ini ppl_{name}", ini_values.get(name))):
            if raw is None or raw == "" or raw is False:  # unset (a store_true option not given is False)
                continue
            given[name] = (where, raw)
            break
    return given


def origins(option_values: Mapping[str, Any], ini_values: Mapping[str, Any],
            env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Where each setting came from (``--ppl-corpus``, ``PYTEST_LLMPPL_CORPUS``, ``ini ppl_corpus``),
    so a check after parsing names the place the user has to fix."""
    given = _given(option_values, ini_values, os.environ if env is None else env)
    return {name: given[name][0] if name in given else option_flag(name) for name in OPTIONS}


def resolve(option_values: Mapping[str, Any], ini_values: Mapping[str, Any],
            env: Mapping[str, str] | None = None) -> Settings:
    """Build Settings from option values (None = not given), env and ini (None/'' = unset)."""
    given = _given(option_values, ini_values, os.environ if env is None else env)
    chosen: dict[str, Any] = {}
    for name, (where, raw) in given.items():
        try:
            chosen[name] = OPTIONS[name].parse(raw)
        except SettingsError as exc:
            raise SettingsError(f"{where}: {exc}") from None
    try:
        return Settings(**chosen)
    except SettingsError as exc:  # only the stride is checked against other settings
        raise SettingsError(f"{given.get('stride', ('--ppl-stride',))[0]}: {exc}") from None
