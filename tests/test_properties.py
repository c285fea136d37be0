"""Property tests: windowing, cache key/checksum round trip."""

from __future__ import annotations

import hashlib
import itertools
import tempfile

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from pytest_llmppl.keep.store import Store
from pytest_llmppl.measure.windows import plan_windows, spread_subset, window_weight


@given(st.integers(0, 5000), st.integers(2, 600), st.sampled_from(["torch-pruning", "tokens"]),
       st.one_of(st.none(), st.integers(1, 50)))
def test_disjoint_windows(n, seqlen, protocol, cap):
    ws = plan_windows(n, seqlen, protocol, cap=cap)
    assert len(ws) == min(n // seqlen, cap or n)
    for i, w in enumerate(ws):
        assert (w.start, w.end, w.score_from) == (i * seqlen, (i + 1) * seqlen, 1)
        assert window_weight(w, protocol) == (seqlen if protocol == "torch-pruning" else seqlen - 1)
    assert all(a.end <= b.start for a, b in itertools.pairwise(ws))  # no overlap; the tail is dropped
    assert n - (ws[-1].end if ws else 0) < seqlen or cap


@given(st.integers(2, 3000), st.integers(2, 300), st.data())
def test_sliding_scores_every_token_once(n, seqlen, data):
    stride = data.draw(st.integers(1, seqlen))
    ws = plan_windows(n, seqlen, "sliding", stride)
    scored = []
    for w in ws:
        assert w.length <= seqlen and w.start % stride == 0 and 1 <= w.score_from < w.length
        scored += list(range(w.start + w.score_from, w.end))
    assert scored == sorted(set(scored))  # each position at most once, in order
    # the stream is covered to its end; only a 1-token tail after disjoint windows (nothing to score) is dropped
    assert ws[-1].end == n or (stride == seqlen and ws[-1].end == n - 1)
    if stride < seqlen:
        assert scored == list(range(1, n))  # overlapping windows score every token but the first
    else:
        assert len(scored) == ws[-1].end - len(ws)


@given(st.integers(1, 5000), st.data())
def test_spread_subset(n, data):
    k = data.draw(st.integers(1, n))
    idx = spread_subset(n, k)
    assert len(idx) == k == len(set(idx)) and idx == sorted(idx) and idx[0] >= 0 and idx[-1] < n
    gaps = np.diff([-1, *idx, n]) if k > 1 else [1]
    assert max(gaps) - min(gaps[1:-1] if k > 2 else gaps) <= 2 * (n // k) + 1
    assert idx == spread_subset(n, k)


@settings(max_examples=50, deadline=None)
@given(st.binary(max_size=5000), st.dictionaries(st.text(max_size=8), st.integers(), max_size=4))
def test_cache_round_trip_and_checksum(body, meta):
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        key = hashlib.sha256(body).hexdigest()
        store.put_bytes("tokens", key, body, meta)
        got_meta, got = store.get_bytes("tokens", key)
        assert got == body and all(got_meta[k] == v for k, v in meta.items() if k not in ("sha256", "size"))
        path = store.path("tokens", key)
        raw = bytearray(path.read_bytes())
        if body:
            raw[-1] ^= 1
            path.write_bytes(bytes(raw))
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert store.get_bytes("tokens", key) is None


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 2**31 - 1), max_size=2000))
def test_array_round_trip(values):
    with tempfile.TemporaryDirectory() as root:
        store = Store(root)
        arr = np.asarray(values, dtype=np.int32)
        store.put_array("tokens", "cd" * 32, arr)
        assert np.array_equal(store.get_array("tokens", "cd" * 32)[1], arr)
