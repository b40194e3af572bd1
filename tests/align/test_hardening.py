"""Issue 29: alignment inputs that teach nothing, parameters with no meaning, user code that escapes, and corrupt
files are refused in one line naming the stage, key and file (row), before anything trains.

In-process wherever the library raises the error the entry point prints; one subprocess per exit path the entry
point itself decides (a reward that calls sys.exit(0) must not end the process with status 0).
The full record of bad inputs tried is bench/hardening/align.py."""
import json
import subprocess
import sys
import time

import pytest

from llm.align import handoff
from llm.align.config import load_align_config
from llm.align.formats import DataFileError, load
from llm.align.chain import Preflight
from llm.align.resume import read_trainer_state
from llm.align.reward_functions import RewardError, RewardFunctions
from llm.align.stages import REGISTRY
from llm.align.template import ChatTemplate
from llm.train import checkpoint as ckpt
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"
TEMPLATE = ChatTemplate(user="sort {content}:", assistant="{content}")
PAIRS = [{"prompt": "321", "chosen": "123", "rejected": "132"}, {"prompt": "54", "chosen": "45", "rejected": "4"}]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# -- pairs that carry no preference ------------------------------------------------------------------------------

def test_pair_whose_chosen_equals_rejected_is_refused_or_skipped_and_counted(tmp_path):
    same = {"prompt": [{"role": "user", "content": "21"}], "chosen": [{"role": "assistant", "content": "12"}],
            "rejected": [{"role": "assistant", "content": " 12 "}]}
    f = _jsonl(tmp_path / "pairs.jsonl", PAIRS + [same])
    with pytest.raises(DataFileError, match=r"pairs.jsonl:3: 'chosen' equals 'rejected'.*no preference"):
        load(f, "pair", TEMPLATE, None, None, "refuse")
    got = load(f, "pair", TEMPLATE, None, None, "skip")
    assert len(got.rows) == 2 and "pairs.jsonl:3: 'chosen' equals 'rejected'" in got.skipped[0]
    with pytest.raises(DataFileError, match="no usable pair rows"):
        load(_jsonl(tmp_path / "all_same.jsonl", [same] * 3), "pair", TEMPLATE, None, None, "skip")


def test_preflight_names_the_stage_of_pairs_that_teach_nothing_before_anything_trains(tmp_path):
    same = _jsonl(tmp_path / "same.jsonl", [{"prompt": "21", "chosen": "12", "rejected": "12"}] * 4)
    cfg = load_align_config(RECIPE, [f"out_dir={tmp_path}", "stages=[sft,dpo]", f"dpo.data={same}"])
    with pytest.raises(DataFileError, match=r"stage dpo: dpo.data: .*same.jsonl: no usable pair rows.*'chosen' equals"):
        Preflight(cfg).check([REGISTRY["dpo"]])


# -- unreadable files ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, data, message", [
    ("latin1.jsonl", json.dumps(PAIRS[0]).encode() + b"\n" + '{"prompt": "caf\xe9"}\n'.encode("latin-1"),
     r"latin1.jsonl:2: not UTF-8 text"),
    ("blob.jsonl", bytes(range(256)) * 4, r"blob.jsonl:1: not UTF-8 text"),
    ("u16.jsonl", (json.dumps(PAIRS[0]) + "\n").encode("utf-16"), r"u16.jsonl:1: not UTF-8 text"),
    ("bad.parquet", b"PAR1 garbage", r"bad.parquet: not a readable parquet file"),
    ("empty.parquet", b"", r"empty.parquet: not a readable parquet file"),
])
def test_unreadable_file_is_one_data_error_naming_it(tmp_path, name, data, message):
    (tmp_path / name).write_bytes(data)
    with pytest.raises(DataFileError, match=message):
        load(tmp_path / name, "pair", TEMPLATE, None, None, "skip")


def test_utf8_bom_is_read(tmp_path):
    (tmp_path / "bom.jsonl").write_bytes(b"\xef\xbb\xbf" + (json.dumps(PAIRS[0]) + "\n").encode())
    assert len(load(tmp_path / "bom.jsonl", "pair", TEMPLATE, None, None, "refuse").rows) == 1


