"""Passkey retrieval (Mohtashami & Jaggi 2023, arXiv:2305.16300, §4.2): a random number hidden at a chosen depth in
repetitive filler text, asked for at the end. It probes whether a model can use every position of its context, the
first thing to check after a context extension (llm/rope.py).

A prompt of `length` tokens (the answer's included) is, as in the paper's template:

    <EOS> There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz
    you about the important information there. The grass is green. The sky is blue. ... (filler, cut to fit)
    The pass key is 48213. Remember it. 48213 is the pass key. ... (the rest of the filler)
    What is the pass key? The pass key is| 48213

with the needle after `depth` (0 to 1) of the filler tokens. It starts with EOS, what precedes a document in our
training (llm/eval/lm.py). A trial is correct when the argmax at each answer position is the answer's token: the
same verdict as greedy decoding of the answer's length (greedy decoding emits the key exactly when every argmax,
given the key's earlier tokens, is the key's next token), from one teacher-forced forward per batch. The share of
answer tokens right is reported too (token_accuracy), a graded signal for a model still far from whole keys.

`passkey_documents` writes the same text as training documents (JSONL for launch/prepare_data.py, through
launch/passkey_data.py), with the answer and a final period, for a model too small to pick retrieval up from its
corpus.
"""
from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import torch

from llm.config import ConfigError, ModelConfig
from llm.config.model import RopeScalingConfig

INTRO = ("There is an important info hidden inside a lot of irrelevant text. Find it and memorize it. I will quiz "
         "you about the important information there.")
FILLER = (" The grass is green.", " The sky is blue.", " The sun is yellow.", " Here we go.", " There and back again.")
NEEDLE = " The pass key is {key}. Remember it. {key} is the pass key."
QUESTION = " What is the pass key? The pass key is"
DEFAULT_DIGITS = 5  # the paper's keys: random integers of 5 digits


def random_key(rng: random.Random, digits: int = DEFAULT_DIGITS) -> str:
    """A `digits`-digit decimal string without a leading zero (a leading 0 would read as a shorter number)."""
    return str(rng.randrange(10 ** (digits - 1), 10 ** digits)) if digits > 1 else str(rng.randrange(10))


@dataclasses.dataclass
class PasskeyPrompt:
    """One trial: `tokens` is the prompt (ending with "The pass key is"), `answer` the key's tokens after it."""

    tokens: list[int]
    answer: list[int]
    key: str
    needle_start: int
    """Index in `tokens` of the needle's first token."""


