"""The package's folders are the pipeline's stages, and imports run down it (every import, inside
functions too): identity <- measure <- judge <- keep <- sources <- report <- the session, plugin and
CLI."""

from __future__ import annotations

import ast

import pytest

from conftest import ROOT

PACKAGE = ROOT / "pytest_llmppl"
STAGES = ("identity", "measure", "judge", "keep", "sources", "report")
# What each stage may import from the others (the package's top-level modules other than errors,
# settings and values, the session, plugin and CLI among them, are imported by no stage).
MAY_IMPORT = {
    "identity": set(),
    "measure": {"identity", "keep.store", "keep.files"},  # tokens are cached in the store
    "judge": {"identity", "measure"},
    "keep": {"identity", "measure", "judge"},
    "sources": {"identity", "measure", "judge", "keep"},
    "report": {"identity", "measure", "judge", "keep"},
}
BASE = {"errors", "settings", "values"}


def _imports(path):
    """(dotted target from the package root, line) of every import of the package in ``path``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    here = list(parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)] if node.level > 1 else here
            if node.module:
                yield ".".join([*base, node.module]), node.lineno
            else:
                for alias in node.names:
                    yield ".".join([*base, alias.name]), node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pytest_llmppl."):
            yield node.module.split(".", 1)[1], node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("pytest_llmppl."):
                    yield alias.name.split(".", 1)[1], node.lineno
                elif alias.name == "pytest" or alias.name.startswith(("_pytest", "pytest.")):
                    yield "!pytest", node.lineno


def _allowed(stage, target):
    if target.split(".")[0] == stage or target in BASE or target.split(".")[0] in BASE:
        return True
    return any(target == a or target.startswith(a + ".") for a in MAY_IMPORT[stage])


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_only_the_stages_before_it(stage):
    wrong = []
    for path in sorted((PACKAGE / stage).rglob("*.py")):
        for target, line in _imports(path):
            if target == "!pytest":
                if stage in ("identity", "measure", "judge", "keep", "sources"):
                    wrong.append(f"{path.name}:{line} imports pytest")
            elif not _allowed(stage, target):
                wrong.append(f"{path.name}:{line} imports {target}")
    assert not wrong, f"{stage}/ reaches past its stage: " + "; ".join(wrong)


def test_every_module_is_in_a_stage_or_coordinates_them():
    top = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert top == ["__init__", "__main__", "api", "cli", "cli_files", "errors", "plugin", "pruning", "session",
                   "settings", "startup", "values"]
    for stage in STAGES:
        doc = ast.get_docstring(ast.parse((PACKAGE / stage / "__init__.py").read_text()))
        assert doc and "Imports" in doc, f"{stage}/__init__.py says what it holds and what it may import"


def test_the_protocols_are_a_family_of_one_module_each():
    """Each module of measure/protocols/ is one protocol; together they are the option's choices."""
    from pytest_llmppl.measure import protocols
    from pytest_llmppl.settings import PROTOCOLS

    folder = PACKAGE / "measure" / "protocols"
    modules = sorted(p.stem for p in folder.glob("*.py") if p.stem not in ("__init__", "base"))
    assert sorted(protocols.names()) == sorted(PROTOCOLS)
    assert len(modules) == len(PROTOCOLS)
    assert all(protocols.get(name).name == name for name in PROTOCOLS)


def test_a_check_walks_down_the_house_entering_no_module_more_than_three_times(tmp_path, monkeypatch):
    """``benchmarks/house_walk.py``'s walk of a ``ppl_check`` measured after its baseline: no call
    climbs back up the import graph, no module is entered more than 3 times, and the trip makes
    fewer module changes than on the flat package of 0.3 (61)."""
    import collections

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import house_walk

    entries = house_walk.walk(cache_dir=str(tmp_path))
    entered = collections.Counter(callee for _, callee in entries)
    assert [(a, b) for a, b in entries if a and house_walk.floor(b) > house_walk.floor(a)] == []
    assert [(m, n) for m, n in entered.items() if n > 3] == []
    assert len(entries) < 61
