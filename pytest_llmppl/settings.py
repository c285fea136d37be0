"""One table of settings -> pytest options, ini keys, env vars, the CLI's choices and ``Settings``.

Every setting is declared once, as a field of ``Settings`` carrying its ``Option``
(parser, help, flag or value, per-call, path).  Precedence: command-line option >
``PYTEST_LLMPPL_<NAME>`` env var > ini ``ppl_<name>`` > default; the budget has one
more level on top, the ``@pytest.mark.ppl_budget(x)`` marker.  Values are checked
here, at start-up, so a typo never waits for a model to load.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

from .errors import SettingsError
from .values import (
    DEFAULT_REGRESSION_TOLERANCE,
    Budget,
    KeepAtMost,
    as_text,
    budget_words,
    choice_of,
    parse_batch_size,
    parse_bool,
    parse_budget,
    parse_confidence,
    parse_device,
    parse_keep_at_most,
    parse_kl_budget,
    parse_seqlen,
    parse_size_tolerance,
    parse_tolerance,
    positive_int,
)

DTYPES = ("auto", "float32", "bfloat16", "float16")
PROTOCOLS = ("torch-pruning", "tokens", "sliding", "lm-eval", "llama.cpp")
DEFAULT_PROTOCOL = PROTOCOLS[0]
ENV_PREFIX = "PYTEST_LLMPPL_"


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
    corpus: str = setting("wikitext2", as_text, "wikitext2 | ptb | c4 | FILE | hf:NAME[:CONFIG]:SPLIT[:COLUMN]",
                          per_call=True)
    seqlen: int | None = setting(None, parse_seqlen,
                                 "window length (default: model.seqlen, else min(max_position_embeddings, 4096))",
                                 per_call=True)
    protocol: str = setting(DEFAULT_PROTOCOL, choice_of("protocol", PROTOCOLS), " | ".join(PROTOCOLS),
                            per_call=True, choices=PROTOCOLS)
    stride: int | None = setting(None, lambda v: positive_int(v, "stride"),
                                 "stride of --ppl-protocol=sliding (default: seqlen)", per_call=True)
    batch_size: int | str = setting("auto", parse_batch_size, "windows per forward: N or auto", per_call=True)
    max_windows: int | None = setting(None, lambda v: positive_int(v, "max_windows"),
                                      "evaluate an evenly spread subset of N windows (an estimate)", per_call=True)
    device: str | None = setting(None, parse_device,
                                 "evaluate on this device (cpu, cuda, cuda:1, or auto: one GPU per xdist worker, "
                                 "else cuda:0, else cpu; default: where the model is)", per_call=True)
    dtype: str = setting("auto", choice_of("dtype", DTYPES),
                         "auto | float32 | bfloat16 | float16 (lower than the weights: autocast)",
                         per_call=True, choices=DTYPES)
    cache_dir: str | None = setting(None, as_text,
                                    "where tokens and results are cached (default: .pytest_cache/d/llmppl)",
                                    path=True)
    no_cache: bool = setting(False, parse_bool, "do not read or write the llmppl cache", flag=True)
    remeasure: bool = setting(False, parse_bool, "measure every result afresh (the cache is still written)",
                              flag=True)
    baselines: str | None = setting(None, as_text,
                                    "committed baselines JSON file to read (and write with --ppl-update-baselines)",
                                    path=True)
    update_baselines: bool = setting(False, parse_bool,
                                     "measure baselines afresh and write them to --ppl-baselines", flag=True)
    file_changes: str | None = setting(
        None, as_text, "with --ppl-update-baselines: write this run's changes to the committed file here instead of "
        "rewriting it (one shard of a split suite; combine them with python -m pytest_llmppl merge)", path=True)
    strict: bool = setting(False, parse_bool, "a baseline missing from --ppl-baselines fails instead of being measured",
                           flag=True)
    report: str | None = setting(None, as_text, "write a JSON report to this file", path=True)
    report_md: str | None = setting(None, as_text, "write a markdown report (for $GITHUB_STEP_SUMMARY) to this file",
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
