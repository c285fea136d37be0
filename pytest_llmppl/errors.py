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
