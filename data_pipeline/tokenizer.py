"""SentencePiece tokenizer: training from an iterable of texts, and a thin encode/decode wrapper.

Special ids are fixed for every model trained here: pad 0, unk 1, bos 2, eos 3. Pad exists so
that alignment stages can right-pad batches without growing the vocabulary.

Normalization is ``identity`` with whitespace kept as is and ``byte_fallback`` on (as in
Llama's tokenizer), so ``decode(encode(text)) == text`` for any UTF-8 text, code and
indentation included.
"""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import Iterable
from pathlib import Path

import sentencepiece as spm

from data_pipeline.errors import DataError
from typed_yaml.files import atomic_write_bytes

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
# The smallest vocabulary train_tokenizer can build: the 4 specials, the 256 byte-fallback
# pieces and one character; a real corpus needs one piece per distinct character on top.
MIN_VOCAB_SIZE = 4 + 256 + 1
# SentencePiece drops longer training lines (its default is 4192 bytes); said here so that the
# line sampler below does not waste reservoir slots on lines the trainer would skip.
MAX_SENTENCE_BYTES = 4192


def _sample_lines(texts: Iterable[str], max_sentences: int, seed: int) -> list[str]:
    """Up to ``max_sentences`` non-blank lines of ``texts``, by seeded reservoir sampling.

    Memory stays bounded by ``max_sentences`` whatever the corpus size, every line has the same
    chance to be kept (taking the first N lines would only see the first documents), and the
    kept lines are returned in corpus order so the result depends only on (texts, seed).
    """
    rng = random.Random(seed)
    reservoir: list[tuple[int, str]] = []
    seen = 0
    for text in texts:
        for line in text.splitlines():
            if not line.strip() or len(line.encode("utf-8")) > MAX_SENTENCE_BYTES:
                continue
            if len(reservoir) < max_sentences:
                reservoir.append((seen, line))
            else:
                j = rng.randrange(seen + 1)
                if j < max_sentences:
                    reservoir[j] = (seen, line)
            seen += 1
    reservoir.sort()
    return [line for _, line in reservoir]


def train_tokenizer(
    texts: Iterable[str],
    model_prefix: str | Path,
    vocab_size: int,
    model_type: str = "bpe",
    byte_fallback: bool = True,
    seed: int = 0,
    max_sentences: int = 200_000,
) -> Path:
    """Train a SentencePiece model on ``texts`` and write ``model_prefix + ".model"``.

    Args:
        texts: documents; each is split into lines, the unit SentencePiece trains on.
        model_prefix: output path without the ``.model`` suffix; parent folders are created.
        vocab_size: total pieces, including the 4 specials and (with byte_fallback) 256 bytes.
        model_type: ``"bpe"`` or ``"unigram"`` (or SentencePiece's ``"char"``/``"word"``).
        byte_fallback: encode characters outside the vocabulary as UTF-8 bytes, never as unk.
        seed: seeds the line sampling and SentencePiece's own random generator.
        max_sentences: at most this many lines are sampled from ``texts`` for training.

    Returns the model path. The file is written to a temporary name and moved into place, so a
    crash never leaves a partial model. Training is single-threaded, hence deterministic: the
    same texts and arguments give a byte-identical model.

    Raises ValueError if ``texts`` has no usable line or SentencePiece rejects the settings
    (most often a ``vocab_size`` larger than the corpus supports).
    """
    model_path = Path(str(model_prefix) + ".model")
    model_path.parent.mkdir(parents=True, exist_ok=True)
    lines = _sample_lines(texts, max_sentences, seed)
    if not lines:
        raise ValueError(f"no non-blank text to train {model_path} on")

    spm.set_random_generator_seed(seed)
    buffer = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_writer=buffer,
            vocab_size=vocab_size,
            model_type=model_type,
            byte_fallback=byte_fallback,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            # The lines are already sampled; letting SentencePiece resample would break the
            # "depends only on (texts, seed)" contract above.
            input_sentence_size=0,
            shuffle_input_sentence=False,
            max_sentence_length=MAX_SENTENCE_BYTES,
            # One thread: deterministic, and polite on shared machines; BPE on a few hundred
            # thousand lines takes seconds.
            num_threads=1,
            minloglevel=2,
        )
    except RuntimeError as e:
        # SentencePiece prefixes its reason with the failed C++ check: keep only the reason.
        reason = str(e).strip().splitlines()[-1].rsplit("] ", 1)[-1]
        raise ValueError(f"SentencePiece training for {model_path} failed "
                         f"(vocab_size={vocab_size}, {len(lines)} lines): {reason}") from None

    atomic_write_bytes(model_path, buffer.getvalue())
    return model_path


class Tokenizer:
    """A trained SentencePiece model. ``encode`` adds no BOS/EOS; callers add what they need."""

    def __init__(self, model_path: str | Path) -> None:
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            raise DataError(f"tokenizer model {self.model_path} not found; "
                                    "train one with data_pipeline.tokenizer.train_tokenizer")
        model_bytes = self.model_path.read_bytes()
        self._fingerprint = hashlib.sha256(model_bytes).hexdigest()
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model_bytes)
        except RuntimeError as e:
            raise DataError(f"{self.model_path} is not a SentencePiece model: {e}") from e
        self.vocab_size: int = self._sp.vocab_size()
        self.bos_id: int = self._sp.bos_id()
        self.eos_id: int = self._sp.eos_id()
        # -1 for models trained elsewhere without a pad piece.
        self.pad_id: int = self._sp.pad_id()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text, out_type=int)

    def decode(self, ids) -> str:
        return self._sp.decode([int(i) for i in ids])

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), out_type=int)

    def fingerprint(self) -> str:
        """sha256 of the model file: equal fingerprints mean identical tokenization."""
        return self._fingerprint

