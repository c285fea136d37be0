"""The pytest front door: options, ini keys, the marker, fixtures and the summary.

It resolves settings and hands work to ``session.PPLSession``; it computes nothing
itself, and imports nothing heavy: torch and friends load only when a ppl fixture
is used.
"""

from __future__ import annotations

import dataclasses
import os

import pytest

from .errors import LLMPPLError
from .settings import PARSERS, parse_budget, resolve

_SESSION = pytest.StashKey()
_RECORDS = pytest.StashKey()

OPTIONS = {
    "budget": "allowed PPL rise over the baseline: absolute (2.0) or relative (5%%)",
    "corpus": "wikitext2 | ptb | c4 | FILE | hf:NAME[:CONFIG]:SPLIT[:COLUMN]",
    "seqlen": "window length (default: model.seqlen, else min(max_position_embeddings, 4096))",
    "protocol": "torch-pruning (default) | tokens | sliding",
    "stride": "stride for --ppl-protocol=sliding",
    "batch_size": "windows per forward: N or auto",
    "max_windows": "evaluate an evenly spread subset of N windows (an estimate)",
    "device": "evaluate on this device (cpu, cuda, cuda:1, or auto: one GPU per xdist worker, else cuda:0, else cpu)",
    "dtype": "auto | float32 | bfloat16 | float16 (lower than the weights: autocast)",
    "cache_dir": "where tokens and baselines are cached (default: .pytest_cache/d/llmppl)",
    "baselines": "committed baselines JSON file to read (and write with --ppl-update-baselines)",
    "report": "write a JSON report to this file",
    "report_md": "write a markdown report (for $GITHUB_STEP_SUMMARY) to this file",
    "confidence": "confidence of an early verdict with --ppl-early-stop (default 0.99)",
}
FLAGS = {
    "no_cache": "do not read or write the llmppl cache",
    "update_baselines": "measure baselines afresh and write them to --ppl-baselines",
    "strict": "a baseline missing from --ppl-baselines fails instead of being measured",
    "allow_long_seqlen": "allow seqlen beyond the model's max_position_embeddings",
    "early_stop": "stop a check once its verdict is certain at --ppl-confidence (windows in a fixed random order)",
}


def pytest_addoption(parser):
    group = parser.getgroup("llmppl", "perplexity checks (pytest-llmppl)")
    for name, help_text in OPTIONS.items():
        group.addoption(f"--ppl-{name.replace('_', '-')}", dest=f"ppl_{name}", default=None, help=help_text)
        parser.addini(f"ppl_{name}", help_text.replace("%%", "%"), default=None)
    for name, help_text in FLAGS.items():
        group.addoption(f"--ppl-{name.replace('_', '-')}", dest=f"ppl_{name}", action="store_true", default=False,
                        help=help_text)
        parser.addini(f"ppl_{name}", help_text, default=None)


def pytest_configure(config):
    config.addinivalue_line("markers", "ppl_budget(value): the perplexity budget for this test (2.0 or '5%')")
    options = {name: config.getoption(f"ppl_{name}") for name in PARSERS}
    ini = {name: _ini(config, f"ppl_{name}") for name in PARSERS}
    try:
        settings = resolve(options, ini)
        from .session import PPLSession, load_file

        file = load_file(settings)
    except LLMPPLError as exc:
        raise pytest.UsageError(f"pytest-llmppl: {exc}") from None
    if settings.device == "auto":
        settings = dataclasses.replace(settings, device=_auto_device(config))
    if settings.update_baselines and not settings.baselines:
        raise pytest.UsageError("pytest-llmppl: --ppl-update-baselines needs --ppl-baselines=FILE to write to")
    config.stash[_SESSION] = PPLSession(settings, store=None, file=file)
    config.stash[_RECORDS] = []


_INI_PATHS = ("baselines", "cache_dir", "report", "report_md")


