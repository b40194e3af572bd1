"""Batches of the alignment stages: SFT rows with the prompt masked, preference pairs, prompt groups, all encoded
with the chat template (llm/align/template.py).

Rows are right-padded with PAD (id 0); the model is causal, so right padding never changes the logits of real
positions. `template` is a ChatTemplate, or a TaskConfig, whose template_prompt/template_response make one.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from data_pipeline.tokenizer import PAD_ID, Tokenizer
from llm.align.losses import IGNORE_INDEX
from llm.align.sections import TaskConfig
from llm.align.template import ChatTemplate, as_messages


def as_template(template: ChatTemplate | TaskConfig) -> ChatTemplate:
    if isinstance(template, ChatTemplate):
        return template
    return ChatTemplate(user=template.template_prompt.replace("{prompt}", "{content}"),
                        assistant=template.template_response.replace("{response}", "{content}"))


def encode_prompt(tok: Tokenizer, template, prompt) -> list[int]:
    """The generation prompt of a prompt given as a string (one user turn) or messages."""
    return as_template(template).encode_prompt(tok, as_messages(prompt))


def decode_response(tok: Tokenizer, ids: list[int], template=None) -> str:
    """The reply text of generated ids (ChatTemplate.decode_response; the default template when None)."""
    return (as_template(template) if template is not None else ChatTemplate()).decode_response(tok, ids)


def sft_example(tok: Tokenizer, template, prompt, response) -> tuple[list[int], list[int]]:
    """(tokens, targets) of one prompt/reply: targets[i] is tokens[i+1] on reply positions, IGNORE_INDEX on the
    prompt (the loss sees only what the model should write), so len(targets) == len(tokens) - 1."""
    return as_template(template).encode(tok, as_messages(prompt) + as_messages(response, "assistant"))


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
            raise ValueError(f"example of {len(tokens)} tokens does not fit seq_len={seq_len} (the loaders of "
                             "llm/align/formats.py skip or refuse such rows)")
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


def pair_batch(tok: Tokenizer, template, rows: list[dict]) -> PairBatch:
    """Rows {"prompt", "chosen", "rejected"}, each a string or messages (llm/align/formats.py `pair`)."""
    examples = [sft_example(tok, template, r["prompt"], r["chosen"]) for r in rows] + \
               [sft_example(tok, template, r["prompt"], r["rejected"]) for r in rows]
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
