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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from llm.align.losses import IGNORE_INDEX

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
