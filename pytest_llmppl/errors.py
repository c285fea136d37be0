"""The errors users see: each names what went wrong and what to do about it."""

from __future__ import annotations


class LLMPPLError(Exception):
    """Base of every error this package raises on purpose (never a bare traceback)."""


class CorpusError(LLMPPLError):
    """The corpus cannot be loaded, is unknown, or is too short."""


class TokenizerError(LLMPPLError):
    """The tokenizer cannot be resolved or does not fit the model."""


class ModelError(LLMPPLError):
    """The model cannot be evaluated as a causal LM (no logits, meta tensors, positions)."""


class SettingsError(LLMPPLError):
    """An option, ini value or marker argument is malformed."""


class BaselineError(LLMPPLError):
    """A committed baselines file is malformed or does not match this run."""


class PPLFailure(AssertionError):
    """A check over budget, a non-finite perplexity, a baseline that does not match its check,
    or a strict miss: an ordinary test failure, reported as one message."""



class BaselineMismatchWarning(UserWarning):
    """The committed baseline was measured elsewhere (device, dtype, attention, versions)."""


class PrunedInPlaceWarning(UserWarning):
    """A baseline's weights are a candidate checked earlier: the shared dense model was changed."""


class RecordMismatchWarning(UserWarning):
    """A check's recorded result was measured with other settings: it is not compared."""


def warn_at_user(message: str, category: type[Warning]) -> None:
    """``warnings.warn`` located at the first frame outside this package: the user's line."""
    import os
    import sys
    import warnings

    here = os.path.dirname(os.path.abspath(__file__)) + os.sep  # the package, its stage folders too
    level, frame = 2, sys._getframe(1)  # stacklevel 2: the caller of warn_at_user
    while os.path.abspath(frame.f_code.co_filename).startswith(here) and frame.f_back is not None:
        level, frame = level + 1, frame.f_back
    warnings.warn(message, category, stacklevel=level)
