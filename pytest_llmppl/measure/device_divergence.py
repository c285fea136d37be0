"""The divergence's device side, inside the engine's loop (torch): a baseline's dense top-k picked
per chunk of logits, a candidate's per-token divergence from it, the seeded draws, and the
reference uploaded once and handed out per batch.  The records and statistics they fill are
``divergence``'s."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .divergence import TAIL_SAMPLES

if TYPE_CHECKING:
    from .windows import Window


def window_noise(window: int, n_positions: int, m: int = TAIL_SAMPLES) -> Any:
    """Uniform noise in (0, 1) for a window's draws from the rest, seeded by its index (made on
    the CPU, so a window's draws are the same whatever the device or batch)."""
    import torch

    g = torch.Generator().manual_seed(0x5EED + window)
    return torch.rand(n_positions, m, generator=g, dtype=torch.float64).clamp_(1e-12, 1 - 1e-12)


def dense_topk(log_probs: Any, logits: Any, k: int, noise: Any) -> tuple[Any, ...]:
    """The dense model's reference at each position of a logits chunk [B, c, V]: (top-k ids int32,
    their log-probs float32, m ids drawn from the rest int32, their log-probs float32, the rest's
    mass float32).  ``log_probs``: the float32 log-probs of the chunk as the engine's loss saw them
    (so both sides agree; held no longer than their exponent is); ``noise`` [B, c, m] picks the draws."""
    import torch

    ids = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    probs = log_probs.exp()  # float32: a draw's bias from rounding is far below its sampling noise
    probs.scatter_(-1, ids, 0.0)
    cdf = probs.cumsum_(-1)
    rest = cdf[..., -1]
    drawn = torch.searchsorted(cdf, (noise * rest.unsqueeze(-1)).to(cdf.dtype).contiguous())
    drawn.clamp_(max=logits.shape[-1] - 1)
    del cdf, probs
    return ids.int(), log_probs.gather(-1, ids), drawn.int(), log_probs.gather(-1, drawn), rest.float()


def token_divergence(q_at_ids: Any, q_at_tail: Any, logits: Any, ce: Any, ref_ids: Any, ref_logp: Any,
                     tail_ids: Any, tail_logp: Any, ref_rest: Any, ref_ce: Any) -> tuple[Any, Any, Any]:
    """Per position of a chunk: (KL(P_dense || Q) float32, Δp float32, same argmax bool), from the
    candidate's float32 log-probs at the dense model's top-k ids and draws (``q_at_ids``,
    ``q_at_tail``: the engine's, as its loss saw them), its logits and CE, and the dense model's
    reference at the same positions (``tail_ids``: what ``q_at_tail`` was read at)."""
    import torch

    p_logp = ref_logp.double()
    inside = (p_logp.exp() * (p_logp - q_at_ids.double())).sum(-1)
    drawn = (tail_logp.double() - q_at_tail.double()).mean(-1)
    kl = (inside + ref_rest.double() * drawn).float()
    dp = (torch.exp(-ce.double()) - torch.exp(-ref_ce.double())).float()
    same = logits.argmax(dim=-1) == ref_ids[..., 0].to(torch.long)
    return kl, dp, same


class DeviceReference:
    """A dense model's top-k on the device (uploaded once, like the token stream), handed out per
    batch as [B, L-1, ...] tensors aligned with the forward's positions (unscored ones padded)."""

    def __init__(self, reference: Any, windows: list[Window], chosen: list[int], device: Any):
        import torch

        parts = [getattr(reference, name) for name in reference.PARTS]
        if any(i not in parts[-1] for i in chosen):
            raise ValueError("the reference does not cover every chosen window")
        self.k = reference.k
        self.windows = windows
        self.parts = {i: tuple(torch.as_tensor(part[i]).to(device) for part in parts) for i in chosen}

    def batch(self, group: list[int]) -> tuple[Any, ...]:
        import torch
        import torch.nn.functional as F

        out = []
        for j in range(len(self.parts[group[0]])):
            rows = []
            for i in group:
                t = self.parts[i][j]
                pad = self.windows[i].score_from - 1
                if pad:
                    t = F.pad(t, (0, 0, pad, 0) if t.dim() == 2 else (pad, 0))
                rows.append(t)
            out.append(torch.stack(rows))
        return tuple(out)
