"""Our DPO, GRPO, Dr. GRPO and RLOO losses against TRL's on identical inputs (TRL is in setup.py's test extra).

TRL (1.16) computes each loss inside a trainer method (`DPOTrainer._compute_loss`, `GRPOTrainer._compute_loss`,
`RLOOTrainer._compute_loss`) that runs the policy's forward itself. Building a whole trainer needs datasets,
tokenization and a training loop, so each trainer is made with `object.__new__` and given only the attributes its
`_compute_loss` reads, with the same names and values its `__init__` derives from a real config object. The policy
is a real random-init LlamaForCausalLM (which TRL patches with its fused LM head, as its trainers do); ours is our
Transformer holding the same weights (llm/hf import). The reference and old log-probabilities and the advantages
are the same tensors for both. What differs is then only the two models' fp32 rounding (logits agree to 1e-5,
tests/llm/hf) and the loss code under test.

TRL computes GRPO's and RLOO's advantages inline in `_generate_and_score_completions`, which also generates and
scores: there is no callable piece to compare ours (llm/align/losses.py, tested on hand-computed cases) with.
"""
from collections import defaultdict

import pytest
import torch

from llm.align import losses as L
from llm.align.dpo import sequence_logprobs
from llm.align.rollout import response_logprobs

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

# Per-token log-probs of the two models agree to ~1e-6 (fp32 rounding); the losses then to ~1e-6 relative.
LOSS_RTOL, LOSS_ATOL = 1e-5, 1e-7
PROMPT, COMPLETION, BATCH = 5, 7, 8


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """(HF LlamaForCausalLM with TRL's fused LM head, our Transformer with the same weights)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl.trainer.utils import add_fused_lm_head
    from llm.hf.load import read_hf_config, read_hf_weights
    from llm.model import Transformer
    path = tmp_path_factory.mktemp("trl_oracle") / "hf"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=32, rms_norm_eps=1e-6,
                         tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(str(path))
    hf = LlamaForCausalLM.from_pretrained(str(path))
    add_fused_lm_head(hf, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))
    ours = Transformer(read_hf_config(path))
    ours.load_state_dict(read_hf_weights(path))
    return hf.train(), ours.train()


def _trainer(cls, model, **attrs):
    """A TRL trainer holding only what its _compute_loss reads (no dataset, no training loop; see the docstring)."""
    from accelerate import Accelerator
    t = object.__new__(cls)
    t.model, t.accelerator = model, Accelerator(cpu=True)
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t.aux_loss_enabled = False
    for k, v in attrs.items():
        setattr(t, k, v)
    return t


def _rollout(seed=1):
    """Equal-length prompts (TRL left-pads them; no padding keeps the two position layouts equal), right-padded
    completions of varying length, and perturbed old/reference log-probs (ratios away from 1, clipped and not)."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(3, 96, (BATCH, PROMPT), generator=g)
    completion = torch.randint(3, 96, (BATCH, COMPLETION), generator=g)
    lengths = torch.randint(2, COMPLETION + 1, (BATCH,), generator=g)
    mask = (torch.arange(COMPLETION)[None] < lengths[:, None]).long()
    return prompt, completion * mask, mask, g


def _our_completion_logprobs(ours, prompt, completion):
    tokens = torch.cat([prompt, completion], 1)
    # Response token k sits at position PROMPT + k and is scored by logits at PROMPT + k − 1.
    return response_logprobs(ours(tokens), tokens)[:, PROMPT - 1:]


