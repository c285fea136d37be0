"""The local store's complete results, measured by earlier runs (or by this run's other workers)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from ..judge.records import Source
from .served import Served, unpinned

if TYPE_CHECKING:
    from ..keep.result_store import ResultStore
    from ..measure.call import Call


class Stored:
    """``run``: only results this run stored count (a refresh, strict mode with a committed file)."""

    def __init__(self, results: ResultStore, run: str | None = None):
        self.results = results
        self.run = run

    refuses = staticmethod(unpinned)

    def serve(self, call: Call) -> Served | None:
        found = self.results.get(call.identity, run=self.run)
        if found is None:
            return None
        call.learn_windows(found.n_windows_total)
        return Served(dataclasses.replace(found, identity=call.spec), Source.CACHE)
