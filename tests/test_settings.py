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


def test_stride_is_checked_against_the_protocol_and_seqlen():
    s = resolve({}, {}, {})
    with pytest.raises(SettingsError, match="stride 64 applies only to protocol sliding"):
        s.with_overrides(stride=64)
    assert s.with_overrides(protocol="sliding", stride=64).stride == 64
    with pytest.raises(SettingsError, match="--ppl-stride: stride 256 is longer than seqlen 128"):
        resolve({"protocol": "sliding", "stride": "256", "seqlen": "128"}, {}, {})
    sliding = resolve({"protocol": "sliding", "stride": "64"}, {}, {})
    assert sliding.with_overrides(protocol="tokens").stride is None  # another protocol drops the stride


def test_json_keeps_types_and_the_budget_as_written():
    data = resolve({"seqlen": "128", "budget": "2%"}, {"no_cache": "true"}, {}).to_json()
    assert data["seqlen"] == 128 and data["no_cache"] is True and data["budget"] == "2%"
    assert data["max_windows"] is None and data["batch_size"] == "auto"


def test_cli_takes_its_evaluation_options_from_the_same_table():
    from pytest_llmppl.cli import CLI_SETTINGS, build_parser
    from pytest_llmppl.settings import per_call_names

    checks_only = {"early_stop", "confidence", "regression_tolerance", "size_tolerance", "keep_at_most",
                   "kl_budget"}  # a check's, not an evaluation's
    assert set(CLI_SETTINGS) == set(per_call_names()) - checks_only
    args = build_parser().parse_args(["eval", "--model", "m", "--max-windows", "3", "--dtype", "bfloat16"])
    assert args.max_windows == "3" and args.dtype == "bfloat16" and args.load_dtype == "auto"