@pytest.mark.parametrize("loss_type", ["grpo", "dr_grpo"])
def test_grpo_loss_equals_trls(models, loss_type):
    from trl import GRPOConfig, GRPOTrainer
    hf, ours = models
    prompt, completion, mask, g = _rollout()
    # use_bias_correction_kl (TRL's default) weights each token's KL by π/π_old; DeepSeekMath's eq. 3, which ours
    # follows, does not (on the first update, π = π_old, the two agree).
    args = GRPOConfig(output_dir="unused", beta=0.04, loss_type=loss_type, max_completion_length=COMPLETION,
                      use_bias_correction_kl=False, report_to=[], use_cpu=True)
    with torch.no_grad():
        logp = _our_completion_logprobs(ours, prompt, completion)
    old = (logp + 0.3 * torch.randn(logp.shape, generator=g)) * mask
    ref = (logp + 0.5 * torch.randn(logp.shape, generator=g)) * mask
    adv = L.group_advantages(3 * torch.randn(BATCH // 4, 4, generator=g), scale=loss_type == "grpo")
    trainer = _trainer(GRPOTrainer, hf, args=args, beta=args.beta, loss_type=args.loss_type,
                       epsilon_low=args.epsilon, epsilon_high=args.epsilon, max_completion_length=COMPLETION,
                       top_entropy_quantile=args.top_entropy_quantile, use_vllm=False,
                       off_policy_mask_threshold=args.off_policy_mask_threshold,
                       importance_sampling_level=args.importance_sampling_level,
                       _entropy_bonus_enabled=False, current_gradient_accumulation_steps=1)
    theirs = trainer._compute_loss(hf, {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt),
                                        "completion_ids": completion, "completion_mask": mask,
                                        "advantages": adv, "old_per_token_logps": old,
                                        "ref_per_token_logps": ref})
    mine, _ = L.grpo_loss(_our_completion_logprobs(ours, prompt, completion), old, ref, adv, mask.float(),
                           args.epsilon, args.beta, BATCH, dr_grpo=loss_type == "dr_grpo",
                           max_new_tokens=COMPLETION)
    torch.testing.assert_close(mine, theirs, rtol=LOSS_RTOL, atol=LOSS_ATOL)
    assert abs(theirs.item()) > 1e-2  # a loss that could differ, not a cancelled zero


def test_dpo_loss_equals_trls(models):
    from trl import DPOTrainer
    hf, ours = models
    g = torch.Generator().manual_seed(2)
    n, width = 4, PROMPT + COMPLETION
    tokens = torch.randint(3, 96, (2 * n, width), generator=g)
    lengths = torch.randint(PROMPT + 2, width + 1, (2 * n,), generator=g)
    attention = (torch.arange(width)[None] < lengths[:, None]).long()
    completion = attention * (torch.arange(width)[None] >= PROMPT).long()
    tokens = tokens * attention
    ref = -torch.rand(2 * n, generator=g) * 20
    beta = 0.1
    trainer = _trainer(DPOTrainer, hf, ld_alpha=None, precompute_ref_logps=True, f_divergence_type="reverse_kl",
                       loss_types=["sigmoid"], loss_weights=[1.0], beta=beta, use_weighting=False,
                       label_smoothing=0.0, _total_train_tokens=0, _tp_size=1)
    theirs = trainer._compute_loss(hf, {"input_ids": tokens, "attention_mask": attention,
                                        "completion_mask": completion, "ref_chosen_logps": ref[:n],
                                        "ref_rejected_logps": ref[n:]}, return_outputs=False)
    targets = tokens[:, 1:].masked_fill(completion[:, 1:] == 0, L.IGNORE_INDEX)
    lp = sequence_logprobs(ours(tokens), targets)
    mine, _ = L.dpo_loss(lp[:n], lp[n:], ref[:n], ref[n:], beta)
    torch.testing.assert_close(mine, theirs, rtol=LOSS_RTOL, atol=LOSS_ATOL)


def test_rloo_gradient_equals_trls_on_policy(models):
    """TRL's RLOO clips the sequence's ratio exp(Σ log π − Σ log π_old); ours clips each token's ratio and sums
    the terms (llm/align/losses.py). The two are REINFORCE on the sequence log-probability at the first update
    (π = π_old): equal gradients, while the loss values differ by each sequence's length (TRL: −A, ours: −A·|o|).
    Past the first update (grpo_rloo.epochs > 1) they are different objectives, which is why only the gradient at
    π = π_old is compared."""
    from trl import RLOOConfig, RLOOTrainer
    from llm.hf.convert import to_hf_name
    hf, ours = models
    prompt, completion, mask, g = _rollout(seed=3)
    args = RLOOConfig(output_dir="unused", report_to=[], use_cpu=True)
    adv = L.rloo_advantages(torch.rand(BATCH // 4, 4, generator=g))
    with torch.no_grad():
        old_seq = (_our_completion_logprobs(ours, prompt, completion) * mask).sum(1)
    trainer = _trainer(RLOOTrainer, hf, epsilon_low=args.epsilon, epsilon_high=args.epsilon)
    hf.zero_grad()
    trainer._compute_loss(hf, {"prompt_ids": prompt, "prompt_mask": torch.ones_like(prompt),
                               "completion_ids": completion, "completion_mask": mask, "advantages": adv,
                               "old_logps": old_seq}).backward()
    ours.zero_grad()
    logp = _our_completion_logprobs(ours, prompt, completion)
    L.rloo_loss(logp, logp.detach(), adv, mask.float(), args.epsilon, BATCH)[0].backward()
    theirs = dict(hf.named_parameters())
    worst = max(((p.grad - theirs[to_hf_name(k)].grad).abs().max() / theirs[to_hf_name(k)].grad.abs().max()).item()
                for k, p in ours.named_parameters())
    assert worst < 1e-4, worst
