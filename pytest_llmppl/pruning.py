"""Structured pruning of Hugging Face causal LMs with torch-pruning (extra ``[pruning]``).

The recipe is Torch-Pruning's LLM example: group L2-magnitude importance, the same
ratio for hidden size, MLP width and heads, ``lm_head`` ignored, attention heads
kept whole (head_dim unchanged, so RoPE is untouched), ``round_to``.  Afterwards
the config and the attention modules are patched so the model runs and
``save_pretrained`` -> ``from_pretrained`` rebuilds the same shapes.

GQA models (fewer KV heads than query heads) are refused: torch-pruning 1.6's
``DependencyGraph.get_all_groups`` does not terminate on them (seen with
transformers 4.57 and 5.24).  ``prune_mlp(model, ratio)`` prunes only the MLP
width without torch-pruning, which is safe for GQA models too.
"""

from __future__ import annotations

import copy

from .errors import ModelError, SettingsError

SUPPORTED = ("llama", "mistral", "qwen2", "qwen3")


def _check_supported(model) -> None:
    cfg = getattr(model, "config", None)
    if getattr(cfg, "model_type", None) not in SUPPORTED:
        raise ModelError(
            f"prune_causal_lm supports {', '.join(SUPPORTED)} models, not {getattr(cfg, 'model_type', type(model).__name__)!r}."
        )


def is_gqa(model) -> bool:
    cfg = model.config
    return getattr(cfg, "num_key_value_heads", cfg.num_attention_heads) != cfg.num_attention_heads


def prune_causal_lm(model, ratio: float, *, round_to: int = 4, example_inputs=None, copy_model: bool = False):
    """Prune ``ratio`` of hidden channels, MLP channels and attention heads; returns the model.

    ``copy_model=True`` prunes a deep copy and leaves ``model`` untouched.
    """
    import torch

    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0:
        raise SettingsError(f"pruning ratio {ratio!r} is outside [0, 1): pass the share of channels and heads to "
                            "remove, e.g. 0.2")
    _check_supported(model)
    if is_gqa(model):
        cfg = model.config
        raise ModelError(
            f"{type(model).__name__} uses grouped-query attention ({cfg.num_key_value_heads} KV heads for "
            f"{cfg.num_attention_heads} query heads): torch-pruning 1.6 never finishes building its dependency "
            "groups for such models, so this helper refuses them. Prune the MLP only with "
            "pytest_llmppl.pruning.prune_mlp(model, ratio), or use an MHA model."
        )
    try:
        import torch_pruning as tp
    except ImportError as exc:
        raise ModelError("torch-pruning is not installed: pip install 'pytest-llmppl[pruning]'") from exc
    if copy_model:
        model = copy.deepcopy(model)
    if ratio == 0:
        return model
    cfg = model.config
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    device = next(model.parameters()).device
    if example_inputs is None:
        gen = torch.Generator().manual_seed(0)
        example_inputs = torch.randint(0, cfg.vocab_size, (1, 16), generator=gen).to(device)
    num_heads = {}
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            num_heads[m.q_proj] = cfg.num_attention_heads
            num_heads[m.k_proj] = cfg.num_key_value_heads
            num_heads[m.v_proj] = cfg.num_key_value_heads
    # RMSNorm weights are bare parameters: they follow the hidden size (dim 0).
    norms = [(m.weight, 0) for m in model.modules() if type(m).__name__.endswith("RMSNorm")]
    was_training, had_cache = model.training, cfg.use_cache
    cfg.use_cache = False
    model.eval()
    try:
        pruner = tp.pruner.MetaPruner(
            model,
            example_inputs={"input_ids": example_inputs, "use_cache": False},
            importance=tp.importance.GroupMagnitudeImportance(p=2, group_reduction="mean"),
            global_pruning=False,
            pruning_ratio=ratio,
            ignored_layers=[model.lm_head],
            num_heads=num_heads,
            prune_num_heads=True,
            prune_head_dims=False,
            head_pruning_ratio=ratio,
            round_to=round_to,
            output_transform=lambda out: out.logits,
            unwrapped_parameters=norms,
        )
        for group in pruner.step(interactive=True):
            group.prune()
        del pruner
    finally:
        cfg.use_cache = had_cache
        model.train(was_training)
    _patch_after_pruning(model, head_dim)
    return model


def _patch_after_pruning(model, head_dim: int) -> None:
    """Make config and attention modules agree with the pruned weights."""
    cfg = model.config
    cfg.hidden_size = model.lm_head.in_features
    cfg.head_dim = head_dim
    for name, m in model.named_modules():
        if name.endswith("self_attn"):
            heads = m.q_proj.out_features // head_dim
            kv_heads = m.k_proj.out_features // head_dim
            cfg.num_attention_heads, cfg.num_key_value_heads = heads, kv_heads
            m.num_key_value_groups = heads // kv_heads
            for attr, value in (("num_heads", heads), ("num_key_value_heads", kv_heads), ("hidden_size", m.q_proj.out_features)):
                if hasattr(m, attr):
                    setattr(m, attr, value)
        elif name.endswith("mlp") and hasattr(m, "gate_proj"):
            cfg.intermediate_size = m.gate_proj.out_features


def prune_mlp(model, ratio: float, *, round_to: int = 4, copy_model: bool = False):
    """Remove the ``ratio`` of MLP channels with the smallest L2 norm over (gate, up, down) in
    every layer, without torch-pruning: works for GQA models too."""
    import torch

    _check_supported(model)
    if copy_model:
        model = copy.deepcopy(model)
    inter = model.config.intermediate_size
    keep = max(round_to, int(round((inter * (1 - ratio)) / round_to)) * round_to)
    with torch.no_grad():
        for layer in model.model.layers:
            mlp = layer.mlp
            score = (mlp.gate_proj.weight.float().pow(2).sum(1) + mlp.up_proj.weight.float().pow(2).sum(1)
                     + mlp.down_proj.weight.float().pow(2).sum(0))
            idx = torch.topk(score, keep).indices.sort().values
            mlp.gate_proj = _take_rows(mlp.gate_proj, idx)
            mlp.up_proj = _take_rows(mlp.up_proj, idx)
            mlp.down_proj = _take_cols(mlp.down_proj, idx)
    model.config.intermediate_size = keep
    return model


def _take_rows(linear, idx):
    import torch

    out = torch.nn.Linear(linear.in_features, len(idx), bias=linear.bias is not None,
                          device=linear.weight.device, dtype=linear.weight.dtype)
    out.weight.copy_(linear.weight[idx])
    if linear.bias is not None:
        out.bias.copy_(linear.bias[idx])
    return out


def _take_cols(linear, idx):
    import torch

    out = torch.nn.Linear(len(idx), linear.out_features, bias=linear.bias is not None,
                          device=linear.weight.device, dtype=linear.weight.dtype)
    out.weight.copy_(linear.weight[:, idx])
    if linear.bias is not None:
        out.bias.copy_(linear.bias)
    return out
