"""The chat template: how a conversation becomes tokens, the same in every stage, at evaluation and in export.

A template gives each role (system, user, assistant) a format string with one `{content}`. Each turn is encoded
on its own and the pieces concatenated; an assistant turn is encode(its prefix) + encode(content + its suffix) +
[EOS], and only the second part and the EOS are trained on (the loss sees what the model writes, never the
prompt). A generation prompt is the turns before the reply plus the assistant prefix, so a sampled reply is the
assistant's content and suffix, closed by EOS. No BOS: the base model is pretrained on documents that end with EOS
and start without BOS.

The bundled task's template (task.template_prompt "sort {prompt}:" as the user format, "{response}" as the
assistant's) tokenizes a (prompt, response) pair exactly as before the template had roles: encode("sort 5183:") +
encode("1358") + [EOS], which SentencePiece's dummy prefix makes the tokens of the text "sort 5183: 1358". The
template is recorded in every stage checkpoint (llm/align/handoff.py) and a stage refuses a checkpoint made with
another one.

Batches of the alignment stages are encoded here too: SFT rows with the prompt masked, preference pairs, prompts
grouped by length for generation. Rows are right-padded with PAD (id 0); the model is causal, so right padding never
changes the logits of real positions. Where a function takes `template`, it is a ChatTemplate or a TaskConfig, whose
template_prompt/template_response make one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch

from data_pipeline.tokenizer import PAD_ID, Tokenizer
from llm.align.losses import IGNORE_INDEX

if TYPE_CHECKING:
    from llm.align.sections import TaskConfig

ROLES = ("system", "user", "assistant")
Message = dict  # {"role": one of ROLES, "content": str}


@dataclass(frozen=True)
class ChatTemplate:
    system: str = "{content}"
    user: str = "{content}"
    assistant: str = "{content}"

    @classmethod
    def from_config(cls, cfg) -> ChatTemplate:
        """The template of an AlignConfig: its `template` section, each role left null taken from the task's
        template_prompt / template_response (the bundled default)."""
        t, task = cfg.template, cfg.task
        return cls(system=t.system,
                   user=t.user if t.user is not None else task.template_prompt.replace("{prompt}", "{content}"),
                   assistant=t.assistant if t.assistant is not None else
                   task.template_response.replace("{response}", "{content}"))

    def to_dict(self) -> dict:
        return asdict(self)

    def _split(self, role: str) -> tuple[str, str]:
        prefix, suffix = getattr(self, role).split("{content}")
        return prefix, suffix

    def encode(self, tok, messages: list[Message]) -> tuple[list[int], list[int]]:
        """(tokens, targets) of a conversation, len(targets) == len(tokens) − 1: targets[i] = tokens[i + 1] where
        that token belongs to an assistant reply (content, suffix, EOS), IGNORE_INDEX elsewhere."""
        tokens: list[int] = []
        trained: list[bool] = []
        for m in messages:
            if m["role"] == "assistant":
                prefix, suffix = self._split("assistant")
                head = tok.encode(prefix) if prefix else []
                body = tok.encode(m["content"] + suffix) + [tok.eos_id]
                tokens += head + body
                trained += [False] * len(head) + [True] * len(body)
            else:
                piece = tok.encode(getattr(self, m["role"]).replace("{content}", m["content"]))
                tokens += piece
                trained += [False] * len(piece)
        targets = [t if trained[i + 1] else IGNORE_INDEX for i, t in enumerate(tokens[1:])]
        return tokens, targets

    def encode_prompt(self, tok, messages: list[Message]) -> list[int]:
        """The generation prompt: the turns (none of them the reply) followed by the assistant prefix."""
        tokens, _ = self.encode(tok, messages)
        prefix, _ = self._split("assistant")
        return tokens + (tok.encode(prefix) if prefix else [])

    def decode_response(self, tok, ids: list[int]) -> str:
        """The assistant content of generated ids: cut at the first EOS, the assistant suffix removed. Ids past the
        tokenizer's vocabulary (the embedding table is rounded up) decode as unknown (SentencePiece's UNK, U+FFFD
        for a Hugging Face tokenizer), which no reward function accepts."""
        from data_pipeline.tokenizer import UNK_ID, Tokenizer
        ids = list(ids)
        if tok.eos_id in ids:
            ids = ids[:ids.index(tok.eos_id)]
        if isinstance(tok, Tokenizer):
            text = tok.decode([i if i < tok.vocab_size else UNK_ID for i in ids])
        else:
            # tokenizers' decode drops ids it does not know, which could leave a reply a reward accepts.
            runs: list[list[int]] = [[]]
            for i in ids:
                if i < tok.vocab_size:
                    runs[-1].append(i)
                else:
                    runs.append([])
            text = "\ufffd".join(tok.decode(r) for r in runs)
        _, suffix = self._split("assistant")
        return text[:-len(suffix)] if suffix and text.endswith(suffix) else text


def as_messages(value, role: str = "user") -> list[Message]:
    """A prompt or reply given as a string (one turn of `role`) or as a list of messages, as a list of messages."""
    return [{"role": role, "content": value}] if isinstance(value, str) else list(value)


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
