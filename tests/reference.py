"""Independent reference loops, written from the protocols' formulas (not from the engine).

Torch-Pruning: windows of seqlen, CE mean over seqlen-1 shifted tokens, NLL = loss * seqlen,
PPL = exp(sum NLL / (nsamples * seqlen)).  tokens: sum CE / (nsamples * (seqlen-1)).
sliding: the Hugging Face perplexity guide's loop, using the model's own loss on -100-masked labels.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


@torch.no_grad()
def tp_window_nlls(model, ids, seqlen, indices=None):
    ids = torch.as_tensor(ids).view(1, -1)
    n = ids.numel() // seqlen
    out = []
    for i in (range(n) if indices is None else indices):
        x = ids[:, i * seqlen:(i + 1) * seqlen]
        logits = model(x).logits.float()
        loss = nn.CrossEntropyLoss()(logits[:, :-1, :].reshape(-1, logits.shape[-1]), x[:, 1:].reshape(-1))
        out.append(loss.double().item() * seqlen)
    return out


def tp_ppl(model, ids, seqlen, indices=None):
    nlls = tp_window_nlls(model, ids, seqlen, indices)
    return math.exp(sum(nlls) / (len(nlls) * seqlen))


@torch.no_grad()
def tokens_ppl(model, ids, seqlen, indices=None):
    ids = torch.as_tensor(ids).view(1, -1)
    n = ids.numel() // seqlen
    total, count = 0.0, 0
    for i in (range(n) if indices is None else indices):
        x = ids[:, i * seqlen:(i + 1) * seqlen]
        logits = model(x).logits.float()
        ce = nn.functional.cross_entropy(logits[0, :-1], x[0, 1:], reduction="sum")
        total += ce.double().item()
        count += seqlen - 1
    return math.exp(total / count)


@torch.no_grad()
def sliding_ppl(model, ids, seqlen, stride):
    encodings = torch.as_tensor(ids).view(1, -1)
    seq_len = encodings.size(1)
    nll_sum, n_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, seq_len, stride):
        end = min(begin + seqlen, seq_len)
        trg_len = end - prev_end
        input_ids = encodings[:, begin:end]
        target_ids = input_ids.clone()
        target_ids[:, :-trg_len] = -100
        loss = model(input_ids, labels=target_ids).loss
        num_valid = (target_ids != -100).sum().item()
        num_loss_tokens = num_valid - target_ids.size(0) if trg_len == end - begin else num_valid
        nll_sum += loss.double().item() * num_loss_tokens
        n_tokens += num_loss_tokens
        prev_end = end
        if end == seq_len:
            break
    return math.exp(nll_sum / n_tokens)
