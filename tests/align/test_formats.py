"""The alignment data formats (llm/align/formats.py) and the chat template (llm/align/template.py): each format's
good and bad rows, the three readers (JSONL, datasets save_to_disk, parquet), the template round trip, and a stage
run on a user's data file."""
import json
import os

import pytest

from llm.align import handoff
from llm.align.config import load_align_config
from llm.align.sections import TaskConfig
from llm.align.formats import DataFileError, load, read_records
from llm.align.losses import IGNORE_INDEX
from llm.align.task import generate_task_data, train_task_tokenizer
from llm.align.template import ChatTemplate
from tests.align.helpers import make_base
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"
SORT = ChatTemplate(user="sort {content}:")


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from data_pipeline.tokenizer import Tokenizer
    out = tmp_path_factory.mktemp("tok")
    files = generate_task_data(TaskConfig(n_train=100, n_dev=10, n_eval_prompts=10), out, seed=0)
    return Tokenizer(train_task_tokenizer(files["base"], out / "tok"))


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_conversations_good_and_bad_rows_named_by_line(tok, tmp_path):
    f = _jsonl(tmp_path / "sft.jsonl", [
        {"prompt": "5183", "completion": "1358"},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "21"},
                      {"role": "assistant", "content": "12"}, {"role": "user", "content": "43"},
                      {"role": "assistant", "content": "34"}]},
        "{not json",
        {"prompt": "5183"},
        {"messages": [{"role": "user", "content": "5183"}]},
        {"messages": [{"role": "robot", "content": "1"}, {"role": "assistant", "content": "1"}]},
        {"prompt": "5183" * 20, "completion": "1358"},
        "",
        {"prompt": [{"role": "user", "content": "21"}], "completion": [{"role": "assistant", "content": "12"}]},
    ])
    got = load(f, "conversation", SORT, tok, seq_len=32)
    assert len(got.rows) == 3 and len(got.skipped) == 5
    reasons = "\n".join(got.skipped)
    for line, why in [(3, "not JSON"), (4, "missing 'completion'"), (5, "no assistant turn"), (6, "'role' in"),
                      (7, "longer than seq_len=32")]:
        assert f"{f}:{line}: " in reasons and why in got.skipped[[f"{f}:{line}:" in s for s in got.skipped].index(True)]
    assert got.rows[0] == SORT.encode(tok, [{"role": "user", "content": "5183"},
                                           {"role": "assistant", "content": "1358"}])
    # Multi-turn: the loss on both assistant turns (their tokens and EOS), nothing else.
    tokens, targets = got.rows[1]
    trained = [t for t in targets if t != IGNORE_INDEX]
    assert trained == tok.encode("12") + [tok.eos_id] + tok.encode("34") + [tok.eos_id]
    with pytest.raises(DataFileError, match=f"{f}:3: not JSON .*bad_rows: refuse"):
        load(f, "conversation", SORT, tok, seq_len=32, bad_rows="refuse")


def test_pairs_and_prompts(tok, tmp_path):
    f = _jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "5183", "chosen": "1358", "rejected": "1385"},
        {"prompt": [{"role": "user", "content": "21"}], "chosen": [{"role": "assistant", "content": "12"}],
         "rejected": [{"role": "assistant", "content": "21"}]},
        {"prompt": "5183", "chosen": "1358"},
        {"prompt": "21", "chosen": [{"role": "user", "content": "12"}], "rejected": "21"},
    ])
    got = load(f, "pair", SORT, tok, seq_len=32)
    assert len(got.rows) == 2 and [s.split(": ", 1)[0] for s in got.skipped] == [f"{f}:3", f"{f}:4"]
    assert "missing 'rejected'" in got.skipped[0] and "assistant turns only" in got.skipped[1]
    p = _jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "5183", "answer": "1358", "level": 2},
        {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "21"}], "answer": "12"},
        {"messages": [{"role": "user", "content": "21"}, {"role": "assistant", "content": "12"}]},
        {"answer": "12"},
    ])
    got = load(p, "prompt", SORT, tok, seq_len=32)
    assert got.rows[0] == {"prompt": [{"role": "user", "content": "5183"}], "raw": "5183",
                           "fields": {"answer": "1358", "level": 2}}
    assert got.rows[1]["fields"] == {"answer": "12"} and len(got.skipped) == 2
    assert "ends with an assistant turn" in got.skipped[0] and "missing 'prompt'" in got.skipped[1]
    with pytest.raises(DataFileError, match="no usable pair rows"):
        load(_jsonl(tmp_path / "bad.jsonl", [{"x": 1}]), "pair", SORT, tok, seq_len=32)
    with pytest.raises(DataFileError, match="no such data file"):
        load(tmp_path / "absent.jsonl", "pair", SORT, tok, seq_len=32)


