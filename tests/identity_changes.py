"""Refactors that leave the state dict alone and change what the forward computes: each is
applied to a loaded tiny Llama in place (shared by the identity tests and the user suites
they run with pytester)."""

from __future__ import annotations

import torch
from torch.nn.utils import prune


class ScaledMask(prune.BasePruningMethod):
    """A custom re-parametrisation: the kept weights are also scaled (its parameter is not in
    the state dict: only the mask and the original weight are)."""

    PRUNING_TYPE = "unstructured"

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def compute_mask(self, t, default_mask):
        return default_mask

    def apply_mask(self, module):
        return super().apply_mask(module) * self.scale


def scaled_mask(model, scale: float) -> None:
    for layer in model.model.layers:
        ScaledMask.apply(layer.mlp.down_proj, "weight", scale=scale)


def _each(model, attr, kind):
    return [getattr(layer, attr) for layer in model.model.layers] if kind is None else \
        [m for m in model.modules() if type(m).__name__ == kind]


def act_fn(model) -> None:
    for mlp in _each(model, "mlp", None):
        mlp.act_fn = torch.nn.Tanh()


def inv_freq(model) -> None:
    """Another rope_theta applied after load: the rotary frequencies, a non-persistent buffer."""
    rotary = model.model.rotary_emb
    dim = rotary.inv_freq.numel() * 2
    rotary.inv_freq.copy_(1.0 / (50.0 ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim)))


def scaling(model) -> None:
    for attn in _each(model, "self_attn", None):
        attn.scaling *= 3.0


def variance_epsilon(model) -> None:
    for norm in _each(model, None, "LlamaRMSNorm"):
        norm.variance_epsilon = 1.0


def attention_scaling(model) -> None:
    model.model.rotary_emb.attention_scaling = 3.0


def is_causal(model) -> None:
    for attn in _each(model, "self_attn", None):
        attn.is_causal = False


def pruning_method(model) -> None:
    """The re-parametrisation ``scaled_mask(model, 1.0)`` made, with another scale: the same
    state dict (masks and original weights)."""
    for layer in model.model.layers:
        for hook in layer.mlp.down_proj._forward_pre_hooks.values():
            if isinstance(hook, ScaledMask):
                hook.scale = 0.5


CHANGES = {"act_fn": act_fn, "inv_freq": inv_freq, "scaling": scaling, "variance_epsilon": variance_epsilon,
           "attention_scaling": attention_scaling, "is_causal": is_causal, "pruning_method": pruning_method}


# Changes of what an installed library's forward looks up in its module at call time: each takes
# pytest's ``monkeypatch`` (they are process-wide) and leaves the model and its state dict alone.
def rope_rebound(monkeypatch) -> None:
    """The user's own rotary function bound under the library's name (half the sine)."""
    from transformers.models.llama import modeling_llama

    stock = modeling_llama.apply_rotary_pos_emb

    def apply_rotary_pos_emb(q, k, cos, sin, *args, **kwargs):
        return stock(q, k, cos, sin * 0.5, *args, **kwargs)

    monkeypatch.setattr(modeling_llama, "apply_rotary_pos_emb", apply_rotary_pos_emb)


def rotate_rebound(monkeypatch) -> None:
    """Another installed library's function under the library's name, as kernel libraries
    (liger-kernel's ``apply_liger_kernel_to_llama``) rebind ``modeling_llama``'s functions."""
    from transformers.models.llama import modeling_llama

    monkeypatch.setattr(modeling_llama, "rotate_half", torch.neg)


def team_attention(monkeypatch, sharpen: float = 1.0) -> None:
    """The team's own attention, registered under a name the model's config selects; a refactor
    of it is another ``sharpen``."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def team_attn(module, query, key, value, attention_mask, **kwargs):
        return sdpa_attention_forward(module, query * sharpen, key, value, attention_mask, **kwargs)

    monkeypatch.setitem(AttentionInterface._global_mapping, "team_attn", team_attn)


def team_mask(monkeypatch, window: int | None, calls: list[int]) -> None:
    """The team's mask for its attention, registered under the same name (``create_causal_mask``
    reads it): causal, or causal within a sliding ``window``; ``calls`` counts its uses."""
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask, sliding_window_causal_mask_function

    def team_attn_mask(*args, **kwargs):
        calls.append(1)
        if window is not None:
            kwargs = {**kwargs, "mask_function": sliding_window_causal_mask_function(window),
                      "allow_is_causal_skip": False}
        return sdpa_mask(*args, **kwargs)

    monkeypatch.setitem(AttentionMaskInterface._global_mapping, "team_attn", team_attn_mask)


def sdpa_rebound(monkeypatch) -> None:
    """The user's attention kernel in place of torch's (sparse attention research does this): the
    library's attention reads it through ``torch.nn.functional`` when it runs."""
    stock = torch.nn.functional.scaled_dot_product_attention

    def sparse_sdpa(query, key, value, *args, **kwargs):
        return stock(query * 2.0, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", sparse_sdpa)


GLOBAL_CHANGES = {"rope_rebound": rope_rebound, "rotate_rebound": rotate_rebound, "sdpa_rebound": sdpa_rebound}


class ScaledLinears(torch.overrides.TorchFunctionMode):
    """A mode around the call that rewrites an op (as fake-quantization and sparsity simulators
    do): every linear's output scaled by ``k``.  Not in the model: in the call."""

    def __init__(self, k: float) -> None:
        super().__init__()
        self.k = k

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        return out * self.k if func is torch.nn.functional.linear else out
