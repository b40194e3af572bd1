"""Hugging Face tokenizers: our SentencePiece models written as `tokenizer.json`, and `tokenizer.json` read back.

`sentencepiece_to_hf` rebuilds a model trained by `train_tokenizer` with the `tokenizers` library so that it
gives SentencePiece's ids on every string. transformers' Llama conversion does not: its
`Metaspace(prepend_scheme="first")` skips the dummy prefix when the text already starts with a space, where
SentencePiece always adds one (every line of the bundled corpus that starts with a space disagreed). Here the
dummy prefix is a normalizer (`Prepend("▁")`, then spaces escaped to "▁") and there is no pre-tokenizer,
which is what SentencePiece's normalizer does for `add_dummy_prefix=True, remove_extra_whitespaces=False`
with the identity rule; SentencePiece's BPE then merges over the whole string, as the BPE model here does.

`HFTokenizer` has the interface of `data_pipeline.tokenizer.Tokenizer`; `load_tokenizer` picks either.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from data_pipeline.errors import DataError
from data_pipeline.tokenizer import Tokenizer

TOKENIZER_JSON = "tokenizer.json"
SPM_FILE = "tokenizer.model"
# What SentencePiece's normalizer gives for " a  b\tc" under train_tokenizer's settings: the dummy prefix always
# added (also before a leading space), spaces escaped one for one, other whitespace untouched.
_IDENTITY_NORMALIZED = "▁▁a▁▁b\tc"


def sentencepiece_to_hf(model_path: str | Path):
    """A `tokenizers.Tokenizer` that encodes and decodes exactly like the SentencePiece model at model_path.

    Raises ValueError for a model the tokenizer.json written here would not reproduce: a unigram one, or one whose
    normalizer is not train_tokenizer's (identity rule, dummy prefix, whitespace kept).
    """
    from tokenizers import AddedToken, decoders, normalizers
    from tokenizers import Tokenizer as HFBackend
    from tokenizers.models import BPE
    from transformers.tokenization_utils_base import generate_merges

    sp = Tokenizer(model_path)._sp
    if sp.normalize(" a  b\tc") != _IDENTITY_NORMALIZED:
        raise ValueError(f"{model_path}: its normalizer turns ' a  b\\tc' into {sp.normalize(' a  b	c')!r}, not "
                         f"{_IDENTITY_NORMALIZED!r}; only models trained by train_tokenizer (identity rule, "
                         "whitespace kept) can be converted exactly")
    n = sp.get_piece_size()
    pieces = [sp.id_to_piece(i) for i in range(n)]
    special = [i for i in range(n) if sp.is_control(i) or sp.is_unknown(i)]
    unk = pieces[sp.unk_id()]
    if _is_unigram(sp):
        # tokenizers' Unigram breaks ties between equal-score segmentations (runs of one character) otherwise
        # than SentencePiece: 1 line in 300 of the bundled corpus differed.
        raise ValueError(f"{model_path} is a unigram model; only BPE models (train_tokenizer's default) "
                         "convert exactly")
    vocab = {p: i for i, p in enumerate(pieces)}
    # SentencePiece's BPE applies the merge whose result has the highest score; byte and special pieces are never
    # the result of a merge.
    mergeable = {p: sp.get_score(i) for i, p in enumerate(pieces)
                 if not (sp.is_control(i) or sp.is_unknown(i) or sp.is_byte(i))}
    skip = [p for p in pieces if p not in mergeable]
    tok = HFBackend(BPE(vocab=vocab, merges=generate_merges(vocab, mergeable, skip), unk_token=unk, fuse_unk=True,
                        byte_fallback=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    # Decoding undoes the escaping and removes the one dummy prefix, as SentencePiece's decoder does.
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(content=" ", left=1)])
    tok.add_special_tokens([AddedToken(pieces[i], special=True, normalized=False) for i in special])
    return tok


def _is_unigram(sp) -> bool:
    # The processor exposes no model type; only unigram models can give n-best segmentations.
    try:
        sp.nbest_encode("a", nbest_size=2)
    except RuntimeError:
        return False
    return True


def save_hf_tokenizer(model_path: str | Path, out_dir: str | Path) -> None:
    """Write model_path (a SentencePiece model) as transformers tokenizer files in out_dir.

    `AutoTokenizer.from_pretrained(out_dir)` then encodes like `Tokenizer.encode`: no BOS/EOS added, and special
    pieces written in the text ("</s>") are text, as SentencePiece treats them (`split_special_tokens`).
    """
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(model_path)
    sp = tok._sp
    name = {i: sp.id_to_piece(i) if i >= 0 else None for i in (tok.bos_id, tok.eos_id, tok.pad_id, sp.unk_id())}
    fast = PreTrainedTokenizerFast(tokenizer_object=sentencepiece_to_hf(model_path), bos_token=name[tok.bos_id],
                                   eos_token=name[tok.eos_id], pad_token=name[tok.pad_id], unk_token=name[sp.unk_id()],
                                   split_special_tokens=True, add_bos_token=False, add_eos_token=False,
                                   clean_up_tokenization_spaces=False)
    fast.save_pretrained(str(out_dir))


class HFTokenizer:
    """A `tokenizer.json` (a Hugging Face model directory or the file itself), read with `tokenizers`.

    Same interface as `Tokenizer`: `encode` adds no BOS/EOS and treats special tokens written in the text as text;
    bos/eos/pad ids come from tokenizer_config.json (else config.json) next to the file, -1 where there is none.
    """

    def __init__(self, path: str | Path) -> None:
        from tokenizers import Tokenizer as HFBackend

        path = Path(path)
        self.path = path / TOKENIZER_JSON if path.is_dir() else path
        if not self.path.is_file():
            raise DataError(f"{path}: no {TOKENIZER_JSON}")
        raw = self.path.read_bytes()
        self._fingerprint = hashlib.sha256(raw).hexdigest()
        try:
            self._tok = HFBackend.from_str(raw.decode("utf-8"))
        except Exception as e:  # tokenizers raises a bare Exception on a malformed file
            raise DataError(f"{self.path} is not a tokenizers file: {e}") from None
        self._tok.encode_special_tokens = True
        self.vocab_size: int = self._tok.get_vocab_size(with_added_tokens=True)
        self.bos_id, self.eos_id, self.pad_id = (self._special_id(self.path.parent, k) for k in ("bos", "eos", "pad"))

    def _special_id(self, folder: Path, kind: str) -> int:
        tc = folder / "tokenizer_config.json"
        if tc.is_file():
            token = json.loads(tc.read_text()).get(f"{kind}_token")
            token = token.get("content") if isinstance(token, dict) else token
            if token is not None and self._tok.token_to_id(token) is not None:
                return self._tok.token_to_id(token)
        cfg = folder / "config.json"
        if cfg.is_file():
            value = json.loads(cfg.read_text()).get(f"{kind}_token_id")
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int):
                return value
        return -1

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def fingerprint(self) -> str:
        """sha256 of tokenizer.json: equal fingerprints mean identical tokenization."""
        return self._fingerprint


def is_hf_tokenizer(path: str | Path) -> bool:
    p = Path(path)
    return (p / TOKENIZER_JSON).is_file() if p.is_dir() else p.name.endswith(".json")


def load_tokenizer(path: str | Path) -> Tokenizer | HFTokenizer:
    """A SentencePiece `.model` file (or a directory holding tokenizer.model but no tokenizer.json) as `Tokenizer`;
    a tokenizer.json, or a directory holding one, as `HFTokenizer`. Raises DataError when there is neither."""
    p = Path(path)
    if is_hf_tokenizer(p):
        return HFTokenizer(p)
    if p.is_dir():
        if not (p / SPM_FILE).is_file():
            raise DataError(f"{p}: no {TOKENIZER_JSON} nor {SPM_FILE}")
        p = p / SPM_FILE
    return Tokenizer(p)


def copy_tokenizer(src: str | Path, out_dir: str | Path) -> Path:
    """Copy a tokenizer (a SentencePiece .model, a tokenizer.json or a directory holding one) into out_dir, as
    out_dir/tokenizer.model or out_dir/tokenizer.json with its tokenizer_config.json; returns that file."""
    src, out_dir = Path(src), Path(out_dir)
    if not is_hf_tokenizer(src):
        shutil.copyfile(src, out_dir / SPM_FILE)
        return out_dir / SPM_FILE
    folder = src if src.is_dir() else src.parent
    shutil.copyfile(folder / TOKENIZER_JSON if src.is_dir() else src, out_dir / TOKENIZER_JSON)
    # tokenizer_config.json names the special tokens (HFTokenizer's bos/eos/pad ids).
    for name in ("tokenizer_config.json", "special_tokens_map.json"):
        if (folder / name).is_file():
            shutil.copyfile(folder / name, out_dir / name)
    return out_dir / TOKENIZER_JSON


def tokenizer_file(folder: str | Path) -> Path:
    """The tokenizer copy_tokenizer (or tokenizer training) left in folder: tokenizer.json if any, else
    tokenizer.model."""
    folder = Path(folder)
    return folder / TOKENIZER_JSON if (folder / TOKENIZER_JSON).is_file() else folder / SPM_FILE
