"""Smallest end-to-end data preparation: JSONL texts -> SentencePiece model -> ``.bin``/``.idx``.

No filtering or deduplication (the full pipeline in ``launch/prepare_data.py`` does those); this
exists so that a trainer can be exercised on the bundled corpus (``data/raw/python_docs.jsonl``)
with one call.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

from data_pipeline.indexed import IndexedDatasetBuilder, dtype_for_vocab
from data_pipeline.tokenizer import Tokenizer, train_tokenizer

ENCODE_BATCH_DOCS = 256


def _read_texts(jsonl_paths: list, text_field: str) -> Iterator[str]:
    """Texts of every record, in file order; blank texts are skipped (they would add only EOS)."""
    for path in jsonl_paths:
        with open(path, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{line_no}: invalid JSON ({e})") from e
                if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
                    raise ValueError(f"{path}:{line_no}: no string field {text_field!r}")
                if record[text_field].strip():
                    yield record[text_field]


def prepare_minimal(jsonl_paths, output_dir, vocab_size, text_field="text") -> dict:
    """Train a tokenizer on ``jsonl_paths`` and tokenize them into one indexed dataset.

    Writes ``output_dir/tokenizer.model`` and ``output_dir/data.bin`` + ``data.idx``, each
    document followed by EOS. Returns ``{"tokenizer": str, "prefix": str, "documents": int,
    "tokens": int}`` (tokens include the EOS ids). Raises ValueError on malformed input.
    """
    if isinstance(jsonl_paths, (str, Path)):
        jsonl_paths = [jsonl_paths]
    jsonl_paths = [Path(p) for p in jsonl_paths]
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    model_path = train_tokenizer(_read_texts(jsonl_paths, text_field), output_dir / "tokenizer",
                                 vocab_size)
    tokenizer = Tokenizer(model_path)
    prefix = output_dir / "data"

    progress = None
    if sys.stderr.isatty():
        from tqdm import tqdm
        progress = tqdm(desc="tokenizing", unit="doc")
    documents = tokens = 0
    with IndexedDatasetBuilder(prefix, dtype=dtype_for_vocab(tokenizer.vocab_size)) as builder:
        texts = _read_texts(jsonl_paths, text_field)
        while True:
            batch = [t for _, t in zip(range(ENCODE_BATCH_DOCS), texts)]
            if not batch:
                break
            for ids in tokenizer.encode_batch(batch):
                ids.append(tokenizer.eos_id)
                builder.add_document(ids)
                tokens += len(ids)
            documents += len(batch)
            if progress is not None:
                progress.update(len(batch))
    if progress is not None:
        progress.close()
    return {"tokenizer": str(model_path), "prefix": str(prefix), "documents": documents,
            "tokens": tokens}