def test_a_pair_counts_its_eos_against_seq_len(tok, tmp_path):
    """The RM scores, and DPO runs the model on, every token of a pair, its EOS included: a pair one token longer
    than seq_len used to pass the loader and stop the RM with a traceback (a position past the rotary table)."""
    f = _jsonl(tmp_path / "pairs.jsonl", [{"prompt": "5183", "chosen": "1358", "rejected": "1385"}])
    n = len(SORT.encode(tok, [{"role": "user", "content": "5183"}, {"role": "assistant", "content": "1358"}])[0])
    assert len(load(f, "pair", SORT, tok, seq_len=n).rows) == 1
    with pytest.raises(DataFileError, match=f"{f}:1: {n} tokens, longer than seq_len={n - 1}"):
        load(f, "pair", SORT, tok, seq_len=n - 1, bad_rows="refuse")


def test_save_to_disk_and_parquet_read_like_jsonl(tok, tmp_path):
    import datasets
    rows = [{"prompt": "5183", "completion": "1358"}, {"prompt": "21", "completion": None}]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "disk"))
    ds.to_parquet(str(tmp_path / "rows.parquet"))
    datasets.DatasetDict({"train": ds}).save_to_disk(str(tmp_path / "dict"))
    for source in ("disk", "rows.parquet", "dict"):
        got = load(tmp_path / source, "conversation", SORT, tok, seq_len=32)
        assert got.rows == [SORT.encode(tok, [{"role": "user", "content": "5183"},
                                             {"role": "assistant", "content": "1358"}])], source
        assert got.skipped == [f"{tmp_path / source}[row 1]: missing 'completion' (fields: ['completion', 'prompt'])"]
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "two"))
    with pytest.raises(DataFileError, match="splits \\['train', 'test'\\]"):
        list(read_records(tmp_path / "two"))


def test_template_round_trip(tok):
    # The bundled template tokenizes like the text "prompt response", as before it had roles.
    cfg = load_align_config(RECIPE)
    t = ChatTemplate.from_config(cfg)
    assert t == SORT
    tokens, _ = t.encode(tok, [{"role": "user", "content": "5183"}, {"role": "assistant", "content": "1358"}])
    assert tokens == tok.encode("sort 5183: 1358") + [tok.eos_id]
    # A template with an assistant prefix and suffix: the prompt ends with the prefix, the reply's text comes back.
    wrapped = ChatTemplate(system="{content}:", user="<{content}>", assistant="= {content}.")
    msgs = [{"role": "system", "content": "sort"}, {"role": "user", "content": "5183"}]
    prompt = wrapped.encode_prompt(tok, msgs)
    full, targets = wrapped.encode(tok, msgs + [{"role": "assistant", "content": "1358"}])
    assert full[:len(prompt)] == prompt
    reply = full[len(prompt):]
    assert wrapped.decode_response(tok, reply) == "1358"
    assert [x for x in targets if x != IGNORE_INDEX] == reply
    with pytest.raises(Exception, match="template.user='sort' must hold '\\{content\\}' exactly once"):
        load_align_config(RECIPE, ["template.user=sort"])


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("fmt_base"))


def test_sft_on_user_data_counts_skipped_rows_and_records_the_template(base_dir, tmp_path, capsys):
    from llm.align.sft import run_sft
    (tmp_path / "base").symlink_to(base_dir / "base")
    (tmp_path / "data").symlink_to(base_dir / "data")
    rows = [{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": "".join(sorted(p))}]}
            for p in ("5183", "209", "7461", "35")] * 4 + [{"messages": [{"role": "user", "content": "1"}]}]
    f = _jsonl(tmp_path / "mine.jsonl", rows)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", "sft.steps=3", "sft.batch_size=4",
                                     "sft.optim.warmup_steps=0", f"sft.data={f}", f"sft.eval_data={f}"])
    metrics = run_sft(cfg)
    lines = capsys.readouterr().out.splitlines()
    assert metrics["skipped_rows"] == {"sft.data": 1, "sft.eval_data": 1}
    assert any(f"{f}: 16 rows used, 1 skipped ({f}:17: a conversation with no assistant turn" in s for s in lines)
    info = handoff.read_info(tmp_path / "sft")
    assert info.template == SORT.to_dict()
    # A stage whose template differs from its checkpoint's is refused, naming the role.
    other = load_align_config(RECIPE, [f"out_dir={tmp_path}", "template.user=please sort {content}"])
    with pytest.raises(handoff.HandoffError, match="chat template mismatch: .*'user': \\('please sort"):
        run_sft(other)


def test_refused_row_is_a_named_error_not_a_traceback(base_dir, tmp_path):
    import subprocess
    import sys
    (tmp_path / "base").symlink_to(base_dir / "base")
    (tmp_path / "data").symlink_to(base_dir / "data")
    f = _jsonl(tmp_path / "mine.jsonl", [{"prompt": "21", "completion": "12"}, {"prompt": "21"}])
    proc = subprocess.run([sys.executable, "launch/sft.py", "--config", str(RECIPE), f"out_dir={tmp_path}",
                           f"sft.data={f}", "bad_rows=refuse"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    # The chain's pre-flight reads the file before anything trains and names the stage and key too.
    assert f"config error: stage sft: sft.data: {f}:2: missing 'completion'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
