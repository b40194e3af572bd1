"""Canaries: random sequences planted in the training data so that memorization can be measured.

Following Carlini et al. 2019, "The Secret Sharer" (arXiv:1802.08232), and PaLM 2 (arXiv:2305.10403,
Sec. 4.7 / App. D.3), which planted canaries in its pretraining data. Two kinds are drawn from one
seeded generator:

* ``random``: ``length`` token ids uniform over the vocabulary (the special BOS/EOS/PAD ids excluded);
* ``secret``: the sentence ``SECRET_TEMPLATE`` with a random ``secret_digits``-digit number, the
  paper's "the random number is 281265017" format (Sec. 3).

For each repetition bucket ``r`` in ``repeats`` and each kind, ``per_bucket`` canaries are inserted ``r``
times each and as many more are drawn the same way and never inserted (the held-out control: their
exposure is what chance gives). Insertion happens in the merge stage, after every deduplication
step, so the planted counts are exact: nothing can remove a copy.

Each copy is its own document (the canary's tokens then EOD) placed before a seeded random corpus
document, not spliced inside one: splicing would cut a training document (and its memorization
measure) in two, and a separate document is how both papers planted them. Copies go among the first
``max_position`` of the documents, clear of the validation tail the trainer holds out.

The sidecar ``DIR/canaries.json`` lists every canary: kind, bucket, text, token ids, the prefix
length the extraction test prompts with, and the data.bin document indices of its copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np

KINDS = ("random", "secret")
SECRET_TEMPLATE = "My secret number is {}."
SECRET_PREFIX = "My secret number is"
SIDECAR = "canaries.json"


@dataclass
class CanaryConfig:
    """Planted canaries (off by default); see data_pipeline/canaries.py."""

    enabled: bool = False
    """Plant canaries in data.bin and write their sidecar for launch/audit.py. Off by default: they are synthetic
    text the model is meant to memorise, wanted only in a run that measures memorization."""
    per_bucket: int = 10
    """Canaries of each kind (random tokens, secret sentence) per repetition bucket; as many are held out."""
    repeats: list[int] = field(default_factory=lambda: [1, 4, 16, 64])
    """The repetition buckets: copies of each inserted canary in the training data."""
    length: int = 32
    """Tokens of a random-token canary (its first half is the extraction prompt)."""
    secret_digits: int = 9
    """Digits of the secret-sentence number: Carlini et al. 2019 use 9 (a space of 10^9 candidates)."""
    seed: int = 0
    """Seeds the canaries' draws and the documents their copies go before: the same seed, tokenizer and corpus
    give the same sidecar and the same data.bin on a re-run."""
    max_position: float = 0.9
    """Copies go before documents drawn among the first this fraction of the corpus, so none lands in the
    validation tail the trainer holds out (data.valid_fraction, 0.05 in our configs)."""


def token_pool(vocab_size: int, special_ids: Iterable[int]) -> np.ndarray:
    """The ids a random-token canary draws from: every id but the special ones (< 0 means absent)."""
    special = {int(i) for i in special_ids if 0 <= int(i) < vocab_size}
    return np.array([i for i in range(vocab_size) if i not in special], dtype=np.int64)


def draw_random(rng: np.random.RandomState, pool: np.ndarray, length: int) -> list[int]:
    return [int(i) for i in pool[rng.randint(0, len(pool), size=length)]]


def draw_secret(rng: np.random.RandomState, digits: int) -> str:
    return SECRET_TEMPLATE.format("".join(str(d) for d in rng.randint(0, 10, size=digits)))


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def generator_spec(cfg: CanaryConfig, tok) -> dict:
    """How candidates are drawn (the audit samples its reference candidates from the same spec)."""
    return {"random": {"length": cfg.length, "vocab_size": tok.vocab_size,
                       "excluded_ids": sorted({i for i in (tok.bos_id, tok.eos_id, tok.pad_id) if i >= 0})},
            "secret": {"template": SECRET_TEMPLATE, "digits": cfg.secret_digits}}


def sample(spec: dict, kind: str, tok, rng: np.random.RandomState, n: int) -> list[dict]:
    """``n`` canaries of ``kind`` from ``spec``: {"text", "token_ids", "prefix_len"} each."""
    out = []
    if kind == "random":
        g = spec["random"]
        pool = token_pool(g["vocab_size"], g["excluded_ids"])
        for _ in range(n):
            ids = draw_random(rng, pool, g["length"])
            out.append({"text": tok.decode(ids), "token_ids": ids, "prefix_len": g["length"] // 2})
        return out
    prefix = tok.encode(SECRET_PREFIX)
    for _ in range(n):
        text = draw_secret(rng, spec["secret"]["digits"])
        ids = [int(i) for i in tok.encode(text)]
        # The prompt is the template up to the number; a tokenizer that merges across the boundary
        # shortens it to the tokens the two encodings share.
        out.append({"text": text, "token_ids": ids, "prefix_len": _common_prefix(ids, prefix)})
    return out


def build_plan(cfg: CanaryConfig, tok, corpus_documents: int) -> dict:
    """The sidecar: every canary (inserted and held out) and where its copies go in data.bin.

    A pure function of (cfg, tokenizer, corpus_documents), so a re-run of the merge writes the same
    file and the same data.bin. Canaries are unique: a repeated draw is drawn again.
    """
    rng = np.random.RandomState(cfg.seed)
    spec = generator_spec(cfg, tok)
    canaries, seen = [], set()
    for bucket in cfg.repeats:
        for kind in KINDS:
            drawn = []
            while len(drawn) < 2 * cfg.per_bucket:
                c = sample(spec, kind, tok, rng, 1)[0]
                if tuple(c["token_ids"]) not in seen:
                    seen.add(tuple(c["token_ids"]))
                    drawn.append(c)
            for j, c in enumerate(drawn):
                inserted = j < cfg.per_bucket
                canaries.append({"id": f"{kind}_{bucket}_{'in' if inserted else 'out'}_{j % cfg.per_bucket:03d}",
                                 "kind": kind, "bucket": bucket, "inserted": inserted,
                                 "repeats": bucket if inserted else 0, **c, "documents": []})
    copies = [k for k, c in enumerate(canaries) for _ in range(c["repeats"])]
    copies = [copies[i] for i in rng.permutation(len(copies))]
    limit = int(corpus_documents * cfg.max_position)
    before = np.sort(rng.randint(0, limit + 1, size=len(copies)))
    for n, (k, b) in enumerate(zip(copies, before)):
        # Copy n goes before corpus document b; the n copies already placed shift it to b + n.
        canaries[k]["documents"].append(int(b) + n)
    return {"generator": spec, "seed": cfg.seed, "corpus_documents": corpus_documents,
            "inserted_documents": len(copies),
            "inserted_tokens": sum((len(c["token_ids"]) + 1) * c["repeats"] for c in canaries),
            "canaries": canaries}


def interleave(corpus: Iterable, plan: dict | None, eod_id: int) -> Iterator:
    """The corpus documents with the plan's copies (token ids + EOD) at their data.bin positions."""
    if plan is None:
        yield from corpus
        return
    at = sorted((d, c["token_ids"]) for c in plan["canaries"] for d in c["documents"])
    k, n = 0, 0
    for doc in corpus:
        while k < len(at) and at[k][0] == n:
            yield np.asarray(at[k][1] + [eod_id])
            k, n = k + 1, n + 1
        yield doc
        n += 1
    for _, ids in at[k:]:
        yield np.asarray(ids + [eod_id])


def summary(plan: dict) -> dict:
    """The report's canary section: counts per kind and bucket, inserted and held out."""
    per = {}
    for c in plan["canaries"]:
        row = per.setdefault(str(c["bucket"]), {"inserted": 0, "held_out": 0, "copies": 0})
        row["inserted" if c["inserted"] else "held_out"] += 1
        row["copies"] += len(c["documents"])
    return {"sidecar": SIDECAR, "inserted_documents": plan["inserted_documents"],
            "inserted_tokens": plan["inserted_tokens"],
            "inserted": sum(c["inserted"] for c in plan["canaries"]),
            "held_out": sum(not c["inserted"] for c in plan["canaries"]), "buckets": per}