def test_corrupt_save_to_disk_directory_is_one_data_error(tmp_path):
    import datasets
    datasets.Dataset.from_list(PAIRS).save_to_disk(str(tmp_path / "ds"))
    for f in (tmp_path / "ds").glob("*.arrow"):
        f.write_bytes(b"garbage" * 10)
    with pytest.raises(DataFileError, match=r"ds: not a readable datasets save_to_disk directory"):
        load(tmp_path / "ds", "pair", TEMPLATE, None, None, "skip")


# -- parameters with no meaning ----------------------------------------------------------------------------------

@pytest.mark.parametrize("override, message", [
    ("dpo.beta=-1", r"dpo.beta=-1 must be in \(0, inf\).*reverses"), ("dpo.beta=0", r"dpo.beta=0"),
    ("grpo_rloo.beta=-0.1", r"grpo_rloo.beta"),
    ("grpo_rloo.clip_eps=1.5", r"grpo_rloo.clip_eps=1.5 must be in \(0, 1\)"),
    ("grpo_rloo.clip_eps=0", r"grpo_rloo.clip_eps"), ("grpo_rloo.temperature=0", r"grpo_rloo.temperature=0 .*greedy"),
    ("ppo.temperature=-1", r"ppo.temperature"), ("eval.temperature=-1", r"eval.temperature=-1 must be in \[0"),
    ("grpo_rloo.mini_batch=0", r"grpo_rloo.mini_batch=0 must be in \[1"), ("ppo.mini_batch=0", r"ppo.mini_batch=0"),
    ("ppo.kl_target=-1", r"ppo.kl_target"), ("ppo.kl_horizon=0", r"ppo.kl_horizon"),
    ("ppo.ppo_epochs=0", r"ppo.ppo_epochs"), ("ppo.value_clip=-1", r"ppo.value_clip"),
    ("ppo.reward_clip=0", r"ppo.reward_clip"), ("grpo_rloo.max_new_tokens=0", r"grpo_rloo.max_new_tokens"),
    ("eval.max_new_tokens=0", r"eval.max_new_tokens"), ("rm.margin=-1", r"rm.margin"),
    ("rm.policy_samples=-1", r"rm.policy_samples"), ("sft.eval_every=-1", r"sft.eval_every"),
    ("base.lr=-1", r"base.lr"), ("task.n_train=0", r"task.n_train"), ("reward_timeout_s=-1", r"reward_timeout_s"),
    ("grpo_rloo.group_size=1", r"grpo_rloo.group_size=1 must be in \[2"),
])
def test_meaningless_parameter_is_refused_naming_key_and_range(override, message):
    with pytest.raises(ValueError, match=message):
        load_align_config(RECIPE, [override])


# -- user code -------------------------------------------------------------------------------------------------

def _reward(tmp_path, body):
    (tmp_path / "user_reward.py").write_text("import math, sys, time\n" + body)
    return f"{tmp_path / 'user_reward.py'}:reward"


@pytest.mark.parametrize("body, message", [
    ("def reward(p, c, **k):\n    sys.exit(0)\n",
     r"called sys.exit\(0\), called on 2 completion\(s\), the first prompt '21'"),
    ("def reward(p, c, **k):\n    raise KeyError('x')\n", r"raised KeyError"),
    ("def reward(p, c, **k):\n    return [0.0, math.nan]\n",
     r"returned nan for completion 1 \(prompt '43', completion 'b'\)"),
    ("def reward(p, c, **k):\n    return [1.0]\n", r"must return a list of 2 floats, got list of 1"),
    ("def reward(p, c, **k):\n    pass\n", r"must return a list of 2 floats, got NoneType"),
    ("sys.exit(0)\ndef reward(p, c, **k):\n    return [0.0] * len(c)\n", r"importing .* called sys.exit\(0\)"),
])
def test_reward_function_that_escapes_or_misbehaves_is_a_reward_error_naming_it(tmp_path, body, message):
    with pytest.raises(RewardError,
                       match="stage grpo_rloo: grpo_rloo.reward: reward .*user_reward.py:reward.*" + message
                       if "importing" not in message else message):
        RewardFunctions([_reward(tmp_path, body)],
                        where="stage grpo_rloo: grpo_rloo.reward")(["21", "43"], ["a", "b"], [{}, {}])


