"""Passkey retrieval (llm/eval/passkey.py): prompts of exact length with the needle at its depth, scoring checked
against an oracle model, the refusal of lengths past seq_len, the training-document writer, and launch/evaluate.py
--passkey end to end on a tiny random checkpoint (passkey.json and the heat map)."""
from __future__ import annotations

import json
import random

import pytest
import torch

from launch import cli
from launch.evaluate import main
from launch.passkey_data import main as data_main
from llm.config import ConfigError, ModelConfig
from llm.eval.passkey import (NEEDLE, QUESTION, PasskeyBuilder, context_model, evaluate_passkey, passkey_documents,
                              random_key, score_batch)
from llm.model import Transformer


@pytest.fixture(scope="module")
def tok(tiny_data):
    from data_pipeline.hf_tokenizer import load_tokenizer
    return load_tokenizer(tiny_data["tokenizer"])


@pytest.mark.parametrize("depth", [0.0, 0.3, 0.5, 1.0])
def test_prompt_has_its_length_and_the_needle_at_its_depth(tok, depth):
    b = PasskeyBuilder(tok)
    needle, answer = b.parts("48213")
    for length in (b.min_length(), b.min_length() + 37, 400):
        p = b.build(length, depth, "48213")
        assert len(p.tokens) + len(p.answer) == length and p.answer == answer and p.tokens[0] == tok.eos_id
        n = length - b.min_length()  # filler tokens
        assert p.needle_start == len(b.intro) + round(depth * n)
        assert p.tokens[p.needle_start:p.needle_start + len(needle)] == needle
        assert p.tokens[-len(b.question):] == b.question
    # The answer is the tail of the whole text's encoding (the training documents are encoded whole).
    whole = tok.encode(NEEDLE.format(key="48213") + QUESTION + " 48213")
    assert whole[-len(answer):] == answer and whole[-len(answer) - 3:-len(answer)] == b.question[-3:]
    assert tok.decode(answer).strip() == "48213"
    with pytest.raises(ConfigError, match="too short"):
        b.build(b.min_length() - 1, 0.5, "48213")


def test_keys_have_their_digits():
    rng = random.Random(0)
    assert all(len(random_key(rng, d)) == d and random_key(rng, d)[0] != "0" or d == 1 for d in (1, 3, 5, 9))


class Oracle(torch.nn.Module):
    """Predicts the true next token of each row it was told about (the answer's last token included), except for
    the keys in `wrong`, whose answers it gets wrong at the last digit."""

    def __init__(self, prompts, wrong=()):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.targets = {}
        for p in prompts:
            target = p.tokens[1:] + p.answer
            if p.key in wrong:
                target[-1] = (target[-1] + 1) % 512
            self.targets[tuple(p.tokens + p.answer[:-1])] = target

    def forward(self, tokens):
        out = torch.zeros(*tokens.shape, 512)
        for r, row in enumerate(tokens.tolist()):
            out[r, torch.arange(len(row)), self.targets[tuple(row)]] = 1.0
        return out


def test_scoring_reads_the_answer_positions(tok):
    b = PasskeyBuilder(tok)
    keys = ["11111", "23456", "90817"]
    prompts = [b.build(200, 0.5, k) for k in keys]
    n = len(prompts[0].answer)
    assert score_batch(Oracle(prompts), prompts) == [n, n, n]
    assert score_batch(Oracle(prompts, wrong={"23456"}), prompts) == [n, n - 1, n]


def test_grid_accuracy_over_lengths_and_depths(tok, monkeypatch):
    b = PasskeyBuilder(tok)
    rng = random.Random(0)
    keys = [random_key(rng) for _ in range(4)]  # evaluate_passkey's keys for seed 0
    prompts = [b.build(n, d, k) for n in (170, 200) for d in (0, 1) for k in keys]
    res = evaluate_passkey(Oracle(prompts, wrong={keys[0]}), tok, [170, 200], [0.0, 1.0], trials=4, batch_size=3)
    assert [c["accuracy"] for c in res["cells"]] == [0.75] * 4 and res["accuracy"] == 0.75
    assert res["accuracy_by_length"] == {"170": 0.75, "200": 0.75}
    n = len(prompts[0].answer)
    assert res["token_accuracy"] == pytest.approx(1 - 1 / (4 * n))  # one token wrong of one key in four
    with pytest.raises(ConfigError, match="shorter than the passkey template"):
        evaluate_passkey(Oracle(prompts), tok, [20], [0.0], trials=1)


