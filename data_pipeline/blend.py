"""Offline blend report: what a weighted mix of prepared datasets will draw from each source.

The mixing rule itself is Megatron's, implemented once in ``gpt_dataset.BlendedDataset`` and
used at training time (``data.paths`` + ``data.weights``); this module builds the same object
to report, before training, the samples and tokens each source contributes and how many epochs
of it that is (a weight asking for more than a source holds repeats it).
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.gpt_dataset import BlendedDataset, PackedDataset


def blend_report(paths: list[str], weights: list[float], seq_len: int, samples: int | None = None,
                 split: str = "train", valid_fraction: float = 0.05, seed: int = 0) -> dict:
    """Per-source samples, tokens and epochs of a blend of ``samples`` sequences of ``seq_len``.

    Raises ValueError (from BlendedDataset/PackedDataset) on bad weights or too-small sources.
    """
    sources = [PackedDataset(Path(p), seq_len, split, valid_fraction, seed) for p in paths]
    blend = BlendedDataset(sources, weights, samples)
    counts = blend.source_counts()
    rows = []
    for k, (p, src) in enumerate(zip(paths, sources)):
        drawn = counts[k]
        rows.append({"path": str(p), "weight": float(blend.weights[k]), "samples": drawn,
                     "tokens": drawn * seq_len, "available_samples": len(src),
                     "available_tokens": src.tokens.num_tokens(),
                     "epochs": round(drawn / max(len(src), 1), 4),
                     "achieved_fraction": round(drawn / max(len(blend), 1), 6)})
    return {"seq_len": seq_len, "samples": len(blend), "tokens": len(blend) * seq_len, "sources": rows,
            "pretrain_yaml": {"data": {"paths": [str(p) for p in paths], "weights": list(weights)}}}
