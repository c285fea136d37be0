"""Settings parsing and precedence, without pytest runs."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pytest_llmppl.errors import SettingsError
from pytest_llmppl.settings import Budget, parse_budget, resolve


@given(st.floats(min_value=0, max_value=1e6, allow_nan=False))
def test_budget_round_trip(x):
    assert parse_budget(repr(x)) == Budget(x, False)
    assert parse_budget(f"{x!r}%") == Budget(x, True)
    assert parse_budget(str(parse_budget(f"{x}%"))).relative


@given(st.text())
def test_budget_parse_never_crashes_unexpectedly(text):
    try:
        b = parse_budget(text)
    except SettingsError:
        return
    assert math.isfinite(b.value) and b.value >= 0


def test_threshold():
    assert Budget(2.0).threshold(10.0) == 12.0
    assert Budget(5.0, True).threshold(10.0) == pytest.approx(10.5)


def test_precedence_option_env_ini():
    env = {"PYTEST_LLMPPL_SEQLEN": "256"}
    assert resolve({"seqlen": "128"}, {"seqlen": "64"}, env).seqlen == 128
    assert resolve({}, {"seqlen": "64"}, env).seqlen == 256
    assert resolve({}, {"seqlen": "64"}, {}).seqlen == 64
    assert resolve({}, {}, {}).seqlen is None


def test_overrides_are_validated():
    s = resolve({}, {}, {})
    assert s.with_overrides(seqlen=32).seqlen == 32
    with pytest.raises(SettingsError, match="unknown override"):
        s.with_overrides(sequence_length=32)
