"""The audit of one checkpoint against the data folder it was trained on: canary exposure and extraction per
repetition bucket (inserted vs held out), training-document memorization, optionally an eval set's overlap.

Results layout (written as JSON by launch/audit.py)::

    {"buckets": {"1": {"repeats", "canaries", "copies_in_train", "exposure_mean", "exposure_sampled_mean",
                       "extraction_rate", "kinds": {"random": {...}, "secret": {...}}}, ...,
                 "held_out": {... the same, repeats 0}},
     "exposure": {"method", "candidates", "chance_bits", "sampled_cap_bits"},
     "memorization": {"k", "train": {"rate", "by_repetitions": {...}}, "held_out": {...}},
     "canaries": [{"id", "kind", "bucket", "repeats", "exposure", "exposure_sampled", "extracted"}, ...],
     "eval_overlap": {...}}                                   # with an eval set only
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from data_pipeline.canaries import KINDS, SIDECAR, sample
from data_pipeline.hf_tokenizer import load_tokenizer, tokenizer_file
from data_pipeline.indexed import IndexedDataset
from llm.audit import exposure as ex
from llm.audit.memorization import document_memorization, greedy_matches, sample_documents
from llm.config import ConfigError, DataConfig, read_saved_config
from llm.model import Transformer
from llm.train.checkpoint import latest_checkpoint
from llm.train.checkpoint_reader import open_checkpoint
from llm.train.progress import bar_progress


@dataclass
class AuditSettings:
    """What the audit samples; every draw is seeded."""

    candidates: int = 1000
    """Reference candidates per canary kind, drawn from the canaries' own generator."""
    k: int | None = None
    """Prompt and target tokens of document memorization; None: PaLM 2's 50, cut to fit the model's seq_len."""
    docs_per_bucket: int = 100
    """Training documents tested per repetition bucket, and held-out documents for the baseline."""
    seed: int = 0


def progress_factory(log_file: str | Path | None = None):
    """The `progress(desc, total)` that `audit` and `eval_overlap` take: a bar on a terminal, and lines (done, rate,
    ETA; every ~30 s) on stderr off a terminal and in `log_file` (llm/train/progress.py)."""
    return lambda desc, total: bar_progress(f"audit {desc}", total, "seq", log_file)


def load_model(checkpoint: str | Path, device: torch.device) -> tuple[Transformer, float, Path]:
    """The model of a checkpoint directory of any layout (or a run's out_dir / checkpoints dir: its latest),
    and the run's data.valid_fraction; ConfigError when there is none."""
    p = Path(checkpoint)
    for root in (p, p / "checkpoints"):
        if not (root / "model.pt").is_file() and root.is_dir() and latest_checkpoint(root) is not None:
            p = latest_checkpoint(root)
            break
    source = open_checkpoint(p)
    source.tokenizer  # a missing tokenizer is named before the weights are read
    model = source.build_model()
    raw = read_saved_config(p / "config.yaml") if (p / "config.yaml").is_file() else {}
    valid_fraction = float((raw.get("data") or {}).get("valid_fraction", DataConfig.valid_fraction))
    return model.to(device).eval(), valid_fraction, p


def check_same_tokenizer(data_tok, data_tok_path: Path, ckpt: Path) -> None:
    """Refuse a data folder tokenized with another tokenizer than the checkpoint's: its token ids mean other text to
    the model, and every exposure and memorization rate would be measured on noise (near zero, not a finding)."""
    source = open_checkpoint(ckpt).tokenizer
    if not Path(source).exists():
        return  # a pretraining step directory whose data.tokenizer moved: nothing to compare against
    own = load_tokenizer(tokenizer_file(source) if Path(source).is_dir() else source)
    if own.fingerprint() != data_tok.fingerprint():
        raise ConfigError(f"{data_tok_path.parent} was tokenized with {data_tok_path} (sha256 "
                          f"{data_tok.fingerprint()[:12]}…) but {ckpt} was trained with {source} "
                          f"({own.fingerprint()[:12]}…): audit the data folder the checkpoint was trained on")


def _summary(rows: list[dict]) -> dict:
    return {"canaries": len(rows),
            "exposure_mean": float(np.mean([r["exposure"] for r in rows])),
            "exposure_sampled_mean": float(np.mean([r["exposure_sampled"] for r in rows])),
            "exposure_max": float(np.max([r["exposure"] for r in rows])),
            "extraction_rate": float(np.mean([r["extracted"] for r in rows]))}


def _bucket(rows: list[dict], repeats: int, copies_in_train: int) -> dict:
    out = {"repeats": repeats, "copies_in_train": copies_in_train, **_summary(rows)}
    out["kinds"] = {kind: _summary([r for r in rows if r["kind"] == kind]) for kind in KINDS
                    if any(r["kind"] == kind for r in rows)}
    return out