def _auto_device(config) -> str:
    """Pin this process to its GPU (one per xdist worker) before CUDA is initialised."""
    from .devices import pick_device, visible_gpus

    worker = getattr(config, "workerinput", {}).get("workerid")
    device, pin = pick_device(worker, visible_gpus())
    if pin is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = pin
    return device


def _ini(config, name):
    """An ini value; relative paths in it are relative to the ini file, as pytest's own are."""
    try:
        value = config.getini(name)
    except ValueError:
        return None
    if not value:
        return None
    key = name[len("ppl_"):]
    base = getattr(config, "inipath", None)
    if base is not None and isinstance(value, str) and not os.path.isabs(value):
        candidate = os.path.join(os.path.dirname(str(base)), value)
        if key in _INI_PATHS or (key == "corpus" and os.path.exists(candidate)):
            return os.path.normpath(candidate)
    return value


def _session(config):
    """The session, with its cache store opened on first use (no disk access otherwise)."""
    session = config.stash[_SESSION]
    if session.store is None and not session.settings.no_cache:
        from .cache import Store

        root = session.settings.cache_dir
        if root is None and getattr(config, "cache", None) is not None and not _env_cache_dir():
            root = config.cache.mkdir("llmppl")
        session.store = Store(root)
    return session


def _env_cache_dir():
    import os

    from .cache import ENV_CACHE_DIR

    return os.environ.get(ENV_CACHE_DIR)


def pytest_report_header(config):
    s = config.stash[_SESSION].settings
    parts = [f"budget={s.budget}", f"corpus={s.corpus}", f"seqlen={s.seqlen or 'auto'}", f"protocol={s.protocol}",
             f"batch={s.batch_size}", f"device={s.device or 'model'}", f"dtype={s.dtype}"]
    if s.max_windows:
        parts.append(f"max_windows={s.max_windows}")
    if s.baselines:
        parts.append(f"baselines={s.baselines}{' (update)' if s.update_baselines else ''}{' (strict)' if s.strict else ''}")
    if s.no_cache:
        parts.append("cache=off")
    if s.early_stop:
        parts.append(f"early_stop@{s.confidence:g}")
    return "llmppl: " + " ".join(parts)


def pytest_collection_modifyitems(config, items):
    for item in items:
        for mark in item.iter_markers("ppl_budget"):
            if len(mark.args) != 1 or mark.kwargs:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.ppl_budget takes one value, e.g. 2.0 or '5%'")
            try:
                parse_budget(mark.args[0])
            except LLMPPLError as exc:
                raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.ppl_budget: {exc}") from None


# -- fixtures -------------------------------------------------------------------
@pytest.fixture
def ppl_budget(request):
    """The budget in effect here: marker > --ppl-budget > ini ppl_budget > default (5%)."""
    mark = request.node.get_closest_marker("ppl_budget")
    if mark is not None:
        return parse_budget(mark.args[0])
    return request.config.stash[_SESSION].settings.budget


def _records(request) -> list:
    return request.node.stash.setdefault(_RECORDS, [])


def _run(request, fn, *args, **kwargs):
    session = _session(request.config)
    before = len(session.records)
    from .session import PPLCheckFailure

    try:
        return fn(*args, test=request.node.nodeid, **kwargs)
    except PPLCheckFailure as exc:
        pytest.fail(str(exc), pytrace=False)
    except LLMPPLError as exc:
        pytest.fail(f"pytest-llmppl: {exc}", pytrace=False)
    finally:
        _records(request).extend(session.records[before:])


@pytest.fixture
def ppl_of(request):
    """``ppl_of(model, tokenizer=None, **overrides)`` -> PerplexityResult (tokens cached)."""
    def measure(model, tokenizer=None, **overrides):
        return _run(request, _session(request.config).plain, model, tokenizer, **overrides)

    return measure


@pytest.fixture
def ppl_baseline(request):
    """``ppl_baseline(model, tokenizer=None, **overrides)``: measured once, then served from the cache."""
    def baseline(model, tokenizer=None, **overrides):
        return _run(request, _session(request.config).baseline, model, tokenizer, **overrides)

    return baseline


