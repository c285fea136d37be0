"""The pytest front door: options, ini keys, the marker, fixtures and the summary.

Hooks hand off to the one ``PPLSession`` in ``config.stash``; they compute nothing.
Importing this module costs only what option registration needs (settings and
errors): the session, the store and the report load when a run uses them, and
torch and friends only when a ppl fixture is called.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

from .errors import LLMPPLError
from .settings import (
    OPTIONS,
    Budget,
    option_flag,
    origins,
    parse_budget,
    parse_keep_at_most,
    parse_kl_budget,
    parse_size_tolerance,
    parse_tolerance,
    resolve,
)

if TYPE_CHECKING:
    from .session import PPLSession

SESSION = pytest.StashKey["PPLSession"]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llmppl", "perplexity checks (pytest-llmppl)")
    for name, opt in OPTIONS.items():
        if opt.flag:
            group.addoption(option_flag(name), dest=f"ppl_{name}", action="store_true", default=False, help=opt.help)
            parser.addini(f"ppl_{name}", opt.help, type="bool", default=None)
        else:
            group.addoption(option_flag(name), dest=f"ppl_{name}", default=None, help=opt.help)
            parser.addini(f"ppl_{name}", opt.help.replace("%%", "%"), default=None)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ppl_budget(value): the perplexity budget for this test (2.0 or '5%')")
    config.addinivalue_line("markers", "ppl_regression_tolerance(value): how much worse than its recorded result "
                                       "a check of this test may get (0.5, '1%' or 'off')")
    config.addinivalue_line("markers", "ppl_size_tolerance(value): how much a check's model of this test may grow "
                                       "over its recorded size (1000 parameters, '2%' or 'off')")
    config.addinivalue_line("markers", "ppl_keep_at_most(value): the most of the dense baseline's parameters a "
                                       "check's model of this test may keep ('80%' or a count)")
    config.addinivalue_line("markers", "ppl_kl_budget(value): the largest mean KL divergence from the dense model "
                                       "a check of this test may have (nats per token, e.g. 0.05, or 'off')")
    try:
        given = ({name: config.getoption(f"ppl_{name}") for name in OPTIONS},
                 {name: _ini(config, name) for name in OPTIONS})
        settings = resolve(*given)
        from .startup import check_settings

        auto_device = check_settings(settings, _worker_id(config), origins(*given))
        from .session import PPLSession, load_file

        file = load_file(settings)
    except LLMPPLError as exc:
        raise pytest.UsageError(f"pytest-llmppl: {exc}") from None
    if settings.baselines and not settings.update_baselines and file is not None and not file.path.exists():
        _config_warning(config, f"pytest-llmppl: --ppl-baselines file {file.path} does not exist: baselines will be "
                        "measured (or taken from the cache); create it with --ppl-update-baselines, or add "
                        "--ppl-strict to make a missing file an error.")
    cache_root = None
    if getattr(config, "cache", None) is not None and not os.environ.get("PYTEST_LLMPPL_CACHE_DIR"):
        cache_root = config.cache.mkdir("llmppl")
    if str(auto_device or settings.device or "").startswith("cuda"):
        from .identity.device_hash import prewarm

        prewarm(auto_device or settings.device or "cuda")
    session = PPLSession(settings, file=file, auto_device=auto_device, cache_root=cache_root)
    from .report.progress import progress_for

    session.progress = progress_for(config)
    run_id = getattr(config, "workerinput", {}).get("llmppl_run_id")
    if run_id:
        session.run_id = run_id
    config.stash[SESSION] = session
    config.pluginmanager.register(RunHooks(config), "llmppl-run")


def _config_warning(config: pytest.Config, message: str) -> None:
    """A configuration warning located at the user's configuration (the ini file, else the
    command line), not at this plugin's source line."""
    import warnings

    where = str(config.inipath) if config.inipath else "pytest command line"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        warnings.warn_explicit(pytest.PytestConfigWarning(message), pytest.PytestConfigWarning, where, 0)
    config.hook.pytest_warning_recorded.call_historic(
        kwargs={"warning_message": caught[0], "when": "config", "nodeid": "", "location": None})


def _worker_id(config: pytest.Config) -> str | None:
    return getattr(config, "workerinput", {}).get("workerid")


def _ini(config: pytest.Config, name: str) -> Any:
    """An ini value; relative paths in it are relative to the ini file, as pytest's own are."""
    try:
        value = config.getini(f"ppl_{name}")
    except ValueError:
        return None
    if value is None or value == "" or value == []:
        return None
    base = getattr(config, "inipath", None)
    if base is not None and isinstance(value, str) and not os.path.isabs(value):
        candidate = os.path.join(os.path.dirname(str(base)), value)
        if OPTIONS[name].path or (name == "corpus" and os.path.exists(candidate)):
            return os.path.normpath(candidate)
    return value


