"""Faults: killed writers, corrupted entries, races, full disks, unwritable dirs, Ctrl-C; security."""

from __future__ import annotations

import errno
import json
import multiprocessing as mp
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
import torch

from pytest_llmppl import evaluate
from pytest_llmppl.keep.store import CacheWarning, Store

from conftest import CORPUS_TXT, ROOT

KEY = "ab" * 32


def test_writer_killed_mid_write_leaves_nothing_trusted(tmp_path):
    """SIGKILL while the body is being written: no entry at the final path, next run rebuilds."""
    code = textwrap.dedent(f"""
        import os, sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from pytest_llmppl.keep import store as cache
        real = os.fdopen
        def slow_fdopen(fd, mode):
            fh = real(fd, mode)
            write = fh.write
            def trickle(blob):
                for i in range(0, len(blob), 4096):
                    write(blob[i:i + 4096]); fh.flush(); time.sleep(0.01)
            fh.write = trickle
            return fh
        cache.os.fdopen = slow_fdopen
        cache.Store({str(tmp_path)!r}).put_bytes("baselines", {KEY!r}, b"x" * 400_000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code])
    deadline = time.time() + 30
    while time.time() < deadline and not list(tmp_path.glob("baselines/*/.*.tmp")):
        time.sleep(0.01)
    time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(tmp_path.glob("baselines/*/.*.tmp")), "the writer was killed before it started writing"
    store = Store(tmp_path)
    assert not store.path("baselines", KEY).exists()
    assert store.get_bytes("baselines", KEY) is None
    store.put_bytes("baselines", KEY, b"rebuilt")
    assert store.get_bytes("baselines", KEY)[1] == b"rebuilt"


def test_torn_entry_at_final_path_is_detected(tmp_path):
    """On a file system without atomic rename a torn entry can appear: the checksum catches it."""
    store = Store(tmp_path)
    store.put_json("baselines", KEY, {"ppl": 1.5, "window_nll": list(range(100))})
    path = store.path("baselines", KEY)
    path.write_bytes(path.read_bytes()[:-17])
    with pytest.warns(CacheWarning, match="corrupted"):
        assert store.get_json("baselines", KEY) is None
    assert not path.exists()


def _racer(root, i, barrier):
    barrier.wait()
    store = Store(root)
    for k in range(20):
        store.put_json("baselines", KEY, {"writer": i, "round": k, "payload": "y" * (1000 * (i + 1))})
        got = store.get_json("baselines", KEY)
        assert got is not None and got["payload"] == "y" * (1000 * (got["writer"] + 1))


def test_racing_writers_leave_one_valid_entry(tmp_path):
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_racer, args=(str(tmp_path), i, barrier)) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    files = list(tmp_path.glob("baselines/*/*.entry"))
    assert len(files) == 1 and not list(tmp_path.glob("baselines/*/.*.tmp"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Store(tmp_path).get_json("baselines", KEY)["round"] == 19


def test_disk_full_warns_and_leaves_no_temp_file(tmp_path, monkeypatch):
    store = Store(tmp_path)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.warns(CacheWarning, match="No space left on device"):
        assert store.put_bytes("tokens", KEY, b"z" * 1000) is None
    assert not [p for p in tmp_path.glob("tokens/*/*") if not p.name.endswith(".lock")]  # no entry, no temp file


def test_a_result_whose_argmax_could_not_be_written_is_not_kept(tmp_path, monkeypatch, tiny_model,
                                                                  tiny_tokenizer):
    """Disk full while writing the argmax: the result is not kept without it (the next run measures
    it again rather than serving it without its top-1 agreement); written whole, it is served whole."""
    from pytest_llmppl.keep.result_store import ResultStore
    from pytest_llmppl.measure.measurement import identify, prepare, run

    store = Store(tmp_path)
    prepared = prepare(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 64, protocol="torch-pruning", stride=None,
                       max_windows=None, store=None)
    spec = identify(tiny_model, prepared, None, None)
    result = run(tiny_model, prepared, top1=True, identity=spec)
    real = store.put_bytes

    def top1_disk_full(namespace, key, body, meta=None):
        if namespace == "top1":
            warnings.warn("disk full", CacheWarning, stacklevel=2)
            return None
        return real(namespace, key, body, meta)

    monkeypatch.setattr(store, "put_bytes", top1_disk_full)
    with pytest.warns(CacheWarning):
        ResultStore(store).put(spec, result)
    assert ResultStore(store).get(spec) is None
    monkeypatch.setattr(store, "put_bytes", real)
    ResultStore(store).put(spec, result)
    served = ResultStore(store).get(spec)
    assert served is not None and served.window_nll == result.window_nll
    assert served.top1 is not None and sorted(served.top1) == sorted(result.top1)


def test_interrupt_during_write_leaves_nothing_half_written(tmp_path, monkeypatch):
    store = Store(tmp_path)

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        store.put_bytes("tokens", KEY, b"z" * 1000)
    assert not [p for p in tmp_path.glob("tokens/*/*") if not p.name.endswith(".lock")]


def test_unwritable_cache_dir_falls_back_with_a_warning(tmp_path, tiny_model, tiny_tokenizer):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.warns(CacheWarning, match="not writable"):
        r = evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 256, max_windows=2, cache_dir=blocker / "cache")
    assert r.finite


def test_half_precision_overflow_is_nan_not_a_number(tiny_model, tiny_tokenizer, cache_dir):
    model = tiny_model.to(torch.float16)
    with torch.no_grad():
        model.lm_head.weight.mul_(1e4)  # logits beyond float16's range, as after a bad pruning step
    r = evaluate(model, tiny_tokenizer, str(CORPUS_TXT), 128, max_windows=2, cache_dir=cache_dir)
    assert not r.finite and r.to_dict()["ppl"] is None


def test_crafted_names_cannot_escape_the_cache(tmp_path):
    store = Store(tmp_path)
    for bad in ("../../x", "/etc/passwd", "AB" * 32, "", "ab/../cd" + "0" * 20):
        with pytest.raises(ValueError):
            store.path("tokens", bad)
    with pytest.raises(ValueError):
        store.path("../tokens", KEY)
    assert store.path("tokens", KEY).resolve().is_relative_to(tmp_path.resolve())


def test_no_unsafe_deserialisation_in_the_package():
    src = "\n".join(p.read_text() for p in (ROOT / "pytest_llmppl").glob("*.py"))
    assert not re.search(r"^\s*import pickle|^\s*from pickle|cPickle|dill", src, re.M)
    assert "allow_pickle=True" not in src and "weights_only=False" not in src
    for call in re.findall(r"torch\.load\([^)]*\)", src):
        assert "weights_only=True" in call
    for line in src.splitlines():
        if re.search(r"np\.(load|save)\(", line):
            assert "allow_pickle=False" in line, line


def test_remote_code_only_when_asked(monkeypatch):
    from transformers import AutoModelForCausalLM

    from pytest_llmppl.cli import load_model

    seen = {}

    def fake(name, **kw):
        seen.update(kw)
        raise OSError("stop here")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", fake)
    from pytest_llmppl.errors import ModelError

    with pytest.raises(ModelError):
        load_model("some/model")
    assert seen["trust_remote_code"] is False
    with pytest.raises(ModelError):
        load_model("some/model", trust_remote_code=True)
    assert seen["trust_remote_code"] is True


def test_baselines_file_write_is_atomic(tmp_path, monkeypatch):
    from pytest_llmppl.keep.files import write_text_file

    target = tmp_path / "b.json"
    target.write_text('{"old": true}')

    def boom(fd):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(os, "fsync", boom)
    with pytest.raises(OSError):
        write_text_file(target, json.dumps({"new": True}))
    assert json.loads(target.read_text()) == {"old": True}
