"""An evaluation set's n-gram overlap with the training data, by data_pipeline/decontaminate.py's rule (GPT-3's
13-grams of lower-cased words, Brown et al. 2020 App. C), reported beside the memorization figures.

The pipeline's Decontaminator holds the n-grams of the texts it protects and matches others against them; here
the protected texts are the training documents (decoded from data.bin, the canaries' copies left out) and the
matched ones the evaluation examples. Its n-gram set lives in memory (about 100 B per distinct n-gram): fine for
the corpora this project prepares on one machine, not for a web-scale one.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

from data_pipeline.canaries import SIDECAR
from data_pipeline.decontaminate import DecontaminateConfig, Decontaminator
from data_pipeline.hf_tokenizer import load_tokenizer, tokenizer_file
from data_pipeline.indexed import IndexedDataset
from data_pipeline.readers import read_documents


def eval_overlap(eval_path: str | Path, data_dir: str | Path, progress, ngram: int = 13) -> dict:
    """{"eval_documents", "overlapping", "fraction", "ngram", "examples"}: the eval examples sharing an n-gram
    with some training document (up to 20 of their ids in "examples")."""
    data_dir = Path(data_dir)
    tok = load_tokenizer(tokenizer_file(data_dir))
    ds = IndexedDataset(data_dir / "data")
    sidecar = data_dir / SIDECAR
    skip = ({d for c in json.loads(sidecar.read_text())["canaries"] for d in c["documents"]}
            if sidecar.is_file() else set())
    with tempfile.TemporaryDirectory() as tmp:
        train = Path(tmp) / "train.jsonl"
        bar = progress("decode train", len(ds))
        with open(train, "w", encoding="utf-8") as f:
            for i in range(len(ds)):
                if i not in skip:
                    ids = [t for t in ds[i].tolist() if t != tok.eos_id]
                    f.write(json.dumps({"id": str(i), "text": tok.decode(ids)}) + "\n")
                bar.update()
        bar.close()
        index = Decontaminator(DecontaminateConfig(eval_paths=[str(train)], ngram=ngram))
    hits, total = [], 0
    for doc in read_documents(Path(eval_path)):
        total += 1
        if index.match(doc.text) is not None:
            hits.append(doc.id)
    return {"eval": str(eval_path), "ngram": ngram, "eval_documents": total, "overlapping": len(hits),
            "fraction": len(hits) / total if total else None, "examples": hits[:20]}