def pytest_report_header(config: pytest.Config) -> list[str]:
    session = config.stash[SESSION]
    lines = [session.settings.header(session.auto_device)]
    note = session.version_note()
    if note:
        lines.append(note)
    return lines


# The markers and how their one value is checked (at collection, before any model loads).
MARKERS = {"ppl_budget": (parse_budget, "2.0 or '5%'"),
           "ppl_regression_tolerance": (parse_tolerance, "0.5, '1%' or 'off'"),
           "ppl_size_tolerance": (parse_size_tolerance, "1000, '2%' or 'off'"),
           "ppl_keep_at_most": (parse_keep_at_most, "'80%' or 500000"),
           "ppl_kl_budget": (parse_kl_budget, "0.05 or 'off'")}
# a marker ppl_<name> is a per-call default
MARKED_OVERRIDES = ("regression_tolerance", "size_tolerance", "keep_at_most", "kl_budget")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name, (parse, example) in MARKERS.items():
            for mark in item.iter_markers(name):
                if len(mark.args) != 1 or mark.kwargs:
                    raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes one value, e.g. {example}")
                try:
                    parse(mark.args[0])
                except LLMPPLError as exc:
                    raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name}: {exc}") from None


# -- fixtures -------------------------------------------------------------------
def _session(request: pytest.FixtureRequest) -> PPLSession:
    return request.config.stash[SESSION]


