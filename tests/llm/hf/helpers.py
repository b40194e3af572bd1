"""Shared checks of the HF tests: our Transformer against transformers' LlamaForCausalLM on the same weights."""
from __future__ import annotations

import torch

# fp32 logits of the two implementations differ by rounding only: our RoPE tables are computed in fp64, HF's in fp32.
LOGITS_ATOL = 1e-5


def compare_with_hf(ours, hf_model, vocab_size: int, seq_len: int) -> dict:
    """Logits, loss and greedy generation of `ours` (llm/model.py) against `hf_model`; returns the differences."""
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, vocab_size, (2, seq_len), generator=gen)
    ours.eval()
    hf_model.eval()
    with torch.no_grad():
        a = ours(tokens)
        out = hf_model(input_ids=tokens, labels=tokens)
    # HF shifts the labels inside (position t predicts labels[t + 1]): our loss over (tokens[:-1], tokens[1:]).
    ours_loss = ours.compute_loss(tokens[:, :-1], tokens[:, 1:])
    prompt = tokens[:1, :4]
    n = seq_len - 4
    mine = ours.generate(prompt, n, temperature=0)
    theirs = hf_model.generate(prompt, max_new_tokens=n, do_sample=False, eos_token_id=None, min_new_tokens=n)
    return {"logits": (a - out.logits).abs().max().item(), "loss": abs(ours_loss.item() - out.loss.item()),
            "generate_equal": torch.equal(mine, theirs), "generated": mine.shape[1] - 4}
