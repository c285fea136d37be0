"""Token ids are cached on disk by corpus text and tokenizer content; corrupt entries are rebuilt."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from pytest_llmppl import evaluate
from pytest_llmppl.identity.fingerprint import tokenizer_fingerprint
from pytest_llmppl.keep.store import CacheWarning, Store
from pytest_llmppl.measure import tokens
from pytest_llmppl.measure.corpus import Corpus, load_corpus

from conftest import CORPUS_TXT, TINY


def _source(corpus, tok, store):
    tokens._MEMO.clear()
    ids, source = tokens.tokenize(corpus, tok, store)
    return source, ids


def test_second_evaluation_reads_ids_from_disk(tiny_tokenizer, cache_dir, monkeypatch):
    store = Store(cache_dir)
    corpus = load_corpus(str(CORPUS_TXT))
    first, ids = _source(corpus, tiny_tokenizer, store)
    calls = []
    monkeypatch.setattr(tokens, "_encode", lambda *a: calls.append(a) or np.zeros(3, dtype=np.int64))
    second, again = _source(corpus, tiny_tokenizer, store)
    assert (first, second) == ("tokenized", "cache") and not calls
    assert np.array_equal(ids, again) and again.dtype == np.int64
    assert ids.tolist() == tiny_tokenizer(corpus.text, verbose=False)["input_ids"]


def test_other_tokenizer_or_corpus_never_reuses_ids(tiny_tokenizer, cache_dir):
    from transformers import AutoTokenizer

    store = Store(cache_dir)
    corpus = load_corpus(str(CORPUS_TXT))
    _source(corpus, tiny_tokenizer, store)
    changed = AutoTokenizer.from_pretrained(TINY)
    changed.add_tokens(["Brackenmoor"])  # same name, other content
    assert tokenizer_fingerprint(changed) != tokenizer_fingerprint(tiny_tokenizer)
    assert _source(corpus, changed, store)[0] == "tokenized"
    assert _source(Corpus("x", corpus.text + " more"), tiny_tokenizer, store)[0] == "tokenized"
    same = AutoTokenizer.from_pretrained(TINY)
    assert tokenizer_fingerprint(same) == tokenizer_fingerprint(tiny_tokenizer)
    assert _source(corpus, same, store)[0] == "cache"


@pytest.mark.parametrize("package", ["transformers", "tokenizers"])
def test_ids_tokenized_by_other_software_are_tokenized_again(tiny_tokenizer, cache_dir, monkeypatch, package):
    """The same pipeline may split a text otherwise under another transformers or tokenizers (the
    store outlives an upgrade on a CI cache): ids another version made are a miss, never served."""
    from pytest_llmppl.identity import spec

    store = Store(cache_dir)
    corpus = load_corpus(str(CORPUS_TXT))
    assert _source(corpus, tiny_tokenizer, store)[0] == "tokenized"
    assert _source(corpus, tiny_tokenizer, store)[0] == "cache"
    real = spec.package_version
    monkeypatch.setattr(spec, "package_version", lambda name: "9.9.9" if name == package else real(name))
    assert _source(corpus, tiny_tokenizer, store)[0] == "tokenized"
    assert _source(corpus, tiny_tokenizer, store)[0] == "cache"  # kept for this version


def test_corrupted_entry_is_rebuilt_with_a_warning(tiny_tokenizer, cache_dir):
    store = Store(cache_dir)
    corpus = load_corpus(str(CORPUS_TXT))
    _, ids = _source(corpus, tiny_tokenizer, store)
    (entry,) = list(cache_dir.glob("tokens/*/*.entry"))
    raw = bytearray(entry.read_bytes())
    raw[-5] ^= 0xFF
    entry.write_bytes(bytes(raw))
    with pytest.warns(CacheWarning, match="corrupted"):
        source, again = _source(corpus, tiny_tokenizer, store)
    assert source == "tokenized" and np.array_equal(ids, again)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _source(corpus, tiny_tokenizer, store)[0] == "cache"


def test_truncated_entry_is_not_trusted(tiny_tokenizer, cache_dir):
    store = Store(cache_dir)
    corpus = load_corpus(str(CORPUS_TXT))
    _source(corpus, tiny_tokenizer, store)
    (entry,) = list(cache_dir.glob("tokens/*/*.entry"))
    entry.write_bytes(entry.read_bytes()[:100])
    with pytest.warns(CacheWarning):
        assert _source(corpus, tiny_tokenizer, store)[0] == "tokenized"


def test_no_cache_writes_nothing(tiny_model, tiny_tokenizer, cache_dir):
    evaluate(tiny_model, tiny_tokenizer, str(CORPUS_TXT), 256, max_windows=1, cache_dir=cache_dir, use_cache=False)
    assert not list(cache_dir.glob("**/*.entry"))


def test_entries_are_not_pickles(tiny_tokenizer, cache_dir):
    store = Store(cache_dir)
    with pytest.raises(ValueError):
        store.put_array("tokens", "ab" * 16, np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="bad cache key"):
        store.path("tokens", "../../etc/passwd")
