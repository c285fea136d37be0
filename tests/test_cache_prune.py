"""``cache prune``: what no run has used for a while goes, least recently used first under a size cap;
a result and its argmax go together; a read counts as a use."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest

from pytest_llmppl.cli import main, parse_size
from pytest_llmppl.keep.store import Store

DAY = 86400.0
OLD, RECENT, OTHER = "aa" * 32, "bb" * 32, "cc" * 32


def _entry_files(store: Store) -> set[str]:
    return {f"{p.parent.parent.name}/{p.stem[:2]}" for p in store.root.glob("*/*/*.entry")}


def _age(store: Store, namespace: str, key: str, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(store.path(namespace, key), (t, t))


@pytest.fixture
def store(tmp_path) -> Store:
    """A result with its argmax (used 40 days ago), one used 2 days ago, and token ids used 10 days ago."""
    s = Store(tmp_path / "store")
    for key, days in ((OLD, 40), (RECENT, 2)):
        s.put_array("top1", key, np.arange(1000, dtype=np.int32))
        s.put_json("results", key, {"window_nll": [1.0] * 100})
        _age(s, "top1", key, days)
        _age(s, "results", key, days - 0.001)
    s.put_array("tokens", OTHER, np.arange(10, dtype=np.int64))
    _age(s, "tokens", OTHER, 10)
    return s


def test_unused_days_removes_what_no_run_used_since(store):
    assert _entry_files(store) == {"results/aa", "top1/aa", "results/bb", "top1/bb", "tokens/cc"}
    done = store.prune(unused_days=30)
    assert _entry_files(store) == {"results/bb", "top1/bb", "tokens/cc"}
    assert (done.entries, done.kept_entries) == (2, 3)
    assert not list(store.root.glob(f"*/*/{OLD}*"))  # its lock files went with it
    assert store.prune(unused_days=5).entries == 1 and _entry_files(store) == {"results/bb", "top1/bb"}


def test_a_read_is_a_use(store):
    assert store.get_json("results", OLD) is not None  # served by this run: no longer unused
    store.prune(unused_days=30)
    assert "results/aa" in _entry_files(store)
    # its argmax was not read here, but goes (or stays) with its result: one key, one unit
    assert "top1/aa" in _entry_files(store)


def test_max_size_removes_least_recently_used_first(store):
    sizes = {p.stem[:2]: 0 for p in store.root.glob("*/*/*.entry")}
    for p in store.root.glob("*/*/*.entry"):
        sizes[p.stem[:2]] += p.stat().st_size
    done = store.prune(max_bytes=sizes["bb"] + sizes["cc"])
    assert _entry_files(store) == {"results/bb", "top1/bb", "tokens/cc"}
    assert done.bytes == sizes["aa"] and done.kept_bytes == sizes["bb"] + sizes["cc"]
    store.prune(max_bytes=sizes["bb"])  # the token ids (10 days) are older than the result (2 days)
    assert _entry_files(store) == {"results/bb", "top1/bb"}
    store.prune(max_bytes=0)
    assert _entry_files(store) == set()


def test_cli_prune(store, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PYTEST_LLMPPL_CACHE_DIR", str(store.root))
    monkeypatch.chdir(tmp_path)  # no .pytest_cache here: only the given store is pruned
    assert main(["cache", "prune", "--unused-days", "30"]) == 0
    out = capsys.readouterr().out
    assert "removed 2 entries" in out and f"from {store.root}; 3 entries" in out and "kept" in out
    assert main(["cache", "prune", "--max-size", "0"]) == 0
    assert _entry_files(store) == set()


@pytest.mark.parametrize("args,message", [
    (["cache", "prune"], "cache prune needs --unused-days DAYS and/or --max-size SIZE"),
    (["cache", "prune", "--max-size", "lots"], "--max-size 'lots' is not a size"),
    (["cache", "prune", "--unused-days", "-1"], "--unused-days must be >= 0"),
    (["cache", "info", "--unused-days", "3"], "--unused-days and --max-size go with cache prune"),
])
def test_cli_prune_bad_input(args, message, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTEST_LLMPPL_CACHE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_parse_size():
    assert [parse_size(s) for s in ("1024", "10k", "500M", "500MB", "1.5GiB", "2g", "1T")] == [
        1024, 10 * 2**10, 500 * 2**20, 500 * 2**20, int(1.5 * 2**30), 2 * 2**30, 2**40]
