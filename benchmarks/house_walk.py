"""The walk of one ``ppl_check`` through the package: which modules ("rooms") it enters, in order.

A ``ppl_check`` of a pruned copy, after a ``ppl_baseline`` of the dense model, in one session
(the fixture model, a fresh store, the plugin's own ``PPLSession``), under ``sys.setprofile``.  Every call from one
module of ``pytest_llmppl`` into a function of another is an entry (each call site once, so a
loop is one entry; property getters are glances, not entries).  A module's floor is its height
in the package's import graph (every import, inside functions too; a module that imports none
of the package is floor 0), so an entry into a higher floor than its caller's is a climb back up.

The counts: entries (module changes), rooms (modules entered), climbs, and the modules entered
most often; then the same with the stage folders as the rooms (a call inside a folder is no
entry; the settings sit below every stage, the session above them).  ``--with-baseline`` walks
the baseline too; ``--stays`` prints the older count (the sequence of modules the walk is in,
returns to a caller included).

    python benchmarks/house_walk.py           # the check's walk and its counts

On the flat package before the stage folders (92808a5^): 61 entries into 23 rooms, 3 climbs,
``fingerprint`` entered 8 times.  Now: 60 entries into 38 rooms, no climb, every module entered at
most 3 times (``identity.fingerprint`` by the model's, the tokenizer's and the spec's identity; a
class's description is hashed inside the model's digest, as a ``Hashed`` part).
"""

from __future__ import annotations

import ast
import collections
import copy
import itertools
import sys
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "pytest_llmppl"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def modules() -> list[str]:
    """The package's modules, dotted from the package root (``session``, ``judge.decision``); a
    folder's ``__init__`` is the folder (``measure.protocols``)."""
    found = set()
    for p in PACKAGE.rglob("*.py"):
        parts = p.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            found.add(".".join(parts[:-1]))
        elif not parts[-1].startswith("__"):
            found.add(".".join(parts))
    return sorted(found)


def source_of(module: str) -> Path:
    path = PACKAGE.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imports_of(module: str) -> set[str]:
    """The package's modules that ``module`` imports, anywhere in its source."""
    source = source_of(module)
    tree = ast.parse(source.read_text(encoding="utf-8"))
    here = module.split(".") if source.name == "__init__.py" else module.split(".")[:-1]
    known, found = set(modules()), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)]
            target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            for alias in node.names:
                found.add(f"{target}.{alias.name}".strip(".") if f"{target}.{alias.name}".strip(".") in known
                          else target)
    return {m for m in found if m in known and m != module}


@cache
def floor(module: str) -> int:
    """Height in the import graph; modules that import each other (a cycle) share a floor."""
    return _floors()[module]


