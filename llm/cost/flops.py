"""Training FLOPs per token, model/hardware FLOPs utilisation, and accelerator peak throughputs.

Two counts of training FLOPs per token (forward + backward = 3× forward, each multiply-add 2 FLOPs):
  * "6N"   6 · N with N the *total* parameter count. This is Chinchilla's C = 6·N·D, the convention the
           scaling laws in llm.scaling.laws were fitted under, so the planner budgets with it.
  * "palm" PaLM (Chowdhery et al. 2022, arXiv:2204.02311) App. B: 6·N + 12·L·H·Q·T, where L layers, H heads,
           Q head_dim, T sequence length; the second term is the attention score and value matmuls (full,
           non-causal T×T, as PaLM counts them). PaLM's N there is the parameters that take part in matmuls;
           PaLM ties its embeddings, so its worked example plugs in the total 540B. For our untied models we
           use `count_matmul_params` (blocks + output projection, no input embedding lookup, no norms).

Mixture-of-experts models (model.moe) count *active* FLOPs: what one token's forward and backward passes multiply.
N is then `count_matmul_params` with each MoE block's router (d_model·E: every token scores every expert), its top_k
routed experts and its shared experts, so "palm" is 6·N_active + 12·L·H·Q·T, PaLM App. B extended with the router
matmul; "6N" is 6 × `count_active_params`. The dispatch and combine (sorting the token copies by expert, gathering
them, scattering the weighted outputs back; the all-to-all under expert parallelism) are permutations and one
multiply-add per element of the combine: memory traffic, not matmul FLOPs, so neither counts (llm/cost/step_time.py
times the all-to-all). The softmax and top-k over E are elementwise, as the attention softmax that PaLM leaves out.

MFU counts only the model's FLOPs (recomputation excluded), so it is comparable across implementations;
HFU adds the forward passes recomputed by activation checkpointing (Korthikanti et al. 2022,
arXiv:2205.05198; PaLM App. B). No torch here.
"""
from __future__ import annotations

from llm.config import ModelConfig
from llm.shape import block_matmul_params, count_active_params, count_matmul_params, layer_matmul_params
from typed_yaml import ConfigError

