"""The bundled corpus tokenized as is (no filtering, no dedup): the tiny dataset of the launcher
tests (tests/parallel/launcher_utils.py).

Not the data pipeline, which launch/prepare_data.py runs and test_pipeline.py tests end to end: this
takes a few seconds, and its output depends only on the corpus and ``vocab_size``.
"""

from __future__ import annotations

from pathlib import Path

from data_pipeline.indexed import IndexedDatasetBuilder, dtype_for_vocab
from data_pipeline.readers import read_jsonl
from data_pipeline.tokenizer import Tokenizer, train_tokenizer


def _texts(paths: list[Path]):
    """Every record's text in file order, blank ones skipped (they would add only EOS)."""
    return (d.text for p in paths for d in read_jsonl(p) if d.text.strip())


def tokenize_jsonl(jsonl_paths, output_dir, vocab_size: int) -> dict:
    """Train ``output_dir/tokenizer.model`` on ``jsonl_paths`` and write ``output_dir/data.bin/.idx``,
    every document followed by EOS. Returns {"tokenizer", "prefix", "documents", "tokens"} (tokens
    include the EOS ids)."""
    paths, output_dir = [Path(p) for p in jsonl_paths], Path(output_dir)
    model_path = train_tokenizer(_texts(paths), output_dir / "tokenizer", vocab_size)
    tokenizer = Tokenizer(model_path)
    prefix = output_dir / "data"
    documents = tokens = 0
    with IndexedDatasetBuilder(prefix, dtype=dtype_for_vocab(tokenizer.vocab_size)) as builder:
        for text in _texts(paths):
            ids = tokenizer.encode(text) + [tokenizer.eos_id]
            builder.add_document(ids)
            documents += 1
            tokens += len(ids)
    return {"tokenizer": str(model_path), "prefix": str(prefix), "documents": documents, "tokens": tokens}