@cache
def _floors() -> dict[str, int]:
    names = modules()
    graph = {m: imports_of(m) for m in names}
    reach = {m: _reachable(graph, m) for m in names}
    group = {m: frozenset({m} | {n for n in reach[m] if m in reach[n]}) for m in names}
    height: dict[frozenset, int] = {}

    def up(g: frozenset) -> int:
        if g not in height:
            below = {group[n] for m in g for n in graph[m]} - {g}
            height[g] = 1 + max((up(b) for b in below), default=-1)
        return height[g]

    return {m: up(group[m]) for m in names}


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for n in graph[todo.pop()]:
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def property_code() -> set:
    """The code of every property getter (and cached property) of the package's classes."""
    import functools
    import importlib
    import inspect

    found = set()
    for name in modules():
        module = importlib.import_module(f"pytest_llmppl.{name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            for value in vars(cls).values():
                getter = value.fget if isinstance(value, property) else \
                    value.func if isinstance(value, functools.cached_property) else None
                if getter is not None:
                    found.add(getter.__code__)
    return found


sites: list[tuple[str, str]] = []  # (caller.function, callee.function) of every entry, as walked


def walk(with_baseline: bool = False, cache_dir: str | None = None) -> list[tuple[str, str]]:
    """The (caller, callee) module of every entry, in order (caller "" for the test itself); the
    store in ``cache_dir`` (a new temporary folder when not given)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from pytest_llmppl.session import PPLSession
    from pytest_llmppl.settings import Budget, Settings

    from conftest import CORPUS_TXT, TINY

    tok = AutoTokenizer.from_pretrained(TINY)
    dense = AutoModelForCausalLM.from_pretrained(TINY, dtype=torch.float32)
    pruned = copy.deepcopy(dense)
    with torch.no_grad():
        pruned.model.layers[0].mlp.down_proj.weight.mul_(0.5)
    import tempfile

    session = PPLSession(Settings(corpus=str(CORPUS_TXT), seqlen=128, cache_dir=cache_dir or tempfile.mkdtemp()))
    entries: list[tuple[str, str]] = []
    sites.clear()
    taken: set[tuple[str, str]] = set()
    glances = property_code()

    def module_of(frame) -> str:
        name = frame.f_globals.get("__name__", "") if frame is not None else ""
        return name.split(".", 1)[1] if name.startswith("pytest_llmppl.") and name != "pytest_llmppl.__init__" else ""

    def caller_of(frame) -> Any:
        """The nearest frame of the package below ``frame`` (a context manager's or torch's frames
        between them are not a room): the frame that made the call."""
        back = frame.f_back
        while back is not None and not module_of(back) and back.f_code.co_filename != __file__:
            back = back.f_back
        return back

    def profile(frame, event, arg):
        if event != "call":
            return
        back = caller_of(frame)
        callee, caller = module_of(frame), module_of(back)
        code = frame.f_code
        if not callee or callee == caller or code in glances or code.co_name == "<module>" \
                or code.co_filename == "<string>":
            return
        site = (f"{caller}.{back.f_code.co_name if back is not None else ''}", f"{callee}.{frame.f_code.co_name}")
        if site in taken:
            return
        taken.add(site)
        entries.append((caller, callee))
        sites.append(site)

    if not with_baseline:
        base = session.baseline(dense, tok, test="t")
    sys.setprofile(profile)
    try:
        if with_baseline:
            base = session.baseline(dense, tok, test="t")
        session.check(pruned, tok, baseline=base, budget=Budget(100.0), test="t")
    finally:
        sys.setprofile(None)
    return entries


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    entries = walk(with_baseline="--with-baseline" in args)
    if "--stays" in args:
        trail = [m for caller, callee in entries for m in (caller, callee) if m]
        stays = [m for i, m in enumerate(trail) if i == 0 or trail[i - 1] != m]
        climbs = sum(floor(b) > floor(a) for a, b in itertools.pairwise(stays))
        returns = len(stays) - len(set(stays))
        print(" -> ".join(f"{m}({floor(m)})" for m in stays))
        print(f"{len(stays)} stays in {len(set(stays))} rooms, {climbs} climbs back up, {returns} returns")
        return 0
    for (caller, callee), (from_function, to_function) in zip(entries, sites):
        up = "  (climb)" if caller and floor(callee) > floor(caller) else ""
        print(f"{from_function.lstrip('.') or 'the test'} -> {to_function}{up}")
    print(summary("modules", entries, floor))
    between = [(stage_of(a), stage_of(b)) for a, b in entries if stage_of(a) != stage_of(b)]
    print(summary("stages", between, stage_height))
    return 0


STAGE_ORDER = ("identity", "measure", "judge", "keep", "sources", "report")
BASE = ("errors", "settings", "values")


def stage_of(module: str) -> str:
    """The room a module is in when the house is seen by its stages: its folder, else itself."""
    return module.split(".")[0] if module else ""


def stage_height(room: str) -> int:
    """The settings and errors below every stage, the stages in pipeline order, the session,
    plugin and CLI above them."""
    return -1 if room in BASE else STAGE_ORDER.index(room) if room in STAGE_ORDER else len(STAGE_ORDER)


def summary(level: str, entries: list[tuple[str, str]], height: Any) -> str:
    """``modules: 79 entries into 34 rooms, 2 climbs back up; entered most: ...``; a room entered
    from fewer rooms than times says how many rooms enter it (``4 from 3 rooms``)."""
    entered = collections.Counter(callee for _, callee in entries)
    callers = {room: {a for a, b in entries if b == room} for room in entered}
    climbs = sum(1 for a, b in entries if a and height(b) > height(a))
    most = ", ".join(f"{m} {n}" + (f" from {len(callers[m])} room{'s' * (len(callers[m]) > 1)}"
                                   if len(callers[m]) < n else "") for m, n in entered.most_common(5))
    return (f"{level}: {len(entries)} entries into {len(entered)} rooms, {climbs} climbs back up; "
            f"entered most: {most}")


if __name__ == "__main__":
    raise SystemExit(main())
