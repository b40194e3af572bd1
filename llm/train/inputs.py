"""What the model reads from a batch of packed samples: inputs, next-token targets and, under data.document_mask,
each token's document and position (llm/documents.py). Shared by both backends, so they train on the same."""
from __future__ import annotations

import torch

from llm.config import RunConfig
from llm.documents import segments


def document_eos(cfg: RunConfig) -> int | None:
    """The EOS id that separates documents when data.document_mask is on (from data.tokenizer), else None."""
    if not cfg.data.document_mask:
        return None
    from data_pipeline.hf_tokenizer import load_tokenizer
    eos = load_tokenizer(cfg.data.tokenizer).eos_id
    if eos is None or eos < 0:
        from llm.config import ConfigError
        raise ConfigError(f"data.document_mask: the tokenizer {cfg.data.tokenizer} has no EOS token to tell the "
                          "documents apart")
    return eos


def split_batch(batch: torch.Tensor, eos_id: int | None) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """(inputs, targets, keyword arguments of Transformer.lm_loss) of samples (batch, seq_len + 1)."""
    inputs, targets = batch[:, :-1], batch[:, 1:]
    if eos_id is None:
        return inputs, targets, {}
    doc_ids, positions = segments(inputs, eos_id)
    return inputs, targets, {"doc_ids": doc_ids, "positions": positions}
