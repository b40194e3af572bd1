"""Tests for data_pipeline.tokenizer, trained on a slice of the bundled Python-docs corpus."""

import json
from pathlib import Path

import pytest

from data_pipeline.errors import DataError
from data_pipeline.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    _sample_lines,
    train_tokenizer,
)

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

CORPUS = Path(__file__).resolve().parents[2] / "data" / "raw" / "python_docs.jsonl"
VOCAB_SIZE = 1000


def _texts(n_docs):
    with open(CORPUS, encoding="utf-8") as f:
        return [json.loads(line)["text"] for _, line in zip(range(n_docs), f)]


@pytest.fixture(scope="module")
def corpus():
    texts = _texts(80)
    return texts[:60], texts[60:]


@pytest.fixture(scope="module")
def model_path(corpus, tmp_path_factory):
    train, _ = corpus
    return train_tokenizer(train, tmp_path_factory.mktemp("tok") / "sp", VOCAB_SIZE)


def test_model_file_and_special_ids(model_path):
    assert model_path.name == "sp.model" and model_path.is_file()
    assert not list(model_path.parent.glob("*.tmp"))
    tok = Tokenizer(model_path)
    assert tok.vocab_size == VOCAB_SIZE
    assert (tok.pad_id, tok.bos_id, tok.eos_id) == (PAD_ID, BOS_ID, EOS_ID) == (0, 2, 3)
    assert UNK_ID == 1


def test_round_trip_held_out_text(model_path, corpus):
    tok = Tokenizer(model_path)
    _, held_out = corpus
    for text in held_out[:10]:
        ids = tok.encode(text)
        assert all(0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    # It compresses: clearly fewer tokens than UTF-8 bytes on unseen text of the same domain.
    sample = "\n".join(held_out)
    assert len(tok.encode(sample)) < 0.5 * len(sample.encode("utf-8"))


@pytest.mark.parametrize("text", ["", "\n", "  indented\n\tcode  ", "naïve café 日本語 🐍",
                                  "x = 12345 * 678"])
def test_round_trip_edge_cases(model_path, text):
    """Identity normalization + byte fallback: whitespace and unseen characters survive."""
    tok = Tokenizer(model_path)
    ids = tok.encode(text)
    assert UNK_ID not in ids
    assert tok.decode(ids) == text


def test_encode_batch_matches_encode(model_path, corpus):
    tok = Tokenizer(model_path)
    texts = corpus[1][:5]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_training_is_deterministic(model_path, corpus, tmp_path):
    again = train_tokenizer(corpus[0], tmp_path / "again", VOCAB_SIZE)
    assert again.read_bytes() == model_path.read_bytes()
    assert Tokenizer(again).fingerprint() == Tokenizer(model_path).fingerprint()


def test_fingerprint_tells_models_apart(model_path, corpus, tmp_path):
    other = train_tokenizer(corpus[0], tmp_path / "other", VOCAB_SIZE + 100)
    fp = Tokenizer(model_path).fingerprint()
    assert len(fp) == 64 and fp != Tokenizer(other).fingerprint()


def test_line_sampling_is_bounded_seeded_and_ordered(corpus, tmp_path):
    texts = ["\n".join(f"{d:02d} {i:03d}" for i in range(100)) + "\n\n" for d in range(20)]
    lines = _sample_lines(texts, max_sentences=500, seed=0)
    assert len(lines) == 500
    assert lines == sorted(lines)  # corpus order is kept (the lines sort as they appear)
    assert lines == _sample_lines(texts, max_sentences=500, seed=0)
    assert lines != _sample_lines(texts, max_sentences=500, seed=1)
    assert {ln.split()[0] for ln in lines} == {f"{d:02d}" for d in range(20)}  # not just the head
    small = train_tokenizer(corpus[0], tmp_path / "small", 400, max_sentences=500)
    assert Tokenizer(small).vocab_size == 400


def test_missing_model(tmp_path):
    with pytest.raises(DataError, match="nope.model"):
        Tokenizer(tmp_path / "nope.model")


def test_vocab_too_large_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="vocab_size=50000"):
        train_tokenizer(["a tiny corpus", "with two lines"], tmp_path / "big", 50000)
    with pytest.raises(ValueError, match="no non-blank text"):
        train_tokenizer(["", "  \n"], tmp_path / "empty", 300)


def _training_sigterm_flag(signum, frame):  # stands for llm.train.loop.PreemptionFlag's handler
    pass


def test_pool_workers_start_clean_of_the_parents_signal_handlers(model_path, corpus):
    """Tokenizer workers must not be forks of a process that trained before (its SIGTERM flag, its threads'
    locks): a forked worker that inherits the flag survives Pool.terminate(), and one that inherits a held lock
    blocks forever — together they hung a full test run. Workers come from a clean forkserver instead."""
    import signal

    from data_pipeline.config import TokenizeConfig
    from data_pipeline.encode import TokenizerPool

    old = signal.signal(signal.SIGTERM, _training_sigterm_flag)
    try:
        with TokenizerPool(model_path, TokenizeConfig(workers=2)) as pool:
            assert pool.pool.apply(signal.getsignal, (signal.SIGTERM,)) == signal.SIG_DFL
            texts = corpus[1]
            assert list(pool.encode(texts)) == [ids + [EOS_ID] for ids in Tokenizer(model_path).encode_batch(texts)]
    finally:
        signal.signal(signal.SIGTERM, old)