def test_lengths_past_seq_len_need_a_way_to_reach_them():
    cfg = ModelConfig(n_layers=1, d_model=32, n_heads=2, vocab_size=64, seq_len=32)
    model = Transformer(cfg).eval()
    assert context_model(model, cfg, 32)[0] is model
    with pytest.raises(ConfigError, match="passkey length 64 exceeds the model's seq_len 32: extend the model"):
        context_model(model, cfg, 64)
    longer, new = context_model(model, cfg, 64, extrapolate=True)
    tokens = torch.randint(0, 64, (1, 32))
    assert new.seq_len == 64 and new.rope_scaling is None
    assert torch.equal(longer(tokens), model(tokens))  # the same positions, the same function
    yarn, new = context_model(model, cfg, 128, rope_scaling="yarn")
    assert (new.seq_len, new.rope_scaling.original_seq_len, new.rope_scaling.resolved_factor(128)) == (128, 32, 4)
    assert not torch.allclose(yarn(tokens), model(tokens))
    with pytest.raises(ConfigError, match="already has model.rope_scaling"):
        context_model(yarn, new, 128, rope_scaling="linear")
    # Extrapolating a scaled model keeps its frequencies: the factor is pinned, not re-derived from the new length.
    again, newer = context_model(yarn, new, 256, extrapolate=True)
    assert newer.rope_scaling.resolved_factor(256) == 4 and torch.equal(again(tokens), yarn(tokens))


def test_training_documents(tmp_path, tok):
    docs = passkey_documents(20, 3, 9, seed=1, digits=4)
    assert len({d["id"] for d in docs}) == 20
    for d in docs:
        key = d["text"].rsplit(" ", 1)[1].rstrip(".")
        assert len(key) == 4 and d["text"].count(key) >= 3 and d["text"].endswith(QUESTION + f" {key}.")
        assert 3 <= sum(d["text"].count(s) for s in (" green.", " blue.", " yellow.", " go.", " again.")) <= 9
    out = tmp_path / "pk.jsonl"
    assert cli.call(data_main, ["--out", str(out), "--documents", "5", "--max-sentences", "4"]) == 0
    assert len(out.read_text().splitlines()) == 5


def _err(capsys, argv) -> str:
    assert cli.call(main, argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_evaluate_cli_passkey(eval_checkpoint, tmp_path, capsys):
    ck = ["--checkpoint", str(eval_checkpoint), "--passkey", "--out-dir", str(tmp_path / "pk")]
    assert "exceeds the model's seq_len 64" in _err(capsys, ck + ["--lengths", "96"])
    assert "needs --out-dir" in _err(capsys, ["--checkpoint", str(eval_checkpoint), "--passkey"])
    assert "exactly one of --tasks and --passkey" in _err(capsys, ck + ["--tasks", "python_docs_ppl"])
    assert "must lie in [0, 1]" in _err(capsys, ck + ["--depths", "0,1.5"])
    assert "comma-separated integers" in _err(capsys, ck + ["--lengths", "1k"])
    args = ck + ["--lengths", "160,192", "--depths", "0,0.5,1", "--trials", "3", "--batch-size", "2", "--extrapolate"]
    assert cli.call(main, args) == 0
    res = json.loads((tmp_path / "pk" / "passkey.json").read_text())
    assert len(res["cells"]) == 6 and all(c["trials"] == 3 and 0 <= c["accuracy"] <= 1 for c in res["cells"])
    assert (res["trained_seq_len"], res["seq_len"], res["extrapolate"]) == (64, 192, True)
    assert (tmp_path / "pk" / "passkey.png").stat().st_size > 10_000
    assert "passkey: prompt 18/18 (100%)" in (tmp_path / "pk" / "passkey.progress.log").read_text()
    assert "passkey length 192: accuracy" in capsys.readouterr().out
    assert cli.call(main, ck + ["--lengths", "192", "--depths", "0.5", "--trials", "1", "--rope-scaling", "yarn"]) == 0
    res = json.loads((tmp_path / "pk" / "passkey.json").read_text())
    assert res["rope_scaling"]["type"] == "yarn" and res["rope_scaling"]["original_seq_len"] == 64