class PasskeyBuilder:
    """Builds prompts of exact token lengths with `tok` (encode/decode, eos_id) from parts encoded once (the filler
    is cut at a token, not a sentence). The answer's tokens are the tail of the question-and-answer's encoding, as
    in a training document encoded whole."""

    def __init__(self, tok, digits: int = DEFAULT_DIGITS):
        if not 1 <= digits <= 20:
            raise ConfigError(f"--digits {digits} must be between 1 and 20")
        self.tok, self.digits = tok, digits
        self.intro = [tok.eos_id] + tok.encode(INTRO)
        self.filler = tok.encode("".join(FILLER))
        self.question = tok.encode(QUESTION)

    def parts(self, key: str) -> tuple[list[int], list[int]]:
        """(the needle's tokens, the answer's tokens) for `key`."""
        needle = self.tok.encode(NEEDLE.format(key=key))
        whole = self.tok.encode(QUESTION + " " + key)
        if whole[:len(self.question)] != self.question:  # a tokenizer merging across the boundary
            raise ConfigError("the tokenizer merges the passkey question with its answer; passkey scoring needs them "
                              "apart")
        return needle, whole[len(self.question):]

    def min_length(self) -> int:
        """The shortest prompt (no filler at all) a key of `digits` digits can have, answer included."""
        needle, answer = self.parts("9" * self.digits)
        return len(self.intro) + len(needle) + len(self.question) + len(answer)

    def build(self, length: int, depth: float, key: str) -> PasskeyPrompt:
        """The prompt whose tokens plus answer are `length` long, the needle after `depth` of the filler tokens."""
        needle, answer = self.parts(key)
        n = length - len(self.intro) - len(needle) - len(self.question) - len(answer)
        if n < 0:
            raise ConfigError(f"passkey length {length} is too short: the template alone takes {length - n} tokens")
        filler = (self.filler * (n // len(self.filler) + 1))[:n]
        cut = round(depth * n)
        tokens = self.intro + filler[:cut] + needle + filler[cut:] + self.question
        return PasskeyPrompt(tokens, answer, key, len(self.intro) + cut)


@torch.no_grad()
def score_batch(model, prompts: list[PasskeyPrompt]) -> list[int]:
    """How many of each answer's tokens `model` (our Transformer) predicts by argmax, teacher-forced; the key is
    retrieved when all are. Prompts of one batch must have one total length."""
    device = next(model.parameters()).device
    rows = [p.tokens + p.answer[:-1] for p in prompts]
    logits = model(torch.tensor(rows, device=device))
    out = []
    for row, p in enumerate(prompts):
        first = len(p.tokens) - 1  # the position that predicts the answer's first token
        guess = logits[row, first:first + len(p.answer)].argmax(-1).tolist()
        out.append(sum(g == a for g, a in zip(guess, p.answer)))
    return out


def context_model(model, cfg: ModelConfig, max_length: int, extrapolate: bool = False,
                  rope_scaling: str | None = None):
    """`model` itself when its seq_len covers `max_length`; else, as asked, a copy on the same weights whose rotary
    tables reach max_length: unscaled (`extrapolate`: positions the model never saw) or with `rope_scaling` (a
    RopeScalingConfig type, applied without training: original_seq_len = its seq_len). ConfigError otherwise, in
    one line naming both ways."""
    from llm.model import Transformer

    if rope_scaling is not None and cfg.rope_scaling is not None:
        raise ConfigError(f"--rope-scaling {rope_scaling}: the model already has model.rope_scaling "
                          f"({cfg.rope_scaling.type}); evaluate it as it is")
    if max_length <= cfg.seq_len and rope_scaling is None:
        return model, cfg
    if rope_scaling is not None:
        new = dataclasses.replace(cfg, seq_len=max(max_length, cfg.seq_len),
                                  rope_scaling=RopeScalingConfig(type=rope_scaling, original_seq_len=cfg.seq_len))
    elif extrapolate:
        scaling = cfg.rope_scaling and dataclasses.replace(cfg.rope_scaling,
                                                           factor=cfg.rope_scaling.resolved_factor(cfg.seq_len))
        new = dataclasses.replace(cfg, seq_len=max_length, rope_scaling=scaling)  # the same frequencies, longer
    else:
        raise ConfigError(f"passkey length {max_length} exceeds the model's seq_len {cfg.seq_len}: extend the model "
                          "(model.rope_scaling), or pass --rope-scaling yarn to scale it untrained, or --extrapolate "
                          "to run its RoPE past its training length")
    new.validate("model")
    p = next(model.parameters())
    longer = Transformer(new).to(device=p.device, dtype=p.dtype).eval()
    longer.load_state_dict(model.state_dict())  # the rotary tables are buffers of the config, not of the state
    return longer, new


def evaluate_passkey(model, tok, lengths: list[int], depths: list[float], trials: int, seed: int = 0,
                     digits: int = DEFAULT_DIGITS, batch_size: int = 8, progress=None) -> dict:
    """Accuracy of `model` per (length, depth) over `trials` random keys each (the same keys in every cell, drawn
    from `seed`). `progress`: an object with update(n) (llm/train/progress.py), or None. The model's tables must
    cover max(lengths) (`context_model`)."""
    builder = PasskeyBuilder(tok, digits)
    shortest = builder.min_length()
    if min(lengths) < shortest:
        raise ConfigError(f"--lengths: {min(lengths)} is shorter than the passkey template ({shortest} tokens)")
    rng = random.Random(seed)
    keys = [random_key(rng, digits) for _ in range(trials)]
    cells = []
    for length in lengths:
        for depth in depths:
            prompts = [builder.build(length, depth, k) for k in keys]
            hits = []
            for i in range(0, len(prompts), batch_size):
                hits += score_batch(model, prompts[i:i + batch_size])
                if progress is not None:
                    progress.update(len(prompts[i:i + batch_size]))
            correct = sum(h == len(p.answer) for h, p in zip(hits, prompts))
            # The share of answer tokens right: a graded signal for models still far from retrieving whole keys.
            tokens = sum(hits) / sum(len(p.answer) for p in prompts)
            cells.append({"length": length, "depth": depth, "accuracy": correct / trials, "correct": correct,
                          "trials": trials, "token_accuracy": tokens})
    return {"lengths": lengths, "depths": depths, "trials": trials, "seed": seed, "digits": digits, "cells": cells,
            "accuracy": sum(c["correct"] for c in cells) / (trials * len(cells)),
            "token_accuracy": sum(c["token_accuracy"] for c in cells) / len(cells),
            "accuracy_by_length": {str(n): sum(c["accuracy"] for c in cells if c["length"] == n) / len(depths)
                                   for n in lengths}}


def passkey_documents(n: int, min_sentences: int, max_sentences: int, seed: int = 0,
                      digits: int = DEFAULT_DIGITS) -> list[dict]:
    """`n` training documents ({"id", "text"}) of the prompt's text with its answer: between min_sentences and
    max_sentences filler sentences (about 7 tokens each with the bundled tokenizer), the needle at a uniform depth."""
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        count = rng.randint(min_sentences, max_sentences)
        filler = [FILLER[j % len(FILLER)] for j in range(count)]
        key = random_key(rng, digits)
        cut = rng.randint(0, count)
        text = INTRO + "".join(filler[:cut]) + NEEDLE.format(key=key) + "".join(filler[cut:]) + QUESTION + f" {key}."
        docs.append({"id": f"passkey-{seed}-{i}", "text": text})
    return docs


def write_passkey_jsonl(path: str | Path, docs: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path



def run_passkey(checkpoint: str | Path, out_dir: str | Path, lengths: list[int], depths: list[float], trials: int,
                seed: int = 0, digits: int = DEFAULT_DIGITS, batch_size: int = 8, device: str | None = None,
                extrapolate: bool = False, rope_scaling: str | None = None) -> dict:
    """Evaluate `checkpoint` (any kind llm/eval/checkpoint.py loads) and write out_dir/passkey.json (the results),
    out_dir/passkey.png (the heat map) and out_dir/passkey.progress.log. ConfigError for a length the model's
    rotary tables do not reach (see `context_model`) or shorter than the template, before any prompt is scored."""
    from llm.eval.checkpoint import load_eval_model
    from llm.eval.passkey_figure import write_passkey_figure
    from llm.train.progress import bar_progress

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded = load_eval_model(checkpoint, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model, cfg = context_model(loaded.model, loaded.config, max(lengths), extrapolate, rope_scaling)
    bar = bar_progress("passkey", len(lengths) * len(depths) * trials, "prompt", out / "passkey.progress.log")
    results = evaluate_passkey(model, loaded.tokenizer, lengths, depths, trials, seed, digits, batch_size, bar)
    bar.close()
    s = cfg.rope_scaling
    scaling = "unscaled RoPE" if s is None else f"{s.type} ×{s.resolved_factor(cfg.seq_len):g} of {s.original_seq_len}"
    trained = loaded.config.seq_len
    results.update(checkpoint=str(Path(checkpoint).resolve()), trained_seq_len=trained, seq_len=cfg.seq_len,
                   rope_scaling=None if s is None else dataclasses.asdict(s), extrapolate=extrapolate,
                   eval_rope_scaling=rope_scaling,
                   model_note=f"seq_len {trained}, {scaling}" + (f", tables run to {cfg.seq_len}" if extrapolate
                                                                 and cfg.seq_len > trained else "")
                   + (" (applied at evaluation, untrained)" if rope_scaling else ""))
    (out / "passkey.json").write_text(json.dumps(results, indent=2) + "\n")
    write_passkey_figure(results, out / "passkey.png", f"passkey retrieval: {checkpoint}")
    return results
