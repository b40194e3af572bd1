"""Verbatim extraction: does greedy decoding from a prefix reproduce the text that followed it in training?

Canaries: the prompt is the canary's first ``prefix_len`` tokens (half a random-token canary; a secret
sentence up to its number), and the target the rest. Training documents, as PaLM 2 (arXiv:2305.10403,
Sec. 4.7) and Carlini et al. 2022 ("Quantifying memorization", arXiv:2202.07646, Sec. 2) measure them:
a document's first ``k`` tokens are the prompt and the next ``k`` the target (PaLM 2 uses k = 50).
Documents are sampled from the training split and, as the baseline, from the held-out split; training
documents are broken down by how many identical copies of the document data.bin holds.
"""
from __future__ import annotations

import hashlib
from collections import Counter, defaultdict

import numpy as np
import torch

from data_pipeline.indexed import IndexedDataset
from llm.audit.exposure import log_perplexity

# Copies of a document in data.bin, as labels of the memorization breakdown.
REPETITION_BUCKETS = ((1, 1, "1"), (2, 3, "2-3"), (4, 15, "4-15"), (16, 63, "16-63"), (64, None, "64+"))


@torch.no_grad()
def greedy_agreement(model, prompts: list[list[int]], targets: list[list[int]], context_id: int,
                     batch_size: int = 32, on_batch=None) -> list[int]:
    """For each pair, how many of ``target``'s tokens greedy decoding after ``[context_id] + prompt`` yields at
    their positions (``len(target)``: verbatim).

    Prompts of one length are decoded together (``model.generate`` takes equal-length prompts).
    """
    out = [0] * len(prompts)
    groups = defaultdict(list)
    for i, (p, t) in enumerate(zip(prompts, targets)):
        groups[(len(p), len(t))].append(i)
    device = next(model.parameters()).device
    for (_, n), idx in sorted(groups.items()):
        for start in range(0, len(idx), batch_size):
            rows = idx[start:start + batch_size]
            prompt = torch.tensor([[context_id] + prompts[i] for i in rows], device=device)
            got = model.generate(prompt, n, temperature=0.0)[:, prompt.shape[1]:].cpu()
            for row, i in enumerate(rows):
                out[i] = sum(int(a == b) for a, b in zip(got[row].tolist(), targets[i]))
            if on_batch is not None:
                on_batch(len(rows))
    return out


def greedy_matches(model, prompts: list[list[int]], targets: list[list[int]], context_id: int,
                   batch_size: int = 32, on_batch=None) -> list[bool]:
    """For each pair, whether greedy decoding after ``[context_id] + prompt`` yields exactly ``target``."""
    agree = greedy_agreement(model, prompts, targets, context_id, batch_size, on_batch)
    return [a == len(t) for a, t in zip(agree, targets)]


def passage_memorization(model, passages: list[list[int]], k: int, context_id: int, on_batch=None) -> list[dict]:
    """PaLM 2's test on given token sequences (planted documents): prompt the first ``k`` tokens, decode ``k``
    greedily; per passage whether the next ``k`` came out verbatim, the fraction of them that did, and their
    mean bits per token after the prompt."""
    short = [i for i, p in enumerate(passages) if len(p) < 2 * k]
    if short:
        raise ValueError(f"passage {short[0]} has {len(passages[short[0]])} tokens, fewer than 2k = {2 * k}")
    agree = greedy_agreement(model, [p[:k] for p in passages], [p[k:2 * k] for p in passages], context_id,
                             on_batch=on_batch)
    # The target's own bits given the prompt: graded where exact extraction is all-or-nothing.
    bits = (log_perplexity(model, [p[:2 * k] for p in passages], context_id)
            - log_perplexity(model, [p[:k] for p in passages], context_id))
    return [{"extracted": a == k, "token_agreement": a / k, "target_bits_per_token": float(b / k)}
            for a, b in zip(agree, bits)]


def repetition_label(copies: int) -> str:
    return next(label for low, high, label in REPETITION_BUCKETS if copies >= low and (high is None or copies <= high))


def sample_documents(ds: IndexedDataset, train_end: int, k: int, per_bucket: int, exclude: set[int],
                     seed: int) -> dict:
    """Documents to test, as {"train": {label: [(doc index, copies)]}, "held_out": [(doc index, 1)]}.

    Eligible documents hold at least 2k tokens before their EOD and lie wholly in one split (the train
    split is the stream's first ``train_end`` tokens); ``exclude`` (the canaries' copies) is skipped. Each
    distinct training text is one candidate, counted with its number of copies; up to ``per_bucket`` are
    drawn per repetition bucket, and up to ``per_bucket`` held-out documents.
    """
    sizes = np.asarray(ds.sizes, dtype=np.int64)
    ends = np.cumsum(sizes)
    copies, first = Counter(), {}
    for i in range(len(ds)):
        if i in exclude:
            continue
        key = hashlib.blake2b(ds[i].tobytes(), digest_size=16).digest()
        copies[key] += 1
        first.setdefault(key, i)
    train, held = defaultdict(list), []
    for key, i in first.items():
        if sizes[i] - 1 < 2 * k:
            continue
        if ends[i] <= train_end:
            train[repetition_label(copies[key])].append((i, copies[key]))
        elif ends[i] - sizes[i] >= train_end and copies[key] == 1:
            held.append((i, 1))
    rng = np.random.RandomState(seed)

    def draw(items):
        return [items[j] for j in sorted(rng.choice(len(items), min(per_bucket, len(items)), replace=False))]

    return {"train": {label: draw(train[label]) for _, _, label in REPETITION_BUCKETS if train[label]},
            "held_out": draw(held) if held else []}


def document_memorization(model, ds: IndexedDataset, sample: dict, k: int, context_id: int, on_batch=None) -> dict:
    """The fraction of sampled documents whose tokens k..2k are greedy decoding's continuation of tokens 0..k."""
    def rate(items):
        docs = [ds[i].astype(np.int64).tolist() for i, _ in items]
        hits = greedy_matches(model, [d[:k] for d in docs], [d[k:2 * k] for d in docs], context_id,
                              on_batch=on_batch)
        return {"documents": len(items), "extracted": int(sum(hits)),
                "rate": float(np.mean(hits)) if hits else None}

    by = {label: rate(items) for label, items in sample["train"].items()}
    total = sum(b["documents"] for b in by.values())
    extracted = sum(b["extracted"] for b in by.values())
    return {"k": k, "repetitions_from": "identical documents in data.bin (canary copies excluded)",
            "train": {"documents": total, "extracted": extracted, "rate": extracted / total if total else None,
                      "by_repetitions": by},
            "held_out": rate(sample["held_out"])}
