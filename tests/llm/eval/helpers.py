"""Our own scores, computed with the model directly (no harness): the oracle of the lm_eval tests."""
from __future__ import annotations

import re

import torch
import torch.nn.functional as F


@torch.no_grad()
def rolling_loglikelihood(model, ids: list[int], prefix_id: int, seq_len: int) -> float:
    """Sum of log p(ids[j] | what precedes it) over the document `ids` preceded by `prefix_id`, in disjoint windows
    of seq_len predicted tokens; the last window reaches back a full seq_len when the document is long enough."""
    s = [prefix_id] + list(ids)
    total, done = 0.0, 0
    while done < len(ids):
        end = min(done + seq_len, len(ids))  # predicts s[done + 1 : end + 1]
        start = max(0, end - seq_len)
        lp = F.log_softmax(model(torch.tensor([s[start:end]]))[0].float(), dim=-1)
        total += sum(lp[j - start, s[j + 1]].item() for j in range(done, end))
        done = end
    return total


@torch.no_grad()
def continuation_loglikelihood(model, tok, context: str, continuation: str, seq_len: int) -> float:
    """log p(continuation | context) with lm_eval's split: the context's trailing whitespace moves to the
    continuation, whose tokens are those of the whole string past the context's; one forward over the last
    seq_len + 1 tokens (lm_eval's window), scoring the continuation's tokens inside it."""
    stripped = context.rstrip()
    ctx, whole = tok.encode(stripped), tok.encode(context + continuation)
    window = whole[-(seq_len + 1):]
    n = min(len(whole) - len(ctx), seq_len)
    lp = F.log_softmax(model(torch.tensor([window[:-1]]))[0].float(), dim=-1)
    return sum(lp[j - 1, window[j]].item() for j in range(len(window) - n, len(window)))


def perplexity_metrics(lls: list[float], texts: list[str]) -> dict:
    """lm_eval's corpus-level aggregates: word/byte perplexity and bits per byte over all documents."""
    import math
    words = sum(len(re.split(r"\s+", t)) for t in texts)
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return {"word_perplexity": math.exp(-sum(lls) / words), "byte_perplexity": math.exp(-sum(lls) / n_bytes),
            "bits_per_byte": -sum(lls) / n_bytes / math.log(2)}
