"""A base model from outside the chain: `base.path` naming a step directory written by launch/pretrain.py.

Such a directory holds the consolidated weights (`model.pt`, whatever the layout it was trained in; read by
llm/train/checkpoint.py `read_model_weights`), the run's `config.yaml` (its `model` section is the shape) and names
its tokenizer in `data.tokenizer` (a path as the run was given it; also looked for next to the weights, as
tokenizer.model). `import_pretrained` turns it into the chain's <out_dir>/base stage checkpoint, so every later
stage reads it like a base made inside the chain. Weights and tokenizer are each read by one call (`_weights`,
`_tokenizer`): where Hugging Face directories become readable (read_model_weights and a `load_tokenizer(path)`
that picks SentencePiece or HF), those two calls are what changes.
"""
from __future__ import annotations

from pathlib import Path

from llm.align import handoff


def is_pretrain_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / "model.pt").is_file() and (p / "config.yaml").is_file() and not handoff.is_complete(p)


def _tokenizer_path(src: Path, named: str | None) -> Path:
    for candidate in ([Path(named), src / Path(named).name] if named else []) + [src / "tokenizer.model"]:
        if candidate.is_file():
            return candidate
    raise handoff.HandoffError(f"base.path={src}: its tokenizer {named!r} (config.yaml data.tokenizer) is not there, "
                               f"nor {src}/tokenizer.model; copy it next to the weights")


def _weights(src: Path) -> dict:
    from llm.train.checkpoint import read_model_weights
    return read_model_weights(src)


def _tokenizer(path: Path):
    from data_pipeline.tokenizer import Tokenizer
    return Tokenizer(path)


def load_pretrained(src: str | Path):
    """(Transformer, tokenizer, tokenizer path, the run's RunConfig) of a launch/pretrain.py step directory.
    Raises HandoffError when a piece is missing or the weights do not fit the recorded shape."""
    from llm.config import load_config
    from llm.model import Transformer

    src = Path(src)
    if not is_pretrain_dir(src):
        raise handoff.HandoffError(f"base.path={src} is neither a stage checkpoint (stage.json) nor a pretraining "
                                   "step directory (model.pt and config.yaml)")
    run = load_config(src / "config.yaml")
    tok_path = _tokenizer_path(src, run.data.tokenizer)
    tok = _tokenizer(tok_path)
    if tok.vocab_size > run.model.vocab_size:
        raise handoff.HandoffError(f"base.path={src}: tokenizer {tok_path} has {tok.vocab_size} pieces but the model's "
                                   f"vocab_size is {run.model.vocab_size}")
    model = Transformer(run.model)
    handoff.load_checked(model, _weights(src), src)
    return model, tok, tok_path, run
