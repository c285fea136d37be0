"""Where a candidate got worse: per-window rise of the mean NLL, and the text of the worst windows.

For window i, ``delta_i = c_i / w_i - b_i / w_i`` (nats per scored position).  The worst
windows are named by their token span, the nearest WikiText-style heading before them
(``= Title =`` / ``= = Section = =``) and the start of their text, so a reviewer can
tell a local loss (one topic, one format) from one spread over the corpus.
"""

from __future__ import annotations

import re
from typing import Any

from ..measure.windows import Window
from .records import WindowLoss, signed

_HEADING = re.compile(r"^ ?(=(?: =)*) (.+?) \1 ?$", re.MULTILINE)
HEADING_LOOKBACK = 8192  # tokens decoded before a window to find its heading
SNIPPET_CHARS = 70


def worst_windows(deltas: dict[int, float], windows: list[Window], ids: Any, tokenizer: Any,
                  k: int = 3) -> tuple[WindowLoss, ...]:
    """The ``k`` windows with the largest rise, each with its heading and a snippet of its text."""
    ranked = sorted((d, i) for i, d in deltas.items() if d == d)[::-1][:k]  # d == d drops NaN
    out = []
    for delta, i in ranked:
        w = windows[i]
        out.append(WindowLoss(window=i, start=w.start, end=w.end, delta_nll=delta,
                              heading=_heading_before(ids, w.start, tokenizer),
                              snippet=_snippet(tokenizer.decode(list(ids[w.start:w.end])))))
    return tuple(out)


def _heading_before(ids: Any, start: int, tokenizer: Any) -> str:
    """The article and section around ``start``: ``Title / Section`` from the last headings before
    it (and in the window's first tokens)."""
    text = tokenizer.decode(list(ids[max(0, start - HEADING_LOOKBACK):start + 32]))
    title, section = "", ""
    for marks, name in _HEADING.findall(text):
        if marks == "=":
            title, section = name.strip(), ""
        else:
            section = name.strip()
    return " / ".join(part for part in (title, section) if part)


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[:SNIPPET_CHARS - 1] + "…"


def describe(losses: tuple[WindowLoss, ...], measure: str = "") -> str:
    """``window 12 (tokens 3072-3328) +0.412 nats/token, in "Valkyria Chronicles III": "..."``;
    with ``measure="KL"`` the value is the window's mean KL (``KL 0.412 nats/token``)."""
    parts = []
    for loss in losses:
        where = f' in "{loss.heading}"' if loss.heading else ""
        value = f"{measure} {loss.delta_nll:.3f}" if measure else signed(loss.delta_nll, 3)
        parts.append(f'window {loss.window} (tokens {loss.start}-{loss.end}) {value} nats/token'
                     f'{where}: "{loss.snippet}"')
    return "; ".join(parts)