def _call(request: pytest.FixtureRequest, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a session method; any of our errors becomes one failure message at the user's line."""
    __tracebackhide__ = True
    from .session import PPLFailure

    try:
        return fn(*args, test=request.node.nodeid, **kwargs)
    except PPLFailure as exc:
        message = str(exc)
    except LLMPPLError as exc:
        message = f"pytest-llmppl: {exc}"
    raise PPLFailure(message) from None


@pytest.fixture
def ppl_budget(request: pytest.FixtureRequest) -> Budget:
    """The budget in effect here: marker > --ppl-budget > env > ini ppl_budget > default (5%)."""
    mark = request.node.get_closest_marker("ppl_budget")
    if mark is not None:
        return parse_budget(mark.args[0])
    return _session(request).settings.budget


def _bound(request: pytest.FixtureRequest, method: str) -> Callable[..., Any]:
    """``fn(model, tokenizer=None, **overrides)`` calling the session's ``method`` for this test."""
    def call(model: Any, tokenizer: Any = None, **overrides: Any) -> Any:
        __tracebackhide__ = True
        return _call(request, getattr(_session(request), method), model, tokenizer,
                     **_marked(request, overrides, ("kl_budget",)))

    return call


@pytest.fixture
def ppl_of(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``ppl_of(model, tokenizer=None, **overrides)`` -> PerplexityResult (served when already measured)."""
    return _bound(request, "measure")


@pytest.fixture
def ppl_baseline(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``ppl_baseline(model, tokenizer=None, **overrides)``: measured once, then served from the cache."""
    return _bound(request, "baseline")


_NO_BASELINE = object()  # ppl_check called without baseline=: one message, not a TypeError


@pytest.fixture
def ppl_check(request: pytest.FixtureRequest, ppl_budget: Budget) -> Callable[..., Any]:
    """``ppl_check(model, tokenizer=None, *, baseline, budget=None, **overrides)``: fails over budget, or
    worse than its recorded result in the committed file by more than the regression tolerance."""
    def check(model: Any, tokenizer: Any = None, *positional: Any, baseline: Any = _NO_BASELINE, budget: Any = None,
              **overrides: Any) -> Any:
        __tracebackhide__ = True
        return _call(request, _checked, model, tokenizer, positional=positional, baseline=baseline, budget=budget,
                     default=ppl_budget, session=_session(request), **_marked(request, overrides, MARKED_OVERRIDES))

    return check


def _marked(request: pytest.FixtureRequest, overrides: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    """A marker ``ppl_<name>(value)`` on the test stands for a per-call ``name=value`` not given."""
    out = dict(overrides)
    for name in names:
        mark = request.node.get_closest_marker(f"ppl_{name}")
        if mark is not None and out.get(name) is None:
            out[name] = mark.args[0]
    return out


def _checked(model: Any, tokenizer: Any, *, positional: tuple[Any, ...], baseline: Any, budget: Any,
             default: Budget, session: PPLSession, test: str, **overrides: Any) -> Any:
    if positional:  # ppl_check(pruned, tok, base): one message at the user's line, not a TypeError
        raise LLMPPLError(f"ppl_check takes the baseline by name: ppl_check(model, tok, baseline=base) (got "
                          f"{len(positional)} more positional argument{'s' if len(positional) > 1 else ''} after "
                          "the tokenizer)")
    if baseline is _NO_BASELINE:
        raise LLMPPLError("ppl_check needs baseline=: what ppl_baseline returned (baseline=ppl_baseline(dense_model, "
                          "tok)), a PerplexityResult or a number")
    chosen = default if budget is None else parse_budget(budget)
    return session.check(model, tokenizer, baseline=baseline, budget=chosen, test=test, **overrides)


@pytest.fixture
def ppl_pruned(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``ppl_pruned(model, ratio, **kw)``: a structurally pruned deep copy (torch-pruning);
    the model passed in is left untouched."""
    def prune(model: Any, ratio: float, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        return _call(request, _pruned_copy, model, ratio, **kwargs)

    return prune


def _pruned_copy(model: Any, ratio: float, *, test: str, **kwargs: Any) -> Any:
    from .pruning import prune_causal_lm

    return prune_causal_lm(model, ratio, copy_model=True, **kwargs)


# -- reporting -------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    report: Any = yield
    session = item.config.stash.get(SESSION, None)
    if session is not None and call.when == "teardown":
        session.end_test(item.nodeid)
    if session is not None and hasattr(item.config, "workerinput"):
        report.llmppl_file = session.take_file_changes()  # with this test's report: a crash loses no other test's
    if session is not None and session.pending:
        records = session.take_pending()
        report.llmppl = records  # JSON: travels from xdist workers to the controller
        for r in records:
            if r["kind"] == "check":
                for key in ("measured", "baseline", "threshold", "verdict", "budget", "measured_source",
                            "baseline_source", "recorded", "delta_recorded", "against_record", "decided_by"):
                    item.user_properties.append((f"ppl_{key}", r.get(key)))
                if r.get("kl"):
                    item.user_properties.append(("ppl_kl_mean", r["kl"]["mean"]))
                    item.user_properties.append(("ppl_kl_se", r["kl"]["se"]))
        report.user_properties = list(item.user_properties)
    return report


class RunHooks:
    """The session's hooks that need its state (registered in ``pytest_configure``): each hands off."""

    def __init__(self, config: pytest.Config):
        self.config = config

    @property
    def session(self) -> PPLSession:
        return self.config.stash[SESSION]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not hasattr(self.config, "workerinput"):
            self.session.merge_file_changes(getattr(report, "llmppl_file", None))
            self.session.collect(report.nodeid, report.when, getattr(report, "llmppl", None), report.passed)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        self.session.run.deselected.update(item.nodeid for item in items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """xdist controller: what a worker deselected (pytest-split deselects in the workers)."""
        self.session.run.deselected.update(getattr(node, "workeroutput", {}).get("llmppl_deselected", ()))

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.session.run.to_run.update(item.nodeid for item in session.items)

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        """xdist controller: what the workers will run (it collects nothing itself)."""
        self.session.run.to_run.update(ids)

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node: Any) -> None:
        """xdist controller: every worker shares this run's id."""
        node.workerinput["llmppl_run_id"] = self.session.run_id

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if hasattr(self.config, "workerinput"):
            self.config.workeroutput["llmppl_deselected"] = sorted(self.session.run.deselected)  # type: ignore[attr-defined]
            return
        self.session.run.stopped = bool(session.shouldstop or session.shouldfail) or exitstatus in (
            pytest.ExitCode.INTERRUPTED, pytest.ExitCode.INTERNAL_ERROR)
        terminal = self.config.pluginmanager.get_plugin("terminalreporter")
        stats = getattr(terminal, "stats", {}) or {}
        outcomes = {k: len(stats.get(k, [])) for k in ("passed", "failed", "error", "skipped", "xfailed", "xpassed")}
        self.end_lines = self.session.finish(outcomes, "\n".join(pytest_report_header(self.config)),
                                             _narrowed(session))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if hasattr(self.config, "workerinput"):
            return
        if self.session.collected:
            from .report.render import terminal_table

            terminalreporter.write_sep("=", "llmppl perplexity summary")
            terminalreporter.write_line(terminal_table(self.session.records()))
        for line in getattr(self, "end_lines", []):
            terminalreporter.write_line(line)


def _narrowed(session: pytest.Session) -> bool:
    """The run chose its tests by name or mark (-k, -m, node ids): what it did not collect is unknown."""
    opt = vars(session.config.option)
    return bool(opt.get("keyword") or opt.get("markexpr") or any("::" in str(a) for a in session.config.args))
