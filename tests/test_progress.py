"""Progress inside pytest: a live line on a terminal, plain lines in a CI log, nothing elsewhere."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys

import pytest

from plugin_support import project

SUITE = """
def test_measure(model, tok, ppl_baseline):
    ppl_baseline(model, tok)

def test_fails_after(model, tok, ppl_of):
    ppl_of(model, tok, seqlen=64)
    print("the test's own output")
    assert False
"""

EVERY_BATCH = """
import pytest_llmppl.report.progress as progress
progress.FIRST_AFTER = progress.LOG_EVERY = progress.TTY_EVERY = 0.0  # a line per batch, for the test
"""


@pytest.fixture
def shown_every_batch(monkeypatch):
    from pytest_llmppl.report import progress

    for name in ("FIRST_AFTER", "LOG_EVERY", "TTY_EVERY"):
        monkeypatch.setattr(progress, name, 0.0)


def test_a_ci_log_gets_plain_lines_and_nothing_is_captured(pytester, shown_every_batch):
    project(pytester, SUITE)
    result = pytester.runpytest("--ppl-batch-size=35", "--ppl-no-cache", "--junitxml=junit.xml", "-p", "no:randomly")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    result.stdout.fnmatch_lines(["llmppl ppl_baseline test_suite.py::test_measure: 35/140 windows, * s elapsed, "
                                 "~* s left"])
    assert "llmppl ppl_of test_suite.py::test_fails_after: " in out
    captured = out.split("Captured stdout call")[1].split("short test summary")[0]
    assert "the test's own output" in captured and "windows, " not in captured  # not in captured output
    assert "windows, " not in (pytester.path / "junit.xml").read_text()
    assert "\r" not in out  # a log gets whole lines


def test_nothing_under_qq_or_from_xdist_workers(pytester, shown_every_batch):
    project(pytester, SUITE)
    quiet = pytester.runpytest("-qq", "--ppl-batch-size=35", "--ppl-no-cache")
    assert "windows, " not in quiet.stdout.str()

    import types

    from pytest_llmppl.report.progress import progress_for

    worker = types.SimpleNamespace(workerinput={"workerid": "gw0"})  # an xdist worker: its terminal is not the user's
    assert progress_for(worker) is None


class Clock:
    """Time that passes only when the test says so: no test depends on the machine's speed."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Log:
    """A CI log's terminal writer and a capture manager that lets everything through."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def write_line(self, text: str) -> None:
        self.lines.append(text)

    def global_and_fixture_disabled(self):
        import contextlib

        return contextlib.nullcontext()


@pytest.mark.parametrize("tty", [False, True])
def test_a_short_measurement_shows_nothing_and_a_long_one_a_line_per_interval(tty):
    import types

    from pytest_llmppl.report.progress import FIRST_AFTER, LOG_EVERY, TTY_EVERY, Progress

    clock, log = Clock(), Log()
    written: list[str] = []
    terminal = types.SimpleNamespace(write_line=log.write_line, _tw=types.SimpleNamespace(
        fullwidth=120, _file=types.SimpleNamespace(write=written.append, flush=lambda: None)))
    progress = Progress(terminal, log, "ppl_check t", tty, clock=clock)
    for done in range(1, 140):  # a measurement that ends before FIRST_AFTER: nothing
        clock.now += 0.9 * FIRST_AFTER / 140
        progress(done, 140)
    assert log.lines == written == []
    every = TTY_EVERY if tty else LOG_EVERY
    clock.now += FIRST_AFTER
    progress(70, 140)  # past FIRST_AFTER: the first line
    clock.now += every / 2
    progress(80, 140)  # too soon for the next
    clock.now += every
    progress(90, 140)
    shown = [w for w in written if w.strip()] if tty else log.lines
    assert len(shown) == 2 and "ppl_check t: 70/140 windows" in shown[0] and "90/140 windows" in shown[1]


@pytest.mark.skipif(sys.platform == "win32", reason="needs a pseudo-terminal")
def test_a_terminal_gets_a_live_line_that_goes_away(pytester):
    project(pytester, SUITE.split("def test_fails_after")[0])
    (pytester.path / "conftest.py").write_text((pytester.path / "conftest.py").read_text() + EVERY_BATCH)
    main, sub = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    args = ["-p", "no:cacheprovider", "--ppl-batch-size=35", "--ppl-no-cache"]
    proc = subprocess.Popen([sys.executable, "-m", "pytest", *args],
                            cwd=pytester.path, stdin=sub, stdout=sub, stderr=sub, env=env, close_fds=True)
    os.close(sub)
    chunks = []
    while True:
        ready, _, _ = select.select([main], [], [], 120)
        if not ready:
            break
        try:
            data = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=60)
    os.close(main)
    out = b"".join(chunks).decode("utf-8", "replace")
    assert "\rllmppl ppl_baseline test_suite.py::test_measure: 35/140 windows" in out
    assert "\rllmppl ppl_baseline test_suite.py::test_measure: 105/140 windows" in out
    # the live line is cleared and pytest's own line put back; the test's result then follows on it
    longest = max(len(part) for part in out.split("\r") if part.startswith("llmppl ppl_baseline"))
    assert "\r" + " " * longest + "\rtest_suite.py " in out
    assert "1 passed" in out
