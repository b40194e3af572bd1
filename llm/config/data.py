"""Which prepared datasets a run reads, and how they split into train and validation."""
from __future__ import annotations

from dataclasses import dataclass, field

from typed_yaml import ConfigError


@dataclass
class DataConfig:
    paths: list[str] = field(default_factory=list)
    """Prefixes of Megatron .bin/.idx datasets (without the extension)."""
    weights: list[float] | None = None
    """Blend weights, one per path; defaults to proportional to nothing: equal weights."""
    tokenizer: str | None = None
    """A SentencePiece .model (or a tokenizer.json); its vocab must fit model.vocab_size. Every checkpoint carries a
    copy (llm/train/checkpoint.py `save_tokenizer`), so the path matters only while the run trains."""
    document_mask: bool = False
    """Keep attention within each packed document (as Llama 3's long-context training): a token attends only to the
    earlier tokens of its own document, and its rotary position counts from the document's start. Documents are
    told apart by the EOS token that closes each one (data_pipeline's encoder appends it): the EOS opens the next
    segment, acting as its BOS. Off: a sample attends across the documents packed into it (GPT-2/3's packing)."""
    valid_fraction: float = 0.05
    """Tail fraction of each dataset's token stream held out for evaluation."""

    def validate(self, where: str = "data") -> None:
        if not self.paths:
            raise ConfigError(f"{where}.paths is empty: name at least one prepared dataset prefix "
                              "(the output of launch/prepare_data.py, e.g. runs/data/python_docs/data)")
        if self.weights is not None and len(self.weights) != len(self.paths):
            raise ConfigError(f"{where}.weights has {len(self.weights)} entries but {where}.paths has "
                              f"{len(self.paths)}")
        if self.weights is not None and (any(w < 0 for w in self.weights) or sum(self.weights) <= 0):
            raise ConfigError(f"{where}.weights must be non-negative with a positive sum")
        if self.document_mask and not self.tokenizer:
            raise ConfigError(f"{where}.document_mask needs {where}.tokenizer: documents are told apart by its EOS "
                              "token")
        if not 0.0 < self.valid_fraction < 1.0:
            raise ConfigError(f"{where}.valid_fraction={self.valid_fraction} must be in (0, 1)")
