"""The alignment data formats (TRL's and OpenRLHF's conventions), read from a JSONL file, a `datasets`
`save_to_disk` directory or a parquet file, and checked row by row.

- conversations (SFT): {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]} with at least
  one assistant turn (each one trained on), or {"prompt": str | messages, "completion": str | messages};
- preference pairs (RM, DPO): {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages},
  the replies made of assistant turns;
- prompts (RL, evaluation): {"prompt": str | messages} or {"messages": [...]} (no assistant reply yet), every
  other field kept and passed to the reward function (e.g. the reference answer);
- the prompts of conversations (the RM's samples on sft.eval_data): conversation rows, either form, with the reply
  dropped: the prompt is the turns before the last assistant turn (or `prompt` of a prompt/completion row), the
  other fields kept as for prompts. So a key that holds conversations for one stage serves another as prompts.

A row that cannot be used — not JSON, a missing or mistyped field, an unknown role, no assistant turn, a pair
whose chosen and rejected replies are the same text (whitespace aside: it carries no preference, so the RM and DPO
losses learn nothing from it), tokens beyond seq_len — is named by where it is (file:line for JSONL, file[row i]
otherwise) with the reason. Under `bad_rows: skip` it is left out and counted (`Loaded.skipped`, reported by the
stage); under `refuse` the first one raises DataFileError. Nothing is truncated. A source that cannot be read at all —
a JSONL file that is not UTF-8 (binary, compressed, UTF-16, Latin-1), a corrupt or truncated parquet file, a
directory that is not a readable `save_to_disk` dataset — raises DataFileError naming it (and the line), whatever
`bad_rows` says.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from llm.align.template import ROLES, ChatTemplate, as_messages
from llm.config import ConfigError


class DataFileError(ConfigError):
    """A data file that cannot be read, or a bad row under bad_rows: refuse; the message names where."""


class BadRow(ValueError):
    pass


@dataclass
class Loaded:
    """The usable rows of one data source and what was skipped."""

    path: str
    rows: list = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """'<where>: <reason>' of each row left out."""

    def summary(self) -> str:
        head = "; ".join(self.skipped[:3]) + (" …" if len(self.skipped) > 3 else "")
        return f"{self.path}: {len(self.rows)} rows used, {len(self.skipped)} skipped" + (f" ({head})" if head else "")


def read_records(path: str | Path) -> Iterator[tuple[str, dict | BadRow]]:
    """(where, row) for every record of a data source; a JSONL line that is not a JSON object comes as a BadRow.
    Raises DataFileError when the source does not exist or is not a format we read."""
    p = Path(path)
    if p.is_dir():
        import datasets
        import pyarrow
        try:
            ds = datasets.load_from_disk(str(p))
            if isinstance(ds, datasets.DatasetDict):
                if list(ds) != ["train"]:
                    raise DataFileError(f"{p}: a DatasetDict with splits {list(ds)}; give one split's directory")
                ds = ds["train"]
            rows = ds.to_list()
        # The directory's files, not our code: missing, foreign or corrupt arrow/JSON files.
        except (FileNotFoundError, ValueError, pyarrow.ArrowException, OSError) as e:
            if isinstance(e, DataFileError):
                raise
            raise DataFileError(f"{p}: not a readable datasets save_to_disk directory ({type(e).__name__}: "
                            f"{' '.join(str(e).split())[:200]})") from None
        for i, row in enumerate(rows):
            yield f"{p}[row {i}]", row
    elif p.suffix == ".parquet" and p.is_file():
        import pyarrow
        import pyarrow.parquet as pq
        try:
            rows = pq.read_table(p).to_pylist()
        except (pyarrow.ArrowException, OSError) as e:  # the file's bytes, not our code: a truncated or foreign file
            raise DataFileError(f"{p}: not a readable parquet file ({' '.join(str(e).split())[:200]})") from None
        for i, row in enumerate(rows):
            yield f"{p}[row {i}]", row
    elif p.is_file():
        yield from _jsonl_records(p)
    else:
        raise DataFileError(f"{p}: no such data file or directory")


def _jsonl_records(p: Path) -> Iterator[tuple[str, dict | BadRow]]:
    """The records of a JSONL file; DataFileError at the first line that is not UTF-8 text (a binary, compressed,
    UTF-16 or Latin-1 file): no row of such a file can be trusted, so it is refused whatever bad_rows says."""
    with open(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                if b"\x00" in raw:
                    raise UnicodeDecodeError("utf-8", raw, raw.index(b"\x00"), raw.index(b"\x00") + 1, "NUL byte")
                line = raw.decode("utf-8-sig" if n == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataFileError(f"{p}:{n}: not UTF-8 text (byte {raw[e.start:e.start + 1]!r} at column "
                                    f"{e.start + 1}: a binary, compressed, UTF-16 or Latin-1 file?); give UTF-8 JSONL, "
                                    "parquet or a datasets save_to_disk directory") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                yield f"{p}:{n}", BadRow(f"not JSON ({e.msg})")
                continue
            yield f"{p}:{n}", row if isinstance(row, dict) else BadRow("not a JSON object")


def _messages(value, role: str, what: str) -> list[dict]:
    if isinstance(value, str):
        return as_messages(value, role)
    if not isinstance(value, list) or not value:
        raise BadRow(f"'{what}' must be a string or a non-empty list of messages")
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise BadRow(f"'{what}' holds {str(m)[:60]!r}; each message needs 'role' in {list(ROLES)} and a "
                         "string 'content'")
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _field(row: dict, key: str):
    if row.get(key) is None:
        raise BadRow(f"missing '{key}' (fields: {sorted(row)})")
    return row[key]


def conversation(row: dict) -> list[dict]:
    """The messages of an SFT row (either form)."""
    if "messages" in row:
        msgs = _messages(row["messages"], "user", "messages")
    else:
        msgs = _messages(_field(row, "prompt"), "user", "prompt") + \
            _messages(_field(row, "completion"), "assistant", "completion")
    if not any(m["role"] == "assistant" for m in msgs):
        raise BadRow("a conversation with no assistant turn (nothing to train on)")
    return msgs


def pair(row: dict) -> dict:
    """{"prompt": messages, "chosen": messages, "rejected": messages} of a preference row."""
    out = {"prompt": _messages(_field(row, "prompt"), "user", "prompt")}
    for key in ("chosen", "rejected"):
        out[key] = _messages(_field(row, key), "assistant", key)
        if any(m["role"] != "assistant" for m in out[key]):
            raise BadRow(f"'{key}' must be the reply: assistant turns only (the prompt goes in 'prompt')")
    if _stripped(out["chosen"]) == _stripped(out["rejected"]):
        raise BadRow("'chosen' equals 'rejected' (whitespace aside): the pair carries no preference, and the RM "
                     "and DPO losses learn nothing from it")
    return out


def _stripped(messages: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"].strip()) for m in messages]


def prompt(row: dict) -> dict:
    """{"prompt": messages, "raw": the prompt as the row gives it (what reward functions see), "fields": the row's
    other fields} of a prompt row."""
    key = "messages" if "messages" in row else "prompt"
    msgs = _messages(_field(row, key), "user", key)
    if msgs[-1]["role"] == "assistant":
        raise BadRow(f"'{key}' ends with an assistant turn; a prompt ends before the reply")
    return {"prompt": msgs, "raw": row[key], "fields": {k: v for k, v in row.items() if k != key}}


def conversation_prompt(row: dict) -> dict:
    """A conversation row (either form, checked as `conversation`) as a prompt row (`prompt`'s return), its reply
    dropped: the turns before the last assistant turn, or the `prompt` of a prompt/completion row. The reply is not
    among the fields."""
    msgs = conversation(row)
    if "messages" not in row:
        return prompt({k: v for k, v in row.items() if k != "completion"})
    last = max(i for i, m in enumerate(msgs) if m["role"] == "assistant")
    if last == 0:
        raise BadRow("'messages' starts with its only assistant turn: no prompt is left once the reply is dropped")
    return {"prompt": msgs[:last], "raw": msgs[:last], "fields": {k: v for k, v in row.items() if k != "messages"}}


PARSERS = {"conversation": conversation, "pair": pair, "prompt": prompt, "conversation_prompt": conversation_prompt}
"""The kinds `load` reads, by name."""
EXPECTED = {
    "conversation": '{"messages": [{"role", "content"}, ...]} with an assistant turn, or {"prompt", "completion"}',
    "pair": '{"prompt", "chosen", "rejected"}, the replies assistant turns only',
    "prompt": '{"prompt": str | messages} or {"messages": [...]} ending before the reply',
    "conversation_prompt": 'conversations, {"messages": [...]} or {"prompt", "completion"}, whose reply is dropped',
}
"""What each kind's rows look like, for messages that say what was expected."""


def _encoded(kind: str, parsed, template: ChatTemplate, tok) -> tuple[object, int]:
    """(the row as `load` returns it, the most tokens it puts in front of the model)."""
    if kind == "conversation":
        tokens, targets = template.encode(tok, parsed)
        return (tokens, targets), len(tokens) - 1
    if kind == "pair":
        # Whole: the RM scores, and DPO runs the model on, every token of a pair, its EOS included.
        return parsed, max(len(template.encode(tok, parsed["prompt"] + parsed[k])[0]) for k in ("chosen", "rejected"))
    return parsed, len(template.encode_prompt(tok, parsed["prompt"])) + 1


def load(path: str | Path, kind: str, template: ChatTemplate, tok, seq_len: int | None, bad_rows: str = "skip"
         ) -> Loaded:
    """The rows of `path` parsed as `kind` (a key of PARSERS); conversations and pairs also encoded with
    `template`, each sequence checked against seq_len (a prompt must leave room for a reply). With tok None, the
    rows are only parsed: no encoding, no length check (the pre-flight before a tokenizer exists).
    Rows: conversation → (tokens, targets); pair → pair(row); prompt and conversation_prompt → prompt(row)."""
    parse = PARSERS[kind]
    out = Loaded(str(path))
    for where, row in read_records(path):
        try:
            if isinstance(row, BadRow):
                raise row
            parsed = parse(row)
            if tok is not None:
                parsed, n_tokens = _encoded(kind, parsed, template, tok)
                if n_tokens > seq_len:
                    raise BadRow(f"{n_tokens} tokens, longer than seq_len={seq_len}")
        except BadRow as e:
            if bad_rows == "refuse":
                raise DataFileError(f"{where}: {e} (bad_rows: refuse)") from None
            out.skipped.append(f"{where}: {e}")
            continue
        out.rows.append(parsed)
    if not out.rows:
        first = f"; first problems: {out.skipped[:3]}" if out.skipped else ""
        raise DataFileError(f"{path}: no usable {kind} rows{first}")
    return out