# Dense (no structured sparsity) peak FLOP/s per chip, by numeric format. Vendor datasheets quote the
# tensor-core numbers "with sparsity"; those are halved here. fp32 is the non-tensor-core (CUDA core) rate.
PEAK_FLOPS: dict[str, dict[str, float]] = {
    # NVIDIA H100 Tensor Core GPU datasheet (SXM5): 1,979 TFLOPS bf16/fp16 with sparsity, 67 TFLOPS fp32.
    "h100-sxm": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    # Same datasheet, PCIe card: 1,513 TFLOPS bf16 with sparsity, 51 TFLOPS fp32.
    "h100-pcie": {"bf16": 756.5e12, "fp16": 756.5e12, "tf32": 378.0e12, "fp32": 51.2e12},
    # NVIDIA H200 datasheet (SXM): the H100 SXM compute with more, faster memory.
    "h200": {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12},
    # NVIDIA A100 datasheet (SXM4 and PCIe, 40 and 80 GB alike): 312 TFLOPS bf16/fp16 dense, 19.5 fp32.
    "a100": {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    # NVIDIA V100 SXM2 datasheet: 125 TFLOPS fp16 tensor, 15.7 fp32. No bf16 support in hardware.
    "v100": {"fp16": 125e12, "fp32": 15.7e12},
    # Google Cloud TPU system architecture docs, per chip; v4's 275 is the figure PaLM App. B uses.
    "tpu-v3": {"bf16": 123e12},
    "tpu-v4": {"bf16": 275e12},
    "tpu-v5e": {"bf16": 197e12},
    "tpu-v5p": {"bf16": 459e12},
    # AMD Instinct MI300X datasheet: 1,307.4 TFLOPS bf16/fp16 dense, 163.4 fp32 (vector).
    "mi300x": {"bf16": 1307.4e12, "fp16": 1307.4e12, "fp32": 163.4e12},
}
ALIASES = {"h100": "h100-sxm", "a100-40gb": "a100", "a100-80gb": "a100", "v100-sxm2": "v100",
           "tpuv3": "tpu-v3", "tpuv4": "tpu-v4", "tpuv5e": "tpu-v5e", "tpuv5p": "tpu-v5p"}


def datasheet_peak_flops(accelerator: str, dtype: str = "bf16") -> float:
    """Dense peak FLOP/s of one chip, from its datasheet (PEAK_FLOPS), by name. Raises ConfigError listing the known
    names or formats. llm/train/hardware.py `peak_flops` gives a torch device's peak and its source, timing it where
    no datasheet applies."""
    key = accelerator.strip().lower().replace("_", "-").replace(" ", "-")
    key = ALIASES.get(key, key)
    if key not in PEAK_FLOPS:
        raise ConfigError(f"unknown accelerator {accelerator!r}; known: "
                         f"{', '.join(sorted(set(PEAK_FLOPS) | set(ALIASES)))}")
    table = PEAK_FLOPS[key]
    if dtype not in table:
        raise ConfigError(f"no {dtype} peak listed for {key}; listed: {', '.join(table)}")
    return table[dtype]


def attention_flops_per_token(n_layers: int, n_heads: int, head_dim: int, seq_len: int) -> float:
    """PaLM App. B's 12·L·H·Q·T: QKᵀ and attention·V, 2 FLOPs per MAC, ×3 for forward + backward."""
    return 12.0 * n_layers * n_heads * head_dim * seq_len


def palm_flops_per_token(n_params: float, n_layers: int, n_heads: int, head_dim: int, seq_len: int) -> float:
    """6·N + 12·L·H·Q·T (PaLM App. B), for any model given its matmul parameter count N."""
    return 6.0 * n_params + attention_flops_per_token(n_layers, n_heads, head_dim, seq_len)


def layer_flops_per_token(cfg: ModelConfig) -> float:
    """Training FLOPs per token of one transformer block: PaLM App. B's 6·N_layer + 12·H·Q·T, N_layer its
    matmul weights. The model's PaLM count is n_layers of these plus 6× the output projection."""
    return palm_flops_per_token(layer_matmul_params(cfg), 1, cfg.n_heads, cfg.head_dim, cfg.seq_len)


def block_flops_per_token(cfg: ModelConfig, i: int) -> float:
    """Training FLOPs per token of block i: `layer_flops_per_token`, or for an MoE block 6 × its active matmul
    weights (router, top_k experts, shared) + 12·H·Q·T."""
    if not cfg.is_moe_layer(i):
        return layer_flops_per_token(cfg)
    return palm_flops_per_token(block_matmul_params(cfg, i, active=True), 1, cfg.n_heads, cfg.head_dim, cfg.seq_len)


def flops_per_token(cfg: ModelConfig, method: str = "palm") -> float:
    """Training FLOPs per token: '6N' (total parameters, Chinchilla; the active ones for an MoE model) or 'palm'
    (PaLM App. B, active for an MoE model; see module doc)."""
    if method == "6N":
        return 6.0 * count_active_params(cfg)
    if method == "palm":
        return palm_flops_per_token(count_matmul_params(cfg), cfg.n_layers, cfg.n_heads, cfg.head_dim,
                                    cfg.seq_len)
    raise ConfigError(f"method={method!r} must be '6N' or 'palm'")


def mfu(tokens_per_s: float, cfg: ModelConfig, peak_flops: float, n_devices: int = 1,
        method: str = "palm") -> float:
    """Model FLOPs utilisation: model FLOPs actually needed per second over the peak of `n_devices` chips.
    Recomputation never counts here. tokens_per_s is the global throughput."""
    return tokens_per_s * flops_per_token(cfg, method) / (peak_flops * n_devices)


def hfu_flops_per_token(cfg: ModelConfig, recomputed_layers: int = 0) -> float:
    """FLOPs the hardware executes per trained token: the PaLM count plus one forward pass of each of the
    `recomputed_layers` blocks activation checkpointing recomputes. Raises ValueError outside [0, n_layers]."""
    if not 0 <= recomputed_layers <= cfg.n_layers:
        raise ConfigError(f"recomputed_layers={recomputed_layers} must be in [0, n_layers={cfg.n_layers}]")
    # One forward of a block is a third of its training FLOPs (backward is twice the forward).
    if cfg.moe is None:
        return flops_per_token(cfg, "palm") + recomputed_layers * layer_flops_per_token(cfg) / 3.0
    # MoE: blocks differ; the recomputed ones are taken at the mean block's cost (exact for every_k_layers=1).
    mean_block = sum(block_flops_per_token(cfg, i) for i in range(cfg.n_layers)) / cfg.n_layers
    return flops_per_token(cfg, "palm") + recomputed_layers * mean_block / 3.0


def hfu(tokens_per_s: float, cfg: ModelConfig, peak_flops: float, n_devices: int = 1,
        recomputed_layers: int = 0) -> float:
    """Hardware FLOPs utilisation: MFU's FLOPs plus one extra forward pass through each of the
    `recomputed_layers` blocks that activation checkpointing recomputes (PaLM formula, per layer)."""
    return tokens_per_s * hfu_flops_per_token(cfg, recomputed_layers) / (peak_flops * n_devices)


def mfu_from_flops(tokens_per_s: float, model_flops_per_token: float, peak_flops: float,
                   n_devices: int = 1) -> float:
    """MFU for a model described only by its FLOPs per token (e.g. a published model)."""
    return tokens_per_s * model_flops_per_token / (peak_flops * n_devices)
