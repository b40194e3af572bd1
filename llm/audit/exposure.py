"""Exposure of a canary (Carlini et al. 2019, "The Secret Sharer", arXiv:1802.08232, Sec. 4).

The log-perplexity of a sequence s is ``-sum_i log2 P(s_i | s_<i)``. Exposure is
``log2 |R| - log2 rank(s)``, the rank of the canary's log-perplexity among every candidate of the space R
its generator draws from (rank 1: the most likely). R holds V^32 random-token sequences or 10^9 secrets,
so the rank is estimated from K candidates sampled from the same generator, two ways:

* sampling (Sec. 4.2): the fraction of candidates more likely than the canary estimates rank/|R|. It is
  exact in expectation but caps at log2(K + 1) bits.
* extrapolation (Sec. 4.3, "approximation by distribution modeling"): fit a skew-normal to the
  candidates' log-perplexities and read the canary's tail probability from it, which goes past the cap.
  This is the figure reported as ``exposure``.

A canary the model never saw is one more draw from the candidates' distribution: its rank fraction is
uniform, so its expected exposure is E[-log2 U] = 1/ln 2 ≈ 1.44 bits (``CHANCE_BITS``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import skewnorm

CHANCE_BITS = 1.0 / math.log(2.0)


@torch.no_grad()
def log_perplexity(model: torch.nn.Module, seqs: list[list[int]], context_id: int, batch_size: int = 64,
                   on_batch=None) -> np.ndarray:
    """Bits: ``-sum log2 P(token | context_id, earlier tokens)`` of each sequence, as the model saw it in
    training (every canary follows the previous document's EOD, ``context_id``).

    ``model(tokens)`` maps (batch, t) int64 to (batch, t, vocab) logits; ``on_batch(n)`` reports progress.
    """
    device = next(model.parameters()).device
    out = np.empty(len(seqs))
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start:start + batch_size]
        t = max(len(s) for s in chunk)
        targets = torch.full((len(chunk), t), -100, dtype=torch.long)
        for row, s in enumerate(chunk):
            targets[row, :len(s)] = torch.tensor(s)
        inputs = torch.cat([torch.full((len(chunk), 1), context_id), targets[:, :-1].clamp(min=0)], 1)
        logits = model(inputs.to(device)).float()
        nll = F.cross_entropy(logits.transpose(1, 2), targets.to(device), ignore_index=-100, reduction="none")
        out[start:start + len(chunk)] = (nll.sum(1) / math.log(2.0)).cpu().numpy()
        if on_batch is not None:
            on_batch(len(chunk))
    return out


def exposure_sampled(canary_bits: float, candidate_bits: np.ndarray) -> float:
    """``-log2`` of the canary's estimated rank fraction among the candidates; ties count half, so a model
    indifferent to every sequence gives about 1 bit. At most log2(K + 1)."""
    below = float(np.sum(candidate_bits < canary_bits)) + 0.5 * float(np.sum(candidate_bits == canary_bits))
    return -math.log2((1.0 + below) / (len(candidate_bits) + 1.0))


def fit_candidates(candidate_bits: np.ndarray) -> tuple[float, float, float]:
    """Skew-normal (shape, loc, scale) of the candidates' log-perplexities (Carlini et al. 2019, Sec. 4.3)."""
    bits = np.asarray(candidate_bits, dtype=np.float64)
    if np.ptp(bits) == 0.0:  # a degenerate fit: every candidate equally likely
        return 0.0, float(bits[0]), 1e-12
    return tuple(float(x) for x in skewnorm.fit(bits))


def exposure_extrapolated(canary_bits: float, fit: tuple[float, float, float],
                          space_bits: float = math.inf) -> float:
    """``-log2 P(candidate at most as perplexing as the canary)`` under the fitted skew-normal, at most
    ``space_bits`` = log2 of the number of possible canaries: exposure is log2|R| - log2 rank (Carlini et al.
    2019 Def. 4), so the fitted tail cannot give more than ranking first."""
    return min(space_bits, max(0.0, -float(skewnorm.logcdf(canary_bits, *fit)) / math.log(2.0)))


def space_bits(spec: dict, kind: str) -> float:
    """log2 of the number of canaries the generator ``spec`` (data_pipeline/canaries.py) can draw of ``kind``."""
    if kind == "random":
        g = spec["random"]
        return g["length"] * math.log2(g["vocab_size"] - len(g["excluded_ids"]))
    return spec["secret"]["digits"] * math.log2(10)