def test_reward_function_that_hangs_is_stopped_after_the_timeout(tmp_path):
    fns = RewardFunctions([_reward(tmp_path, "def reward(p, c, **k):\n    time.sleep(60)\n")], timeout_s=0.3)
    t0 = time.perf_counter()
    with pytest.raises(RewardError, match=r"took longer than reward_timeout_s=0.3 s"):
        fns(["21"], ["12"], [{}])
    assert time.perf_counter() - t0 < 5
    assert fns.fns and RewardFunctions([_reward(tmp_path, "def reward(p, c, **k):\n    return [1.0]\n")],
                                       timeout_s=0.3)(["21"], ["12"], [{}]) == [1.0]


def test_reward_that_calls_sys_exit_0_ends_a_stage_entry_point_with_one_line_and_status_2(tmp_path):
    """Before the fix the process ended with status 0 and no stage record: SystemExit escaped `except Exception`."""
    prompts = _jsonl(tmp_path / "prompts.jsonl", [{"prompt": "321"}, {"prompt": "54"}])
    spec = _reward(tmp_path, "def reward(p, c, **k):\n    sys.exit(0)\n")
    p = subprocess.run([sys.executable, str(ROOT / "launch" / "grpo_rloo.py"), "--config", str(RECIPE),
                        f"out_dir={tmp_path / 'out'}", f"grpo_rloo.prompts={prompts}", f"grpo_rloo.reward=[{spec}]"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert lines[0].startswith("config error: stage grpo_rloo: grpo_rloo.reward scoring grpo_rloo.prompts=")
    assert "sys.exit(0)" in lines[0]
    assert not (tmp_path / "out" / "grpo_rloo").exists()


# -- corrupt checkpoint records ----------------------------------------------------------------------------------

@pytest.mark.parametrize("content, message", [
    (b"{oops", r"stage.json is not JSON"), (bytes(range(256)), r"stage.json is not JSON"),
    (b"[]", r"stage.json holds a list"), (b'{"stage": "base"}', r"missing keys \['kind', 'model'"),
])
def test_corrupt_stage_json_is_a_handoff_error_naming_it(tmp_path, content, message):
    (tmp_path / "stage.json").write_bytes(content)
    with pytest.raises(handoff.HandoffError, match=message):
        handoff.read_info(tmp_path)


def test_damaged_trainer_state_is_a_handoff_error_naming_it(tmp_path):
    good = {"step": 2, "trainer_steps": {"policy": 2}, "rng": ckpt.rng_state(), "loop": {}, "rows": []}
    ckpt.write_state(tmp_path / ckpt.STATE_FILE, good)
    assert read_trainer_state(tmp_path, ["policy"])["step"] == 2
    bad_rng = {**good, "rng": {**good["rng"], "torch": "!!"}}
    for bad, message in (("{oops", "is not JSON"), (json.dumps(bad_rng), "'rng'"),
                         (json.dumps({**good, "trainer_steps": {}}), "'trainer_steps'")):
        (tmp_path / ckpt.STATE_FILE).write_text(bad)
        with pytest.raises(handoff.HandoffError, match=f"trainer_state.json .*{message}.*remove"):
            read_trainer_state(tmp_path, ["policy"])


# -- the audit -------------------------------------------------------------------------------------------------

def test_audit_refuses_data_tokenized_with_another_tokenizer(tmp_path):
    from data_pipeline.hf_tokenizer import load_tokenizer
    from data_pipeline.tokenizer import train_tokenizer
    from llm.audit.run import check_same_tokenizer
    from llm.config import ConfigError, ModelConfig
    from dataclasses import asdict
    toks = [train_tokenizer(texts, tmp_path / f"tok{i}", vocab_size=512, model_type="char")
            for i, texts in enumerate((["sort 123: 123"] * 20, ["order abc: abc"] * 20))]
    stage = tmp_path / "stage"
    stage.mkdir()
    (stage / "model.pt").write_bytes(b"")
    (stage / "tokenizer.model").write_bytes(toks[0].read_bytes())
    (stage / "stage.json").write_text(json.dumps({"kind": "lm", "stage": "sft", "model": asdict(ModelConfig(
        n_layers=1, d_model=8, n_heads=2, d_ff=16, vocab_size=64, seq_len=8))}))
    check_same_tokenizer(load_tokenizer(toks[0]), toks[0], stage)
    with pytest.raises(ConfigError, match=r"was tokenized with .*tok1.model .* but .*stage was trained with"):
        check_same_tokenizer(load_tokenizer(toks[1]), toks[1], stage)
