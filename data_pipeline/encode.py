"""The pipeline's encode stage: documents → token ids in Megatron .bin/.idx shards, in parallel worker processes.

The tokenizer itself (training one, encode/decode) is data_pipeline/tokenizer.py; this module runs it over a corpus.

Every document is encoded with the project's sentencepiece model and followed by the EOD (the
model's EOS id) so that packed samples see document boundaries. Workers encode batches of
documents; ``imap`` returns them in submission order, so the output does not depend on the
number of workers or on scheduling (needed for byte-identical resumption).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from data_pipeline.errors import DataError
from data_pipeline.hf_tokenizer import load_tokenizer
from data_pipeline.indexed import IndexedDatasetBuilder, dtype_for_vocab
from data_pipeline.tokenizer import train_tokenizer


@dataclass
class TokenizeConfig:
    """Tokenizer choice and parallelism."""

    tokenizer: str | None = None
    """A sentencepiece .model, or a tokenizer.json / Hugging Face directory holding one (data_pipeline/hf_tokenizer.py);
    None trains one on a sample of the kept documents."""
    vocab_size: int = 4096
    """For a trained tokenizer; matches the model config's default vocab_size."""
    model_type: str = "bpe"
    """SentencePiece algorithm of a trained tokenizer: bpe, unigram, char or word."""
    train_docs: int = 2000
    """Documents (the first kept ones, in shard order) the tokenizer is trained on."""
    train_max_sentences: int = 200_000
    """Most lines of those documents SentencePiece trains on (a seeded sample): training takes seconds at this
    size, on one thread, and gives the same model on every run."""
    workers: int = 2
    """Encoding processes; 0 or 1 encodes in the main process."""
    batch_docs: int = 64
    """Documents per task handed to a worker (amortises inter-process transfer)."""


def train_from_texts(texts: Iterable[str], out_dir: Path, cfg: TokenizeConfig) -> Path:
    """Train ``out_dir/tokenizer.model`` on the first ``cfg.train_docs`` of ``texts``."""
    sample = (t for k, t in zip(range(cfg.train_docs), texts))
    try:
        return train_tokenizer(sample, out_dir / "tokenizer", cfg.vocab_size, model_type=cfg.model_type,
                               max_sentences=cfg.train_max_sentences)
    except ValueError as exc:
        raise DataError(f"tokenize.vocab_size={cfg.vocab_size} does not fit the tokenizer's training text "
                        f"(the first tokenize.train_docs={cfg.train_docs} kept documents): {exc}") from None


_worker_tok = None  # a Tokenizer or HFTokenizer (load_tokenizer)


def _init_worker(model_path: str) -> None:
    global _worker_tok
    _worker_tok = load_tokenizer(model_path)


def _encode(batch: list[str]) -> list[list[int]]:
    ids = _worker_tok.encode_batch(batch)
    for row in ids:
        row.append(_worker_tok.eos_id)
    return ids


def _batches(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for t in texts:
        batch.append(t)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class TokenizerPool:
    """Context manager owning the worker processes for a whole stage (started once, not per shard)."""

    def __init__(self, model_path: Path, cfg: TokenizeConfig):
        self.model_path, self.cfg = str(model_path), cfg
        self.vocab_size = load_tokenizer(model_path).vocab_size
        self.pool = None

    def __enter__(self) -> "TokenizerPool":
        if self.cfg.workers > 1:
            # forkserver, not fork: a plain fork copies this process's threads' locks (torch's, a compiler
            # pool's) without the threads, so a worker can block forever, and it inherits Python signal handlers
            # (training's SIGTERM flag) that keep Pool.terminate() from ending it: both hung a test run. The
            # server starts once per process from a clean interpreter with this module preloaded, and forks
            # workers from there in milliseconds.
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload([__name__])
            self.pool = ctx.Pool(self.cfg.workers, _init_worker, (self.model_path,))
        else:
            _init_worker(self.model_path)
        return self

    def __exit__(self, *exc) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def encode(self, texts: Iterable[str]) -> Iterator[list[int]]:
        """Token ids (EOD appended) of each text, in input order."""
        batches = _batches(texts, self.cfg.batch_docs)
        results = self.pool.imap(_encode, batches) if self.pool else map(_encode, batches)
        for batch in results:
            yield from batch

    def write_shard(self, texts: Iterable[str], prefix: Path, on_doc=None) -> tuple[int, int]:
        """Tokenize ``texts`` into ``prefix.bin/.idx``; returns (documents, tokens)."""
        docs = tokens = 0
        with IndexedDatasetBuilder(prefix, dtype_for_vocab(self.vocab_size)) as builder:
            for ids in self.encode(texts):
                builder.add_document(ids)
                docs += 1
                tokens += len(ids)
                if on_doc is not None:
                    on_doc()
        return docs, tokens
