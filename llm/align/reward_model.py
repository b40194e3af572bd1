"""A scalar value head on the unchanged Transformer: the reward model, and the PPO critic initialised from it.

`RewardModel.body` is an llm/model.py Transformer (its blocks reused as they are, so a language-model
checkpoint loads into it by name); `v_head` maps the final-norm hidden state of each position to a scalar.
The RM's reward for a sequence is the value at its last token (the EOS that closes the response), as in
InstructGPT; the critic uses the values at every response position. The body's `lm_head` is kept (the
state dict stays that of the LM) but frozen, since no loss reaches it. `normalised_score` is the reward the RL
stages read from it. (The `rm` stage that trains it: llm/align/reward_training.py; reward functions:
llm/align/reward_functions.py.)
"""
from __future__ import annotations

import torch
from torch import nn

from llm.config import ModelConfig
from llm.model import Transformer


def hidden_states(model: Transformer, tokens: torch.Tensor) -> torch.Tensor:
    """(batch, seq) → (batch, seq, d_model): Transformer.forward without the LM head."""
    x = model.tok_embeddings(tokens)
    for layer in model.layers:
        x = layer(x)
    return model.norm(x)


class RewardModel(nn.Module):
    def __init__(self, cfg: ModelConfig, seed: int = 0):
        super().__init__()
        self.cfg = cfg
        self.body = Transformer(cfg, seed=seed)
        self.body.lm_head.weight.requires_grad_(False)
        self.v_head = nn.Linear(cfg.d_model, 1, bias=True)
        # A small init keeps the initial rewards near 0 (the RM starts from an indifferent scorer).
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        with torch.no_grad():
            self.v_head.weight.copy_(torch.randn(self.v_head.weight.shape, generator=gen) / (cfg.d_model + 1) ** 0.5)
            self.v_head.bias.zero_()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-position values (batch, seq) in fp32."""
        return self.v_head(hidden_states(self.body, tokens)).squeeze(-1).float()

    def score(self, tokens: torch.Tensor, last_index: torch.Tensor) -> torch.Tensor:
        """Reward of each right-padded sequence: the value at `last_index` (its EOS position), shape (batch,)."""
        values = self(tokens)
        return values.gather(1, last_index[:, None]).squeeze(1)


def normalised_score(raw: torch.Tensor, stats: tuple[float, float], clip: float, ended: torch.Tensor) -> torch.Tensor:
    """The reward PPO and the grpo_rloo stage take from the RM: its raw score normalised by the (mean, std) it recorded
    on held-out responses (llm/align/handoff.py `reward_stats`; InstructGPT normalises its RM so that demonstrations
    score 0), clipped to ±clip. The RM only ever scored EOS-terminated answers; an unfinished one (`ended` False)
    gets the lowest score, -clip, instead of the RM's extrapolation (which PPO otherwise learns to exploit; TRL's
    `missing_eos_penalty` does the same)."""
    mean, std = stats
    score = ((raw - mean) / std).clamp(-clip, clip)
    return torch.where(ended, score, torch.full_like(score, -clip))
