"""Progress of a measurement inside pytest: a live line on a terminal, a plain line in a CI log.

A 7B evaluation takes seconds on an H200 and minutes on smaller GPUs; without this the
plugin is silent until the test ends.  On a terminal the line (test, windows done / total,
elapsed, estimate left) is rewritten in place and cleared when the measurement ends; in a
log (no terminal) a plain line is written at most every ``LOG_EVERY`` seconds.  Nothing is
shown under ``-qq`` or in an xdist worker (it has no terminal; the controller prints the
test's result).  Lines go around pytest's output capture, so captured output, junit and
reports hold none of them.
"""

from __future__ import annotations

import time
from typing import Any

LOG_EVERY = 10.0   # seconds between plain lines in a CI log
TTY_EVERY = 0.25   # seconds between rewrites of the live line
FIRST_AFTER = 1.0  # a measurement shorter than this shows nothing


class Progress:
    """The engine's ``progress(done, total)`` callback for one measurement."""

    def __init__(self, terminal: Any, capture: Any, label: str, tty: bool, clock: Any = time.perf_counter):
        self.terminal, self.capture, self.label, self.tty, self.clock = terminal, capture, label, tty, clock
        self.start = clock()
        self.shown = self.start + FIRST_AFTER - (TTY_EVERY if tty else LOG_EVERY)
        self.width = 0

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if now - self.shown < (TTY_EVERY if self.tty else LOG_EVERY) or done >= total:
            return
        self.shown = now
        elapsed = now - self.start
        left = elapsed * (total - done) / done if done else 0.0
        text = f"llmppl {self.label}: {done}/{total} windows, {elapsed:.0f} s elapsed, ~{left:.0f} s left"
        self._write(text)

    def close(self) -> None:
        """Clear the live line and put back pytest's own (a log keeps its lines)."""
        if self.tty and self.width:
            with self.capture.global_and_fixture_disabled():
                tw = self.terminal._tw
                tw._file.write("\r" + " " * self.width + "\r" + getattr(tw, "_current_line", ""))
                tw._file.flush()
            self.width = 0

    def _write(self, text: str) -> None:
        with self.capture.global_and_fixture_disabled():
            if self.tty:  # over pytest's current line, straight to the terminal: its own line stays intact
                tw = self.terminal._tw
                text = text[:max(tw.fullwidth - 1, 20)]
                tw._file.write("\r" + text.ljust(self.width))
                tw._file.flush()
                self.width = max(self.width, len(text))
            else:
                self.terminal.write_line(text)


def progress_for(config: Any) -> Any:
    """A factory ``(label) -> Progress | None`` for this pytest run; None where nothing is shown.
    The terminal is looked up at each measurement: at configure time it may not be registered yet."""
    if hasattr(config, "workerinput"):
        return None

    def make(label: str) -> Progress | None:
        terminal = config.pluginmanager.get_plugin("terminalreporter")
        capture = config.pluginmanager.get_plugin("capturemanager")
        if terminal is None or capture is None or config.get_verbosity() < -1:
            return None
        tty = bool(getattr(terminal, "isatty", False)) and hasattr(getattr(terminal, "_tw", None), "_file")
        return Progress(terminal, capture, label, tty)

    return make
