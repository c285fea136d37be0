"""Measuring: a call made concrete, corpus, tokens, the protocols (``protocols/``) and their windows,
the engine and its fused cross-entropy, the model's facts, lm-eval, divergence from the dense
model, and the result.

Imports identity/ and the store of keep/ (tokens are cached); never judge/ or report/.
"""
