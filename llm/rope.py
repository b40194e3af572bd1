"""Rotary position tables: RoPE's frequencies (Su et al. 2021, arXiv:2104.09864), optionally rescaled for a context
longer than the trained one (`ModelConfig.rope_scaling`).

Three rescalings, each the function transformers computes for the same `rope_type`
(`transformers.modeling_rope_utils.ROPE_INIT_FUNCTIONS`), so an exported model is the same function; the tests
compare the tables and the logits (tests/llm/test_rope.py):
  linear   position interpolation (Chen et al. 2023, arXiv:2306.15595): every frequency divided by the factor.
  llama3   Llama 3.1's (Dubey et al. 2024, arXiv:2407.21783, and Meta's reference code): wavelengths longer than
           original_seq_len / low_freq_factor are interpolated, shorter than original_seq_len / high_freq_factor
           kept, and the band between mixed by a linear ramp in original_seq_len / wavelength.
  yarn     YaRN (Peng et al. 2023, arXiv:2309.00071): "NTK-by-parts" interpolation, a ramp over the dimensions between
           the one that turns beta_fast times over original_seq_len (kept) and the one that turns beta_slow times
           (interpolated), plus an attention temperature folded into cos and sin (transformers multiplies cos/sin by
           its `attention_scaling`, so q·k is scaled by its square).
Computed in float64 and stored in float32; transformers computes in float32, a difference of rounding only.
"""
from __future__ import annotations

import math

import torch

from llm.config.model import RopeScalingConfig


def inverse_frequencies(head_dim: int, theta: float, seq_len: int,
                        scaling: RopeScalingConfig | None = None) -> tuple[torch.Tensor, float]:
    """(inverse frequencies (head_dim/2,) float64 in radians per position, the factor on cos/sin) for a model whose
    rotary tables cover `seq_len` positions (the factor defaults to seq_len / original_seq_len)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    if scaling is None:
        return inv_freq, 1.0
    factor = scaling.resolved_factor(seq_len)
    if scaling.type == "linear":
        return inv_freq / factor, 1.0
    if scaling.type == "llama3":
        return _llama3(inv_freq, factor, scaling), 1.0
    if scaling.type == "yarn":
        return _yarn(inv_freq, head_dim, theta, factor, scaling)
    raise ValueError(f"unknown rope scaling {scaling.type!r}")  # RopeScalingConfig.validate refuses it first


def _llama3(inv_freq: torch.Tensor, factor: float, s: RopeScalingConfig) -> torch.Tensor:
    wavelen = 2 * math.pi / inv_freq
    low_freq_wavelen = s.original_seq_len / s.low_freq_factor    # longer: interpolate fully
    high_freq_wavelen = s.original_seq_len / s.high_freq_factor  # shorter: keep
    smooth = (s.original_seq_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    mixed = (1 - smooth) * inv_freq / factor + smooth * inv_freq
    out = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    medium = (wavelen <= low_freq_wavelen) & (wavelen >= high_freq_wavelen)
    return torch.where(medium, mixed, out)


def _yarn(inv_freq: torch.Tensor, head_dim: int, theta: float, factor: float,
          s: RopeScalingConfig) -> tuple[torch.Tensor, float]:
    def dim_turning(turns: float) -> float:
        # The dimension d whose wavelength 2π·θ^(d/head_dim) fits `turns` times into original_seq_len.
        return head_dim * math.log(s.original_seq_len / (turns * 2 * math.pi)) / (2 * math.log(theta))

    low, high = dim_turning(s.beta_fast), dim_turning(s.beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, head_dim - 1)
    if low == high:
        high += 0.001  # transformers' guard against a zero-width ramp
    ramp = ((torch.arange(head_dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    keep = 1 - ramp  # 1: extrapolate (the original frequency), 0: interpolate (frequency / factor)
    inv_freq = inv_freq / factor * (1 - keep) + inv_freq * keep
    # √(1/t) = 0.1·ln(s) + 1: the attention temperature YaRN recommends (Peng et al. 2023), on q and k through cos/sin.
    attention = s.attention_factor if s.attention_factor is not None else 0.1 * math.log(factor) + 1.0
    return inv_freq, attention


def rope_tables(head_dim: int, max_len: int, theta: float,
                scaling: RopeScalingConfig | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(cos, sin), each (max_len, head_dim/2) float32, for positions [0, max_len); with `scaling`, the rescaled
    frequencies of a model whose seq_len is max_len, and YaRN's attention factor multiplied in."""
    inv_freq, attention = inverse_frequencies(head_dim, theta, max_len, scaling)
    angles = torch.outer(torch.arange(max_len, dtype=torch.float64), inv_freq)
    return (angles.cos() * attention).float(), (angles.sin() * attention).float()
