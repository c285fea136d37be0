"""The last source, which always serves: a forward of the model, under the store's lock so xdist
workers needing the same result measure it once; a complete result is stored."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..judge.records import Source
from .served import ResultSource, Served

if TYPE_CHECKING:
    from ..keep.result_store import ResultStore
    from ..measure.call import Call
    from ..measure.perplexity_result import PerplexityResult
    from .memory import Memory

WAITED = "waited"


class Forward:
    """``again``: the sources asked once more under the lock (another worker may have measured it
    while this one waited); ``progress``: (label) -> the engine's progress callback, or None."""

    def __init__(self, memory: Memory, results: ResultStore | None, again: list[ResultSource], run_id: str,
                 progress: Any = None):
        self.memory = memory
        self.results = results
        self.again = again
        self.run_id = run_id
        self.progress = progress
        self.waited: dict[str, float] = {}  # key -> seconds waited for another worker's result

    def measure(self, model: Any, call: Call, order: list[int] | None = None, stop: Any = None) -> Served:
        if self.results is None or call.spec.unpinned:
            return Served(self.forward(model, call, order, stop), Source.MEASURED)
        t0 = time.perf_counter()
        with self.results.lock(call.spec):
            for source in self.again:
                found = source.serve(call) if not source.refuses(call) else None
                if found is not None:
                    self.waited[call.spec.key] = time.perf_counter() - t0
                    return found
            result = self.forward(model, call, order, stop)
            self.results.put(call.spec, result, run=self.run_id)
            return Served(result, Source.MEASURED)

    def forward(self, model: Any, call: Call, order: list[int] | None = None, stop: Any = None) -> PerplexityResult:
        from ..measure.measurement import run

        s = call.settings
        shown = self.progress(call.label) if self.progress is not None else None
        try:
            result = run(model, call.prepared, batch_size=s.batch_size, device=call.device,
                         dtype=None if s.dtype == "auto" else s.dtype, order=order, stop=stop, top1=True,
                         identity=call.spec, progress=shown, keep_topk=call.keep_topk, reference=call.reference)
        finally:
            if shown is not None:
                shown.close()
        self.memory.measured(call.spec, result)
        return result

    def wait_note(self, call: Call) -> tuple[str, ...]:
        """A record's note when its seconds were mostly a wait for another xdist worker."""
        wait = self.waited.get(call.identity.key)
        return (f"{WAITED} {wait:.1f} s for another xdist worker measuring it",) if wait else ()