@pytest.fixture
def ppl_check(request, ppl_budget):
    """``ppl_check(model, tokenizer=None, *, baseline, budget=None, **overrides)``: fails over budget."""
    def check(model, tokenizer=None, *, baseline, budget=None, **overrides):
        chosen = ppl_budget if budget is None else parse_budget(budget)
        return _run(request, _session(request.config).check, model, tokenizer, baseline=baseline,
                    budget=chosen, **overrides)

    return check


@pytest.fixture
def ppl_pruned():
    """``ppl_pruned(model, ratio, **kw)``: a structurally pruned deep copy (torch-pruning);
    the model passed in is left untouched."""
    def prune(model, ratio, **kwargs):
        from .pruning import prune_causal_lm

        try:
            return prune_causal_lm(model, ratio, copy_model=True, **kwargs)
        except LLMPPLError as exc:
            pytest.fail(f"pytest-llmppl: {exc}", pytrace=False)

    return prune


# -- reporting -------------------------------------------------------------------
@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    records = item.stash.get(_RECORDS, None)
    if records and report.when == "call":
        report.llmppl = list(records)  # JSON-safe: travels from xdist workers to the controller
        for r in records:
            if r.get("kind") == "check":
                for key in ("measured", "baseline", "threshold", "verdict", "budget"):
                    item.user_properties.append((f"ppl_{key}", r.get(key)))
                report.user_properties = list(item.user_properties)
    return report


def pytest_runtest_logreport(report):
    records = getattr(report, "llmppl", None)
    if records and report.when == "call":
        _CONTROLLER_RECORDS.extend(records)


_CONTROLLER_RECORDS: list = []


def _is_worker(config) -> bool:
    return hasattr(config, "workerinput")


def pytest_sessionstart(session):
    _CONTROLLER_RECORDS.clear()


def pytest_sessionfinish(session):
    config = session.config
    ppl = config.stash.get(_SESSION, None)
    if ppl is None:
        return
    if _is_worker(config):
        _send_updates_to_controller(config, ppl)
        return
    from .cache import write_text_file

    if ppl.file is not None and ppl.settings.update_baselines:
        for key, entry in getattr(config, "_llmppl_worker_updates", {}).items():
            ppl.file.record(key, entry)
        if ppl.file.updated:
            write_text_file(ppl.file.path, ppl.file.render())
    records = sorted(_CONTROLLER_RECORDS, key=lambda r: (r.get("test", ""), r.get("kind") != "baseline"))
    settings = {k: str(v) if v is not None else None for k, v in dataclasses.asdict(ppl.settings).items()}
    settings["budget"] = str(ppl.settings.budget)
    from . import report

    if ppl.settings.report:
        write_text_file(ppl.settings.report, report.json_report(records, settings))
    if ppl.settings.report_md:
        write_text_file(ppl.settings.report_md, report.markdown(records, pytest_report_header(config)))


def _send_updates_to_controller(config, ppl) -> None:
    if ppl.file is not None and ppl.file.updated:
        config.workeroutput["llmppl_updates"] = dict(ppl.file.updated)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    updates = getattr(node, "workeroutput", {}).get("llmppl_updates")
    if updates:
        store = node.config.__dict__.setdefault("_llmppl_worker_updates", {})
        store.update(updates)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _is_worker(config) or not _CONTROLLER_RECORDS:
        return
    from . import report

    records = sorted(_CONTROLLER_RECORDS, key=lambda r: (r.get("test", ""), r.get("kind") != "baseline"))
    terminalreporter.write_sep("=", "llmppl perplexity summary")
    terminalreporter.write_line(report.terminal_table(records))
    ppl = config.stash[_SESSION]
    for where in (ppl.settings.report, ppl.settings.report_md):
        if where:
            terminalreporter.write_line(f"llmppl report written to {where}")
