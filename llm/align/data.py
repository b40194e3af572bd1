"""Chat-template encoding and batches: SFT rows with the prompt masked, preference pairs, prompt groups.

Every sequence is encode(template_prompt) + encode(template_response) + [EOS] (no BOS: the base model is
pretrained on documents that end with EOS and start without BOS). Rows are right-padded with PAD (id 0); the
model is causal, so right padding never changes the logits of real positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.tokenizer import PAD_ID, UNK_ID, Tokenizer
from llm.align.config import TaskConfig
from llm.align.losses import IGNORE_INDEX


def encode_prompt(tok: Tokenizer, task: TaskConfig, prompt: str) -> list[int]:
    return tok.encode(task.template_prompt.format(prompt=prompt))


def encode_response(tok: Tokenizer, task: TaskConfig, response: str) -> list[int]:
    """Response tokens including the closing EOS."""
    return tok.encode(task.template_response.format(response=response)) + [tok.eos_id]


def decode_response(tok: Tokenizer, ids: list[int]) -> str:
    """Text of generated response ids, cut at the first EOS. Ids past the tokenizer's vocabulary (the embedding
    table is rounded up) decode as unknown, which the checker rejects."""
    ids = list(ids)
    if tok.eos_id in ids:
        ids = ids[:ids.index(tok.eos_id)]
    return tok.decode([i if i < tok.vocab_size else UNK_ID for i in ids])


def sft_example(tok: Tokenizer, task: TaskConfig, prompt: str, response: str) -> tuple[list[int], list[int]]:
    """(tokens, targets) of one example: targets[i] is tokens[i+1] on response positions, IGNORE_INDEX on the
    prompt (the loss sees only what the model should write), so len(targets) == len(tokens) - 1."""
    p, r = encode_prompt(tok, task, prompt), encode_response(tok, task, response)
    tokens = p + r
    targets = [IGNORE_INDEX] * (len(p) - 1) + r
    return tokens, targets


def sft_batch(examples: list[tuple[list[int], list[int]]], seq_len: int, packing: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), both (rows, width) int64. Without packing one example per row (width = longest - 1);
    with packing, examples are laid end to end in rows of seq_len tokens (greedy first fit), each keeping its
    own prompt mask. Packed examples attend to earlier ones in the row (no block-diagonal mask: the Transformer
    takes none), the cheap packing TRL's `packing=True` does too."""
    rows: list[tuple[list[int], list[int]]] = []
    for tokens, targets in examples:
        inp = tokens[:-1]
        if len(inp) > seq_len:
            raise ValueError(f"example of {len(tokens)} tokens does not fit seq_len={seq_len}")
        if packing:
            for row in rows:
                if len(row[0]) + len(inp) <= seq_len:
                    row[0].extend(inp)
                    row[1].extend(targets)
                    break
            else:
                rows.append((list(inp), list(targets)))
        else:
            rows.append((list(inp), list(targets)))
    width = max(len(r[0]) for r in rows)
    inputs = torch.full((len(rows), width), PAD_ID, dtype=torch.long)
    tgts = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    for i, (inp, t) in enumerate(rows):
        inputs[i, :len(inp)] = torch.tensor(inp)
        tgts[i, :len(t)] = torch.tensor(t)
    return inputs, tgts


@dataclass
class PairBatch:
    """Chosen and rejected sequences stacked as one (2·n, width) batch: rows [0, n) chosen, [n, 2n) rejected."""

    tokens: torch.Tensor
    targets: torch.Tensor
    """Next-token targets (batch, width-1) with the prompt masked, for sequence log-probs (DPO)."""
    last_index: torch.Tensor
    """Position of each row's final (EOS) token, where the reward model reads its score."""

    @property
    def n_pairs(self) -> int:
        return self.tokens.shape[0] // 2


def pair_batch(tok: Tokenizer, task: TaskConfig, rows: list[dict]) -> PairBatch:
    examples = [sft_example(tok, task, r["prompt"], r["chosen"]) for r in rows] + \
               [sft_example(tok, task, r["prompt"], r["rejected"]) for r in rows]
    width = max(len(t) for t, _ in examples)
    tokens = torch.full((len(examples), width), PAD_ID, dtype=torch.long)
    targets = torch.full((len(examples), width - 1), IGNORE_INDEX, dtype=torch.long)
    last = torch.empty(len(examples), dtype=torch.long)
    for i, (t, g) in enumerate(examples):
        tokens[i, :len(t)] = torch.tensor(t)
        targets[i, :len(g)] = torch.tensor(g)
        last[i] = len(t) - 1
    return PairBatch(tokens, targets, last)


def group_by_length(prompt_ids: list[list[int]]) -> dict[int, list[int]]:
    """Indices of prompts grouped by token length: generate() takes equal-length prompts (no left padding, as
    the Transformer has no attention mask)."""
    groups: dict[int, list[int]] = {}
    for i, ids in enumerate(prompt_ids):
        groups.setdefault(len(ids), []).append(i)
    return groups