def audit_canaries(model, plan: dict, tok, eod_id: int, train_end: int, doc_ends: np.ndarray,
                   settings: AuditSettings, bar) -> dict:
    """Exposure and extraction of every canary of the sidecar ``plan``; the ``buckets`` and ``canaries`` parts."""
    rng = np.random.RandomState(settings.seed + 1)  # not the insertion seed: candidates are fresh draws
    rows = []
    for kind in KINDS:
        cans = [c for c in plan["canaries"] if c["kind"] == kind]
        refs = sample(plan["generator"], kind, tok, rng, settings.candidates)
        ref_bits = ex.log_perplexity(model, [r["token_ids"] for r in refs], eod_id, on_batch=bar.update)
        fit, cap = ex.fit_candidates(ref_bits), ex.space_bits(plan["generator"], kind)
        bits = ex.log_perplexity(model, [c["token_ids"] for c in cans], eod_id, on_batch=bar.update)
        hits = greedy_matches(model, [c["token_ids"][:c["prefix_len"]] for c in cans],
                              [c["token_ids"][c["prefix_len"]:] for c in cans], eod_id, on_batch=bar.update)
        for c, b, hit in zip(cans, bits, hits):
            rows.append({"id": c["id"], "kind": kind, "bucket": c["bucket"], "repeats": c["repeats"],
                         "copies_in_train": int(sum(doc_ends[d] <= train_end for d in c["documents"])),
                         "log_perplexity_bits": float(b), "exposure": ex.exposure_extrapolated(b, fit, cap),
                         "exposure_sampled": ex.exposure_sampled(b, ref_bits), "extracted": bool(hit)})
    buckets = {}
    for r in sorted({r["repeats"] for r in rows if r["repeats"]}):
        mine = [x for x in rows if x["repeats"] == r]
        buckets[str(r)] = _bucket(mine, r, sum(x["copies_in_train"] for x in mine))
    buckets["held_out"] = _bucket([x for x in rows if not x["repeats"]], 0, 0)
    return {"buckets": buckets, "canaries": rows,
            "exposure": {"method": "skew-normal extrapolation (Carlini et al. 2019 Sec. 4.3); exposure_sampled: "
                                   "rank among the candidates (Sec. 4.2)",
                         "candidates": settings.candidates, "chance_bits": ex.CHANCE_BITS,
                         "space_bits": {kind: ex.space_bits(plan["generator"], kind) for kind in KINDS},
                         "sampled_cap_bits": float(np.log2(settings.candidates + 1))}}


def audit(checkpoint: str | Path, data_dir: str | Path, settings: AuditSettings, progress) -> dict:
    """The whole audit (see the module docstring); ``progress(desc, total)`` returns a bar with ``update(n)``.
    Raises ConfigError naming what is missing or does not fit."""
    data_dir = Path(data_dir)
    if not (data_dir / "data.idx").is_file():
        raise ConfigError(f"{data_dir} is not a prepared data folder (no data.bin/.idx; see launch/prepare_data.py)")
    model, valid_fraction, ckpt = load_model(checkpoint, torch.device("cpu"))
    tok = load_tokenizer(tokenizer_file(data_dir))
    check_same_tokenizer(tok, tokenizer_file(data_dir), ckpt)
    if tok.vocab_size > model.cfg.vocab_size:
        raise ConfigError(f"{data_dir}'s tokenizer has {tok.vocab_size} pieces, more than the model's "
                          f"vocab_size={model.cfg.vocab_size}: was {ckpt} trained on it?")
    ds = IndexedDataset(data_dir / "data")
    doc_ends = np.cumsum(np.asarray(ds.sizes, dtype=np.int64))
    train_end = ds.num_tokens() - int(round(ds.num_tokens() * valid_fraction))
    k = settings.k or min(50, (model.cfg.seq_len - 1) // 2)
    if 2 * k + 1 > model.cfg.seq_len:
        raise ConfigError(f"k={k}: a {k}-token prompt, {k} decoded tokens and the leading EOD exceed the "
                          f"model's seq_len={model.cfg.seq_len}; pass --k {(model.cfg.seq_len - 1) // 2} or less")
    sidecar = data_dir / SIDECAR
    try:
        plan = json.loads(sidecar.read_text(encoding="utf-8")) if sidecar.is_file() else None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{sidecar} is not JSON ({e}); it is written by launch/prepare_data.py with the data: "
                          "prepare the folder again") from None
    if plan is not None and not (isinstance(plan, dict) and isinstance(plan.get("canaries"), list)
                                 and "generator" in plan):
        raise ConfigError(f"{sidecar} is not a canary plan (an object with 'generator' and a 'canaries' list); "
                          "prepare the folder again")
    out = {"checkpoint": str(ckpt), "data": str(data_dir), "valid_fraction": valid_fraction}
    if plan is not None:
        longest = max(len(c["token_ids"]) for c in plan["canaries"])
        if longest > model.cfg.seq_len:
            raise ConfigError(f"{sidecar}: canaries of {longest} tokens exceed the model's seq_len={model.cfg.seq_len}")
        n = len(KINDS) * settings.candidates + 2 * len(plan["canaries"])
        bar = progress("canaries", n)
        out.update(audit_canaries(model, plan, tok, tok.eos_id, train_end, doc_ends, settings, bar))
        bar.close()
    exclude = {d for c in plan["canaries"] for d in c["documents"]} if plan else set()
    docs = sample_documents(ds, train_end, k, settings.docs_per_bucket, exclude, settings.seed)
    bar = progress("memorization", sum(map(len, docs["train"].values())) + len(docs["held_out"]))
    out["memorization"] = document_memorization(model, ds, docs, k, tok.eos_id, on_batch=bar.update)
    bar.close()
    return out
