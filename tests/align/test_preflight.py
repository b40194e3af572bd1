"""The chain's pre-flight (llm/align/chain.py): every stage's data files, reward functions and checkpoints are
checked before the first stage trains, a mistake named in one line by stage, key and file; and the RM samples the
prompts of SFT's held-out conversations with their reply dropped (issue 22: alignment on your own data died after
SFT)."""
import json
import os
import subprocess
import sys

import pytest

from llm.align import handoff
from llm.align.chain import run_chain
from llm.align.config import load_align_config
from llm.align.formats import DataFileError, load
from llm.align.chain import Preflight
from llm.align.reward_functions import RewardError
from llm.align.stages import REGISTRY
from llm.align.template import ChatTemplate
from tests.align.helpers import make_base
from tests.conftest import ROOT

RECIPE = ROOT / "configs" / "align" / "default.yaml"


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _chat(p):
    return {"messages": [{"role": "system", "content": "sort"}, {"role": "user", "content": p},
                         {"role": "assistant", "content": "".join(sorted(p))}]}


PROMPTS = ("5183", "209", "7461", "53", "802", "9164")  # none sorted: every demo pair has a preference


@pytest.fixture
def own_data(tmp_path):
    """The documented formats, one file per data key: SFT conversations as messages, pairs, prompts."""
    return {"sft.data": _jsonl(tmp_path / "sft.jsonl", [_chat(p) for p in PROMPTS]),
            "sft.eval_data": _jsonl(tmp_path / "sft_eval.jsonl", [_chat(p) for p in PROMPTS[:3]]),
            "rm.data": _jsonl(tmp_path / "pairs.jsonl", [{"prompt": p, "chosen": "".join(sorted(p)), "rejected": p}
                                                         for p in PROMPTS]),
            "ppo.prompts": _jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])}


def _cfg(out, data, *overrides):
    keys = [f"{k}={v}" for k, v in data.items()]
    return load_align_config(RECIPE, [f"out_dir={out}", "stages=[base,sft,rm,ppo,dpo,grpo_rloo]", "rm.eval_data=null",
                                      *keys, *overrides] + ([] if "rm.eval_data" in data else
                                                            [f"rm.eval_data={data['rm.data']}"]))


def test_rm_reads_sft_conversations_as_prompts_with_the_reply_dropped(tmp_path, own_data):
    cfg = _cfg(tmp_path, own_data)
    rm = REGISTRY["rm"]
    assert rm.data_kind("sft.eval_data") == "conversation_prompt" and rm.data_kind("ppo.prompts") == "prompt"
    rows = load(own_data["sft.eval_data"], rm.data_kind("sft.eval_data"), ChatTemplate(), None, None).rows
    assert rows[0] == {"prompt": [{"role": "system", "content": "sort"}, {"role": "user", "content": "5183"}],
                       "raw": [{"role": "system", "content": "sort"}, {"role": "user", "content": "5183"}],
                       "fields": {}}
    # A prompt/completion row: its prompt, the completion not passed on as a field.
    f = _jsonl(tmp_path / "pc.jsonl", [{"prompt": "21", "completion": "12", "answer": "12"}])
    assert load(f, "conversation_prompt", ChatTemplate(), None, None).rows == [
        {"prompt": [{"role": "user", "content": "21"}], "raw": "21", "fields": {"answer": "12"}}]
    # The whole chain's inputs pass the pre-flight, none of them trained yet (tokens are checked after base).
    later = Preflight(cfg).check([REGISTRY[s] for s in cfg.stages])
    assert [s.name for s in later] == ["sft", "rm", "ppo", "dpo", "grpo_rloo"]
    # With policy pairs off, the RM reads neither prompt file (nor requires them to exist).
    off = _cfg(tmp_path, {**own_data, "ppo.prompts": tmp_path / "absent.jsonl"}, "rm.policy_samples=0",
               "stages=[base,sft,rm]")
    assert "ppo.prompts" not in rm.data_read(off) and rm.missing_inputs(off) == [tmp_path / "sft"]


def test_a_bad_file_of_a_late_stage_fails_before_the_first_stage_runs(tmp_path, own_data, capsys):
    # DPO given SFT conversations where it needs pairs: named before base, sft and rm train.
    cfg = _cfg(tmp_path, {**own_data, "dpo.data": own_data["sft.data"]})
    with pytest.raises(DataFileError) as e:
        run_chain(cfg)
    lines = capsys.readouterr().out.splitlines()
    msg = str(e.value)
    assert msg.startswith(f"stage dpo: dpo.data: {own_data['sft.data']}: no usable pair rows; first problems: "
                          f"[\"{own_data['sft.data']}:1: missing 'prompt'")
    assert msg.endswith("expected {\"prompt\", \"chosen\", \"rejected\"}, the replies assistant turns only")
    assert "\n" not in msg and not (tmp_path / "base").exists() and lines == []
    # Under bad_rows: refuse the first bad row is named by line.
    bad = _jsonl(tmp_path / "mixed.jsonl", [_chat("21"), {"messages": [{"role": "user", "content": "21"}]}])
    with pytest.raises(DataFileError, match=f"^stage sft: sft.eval_data: {bad}:2: a conversation with no assistant "
                                        "turn .*bad_rows: refuse.*; expected {\"messages\""):
        run_chain(_cfg(tmp_path, {**own_data, "sft.eval_data": bad}, "bad_rows=refuse"))
    # Prompts given where the RM samples SFT's held-out conversations: no reply to drop.
    prompts = own_data["ppo.prompts"]
    with pytest.raises(DataFileError, match=f"^stage sft: sft.eval_data: {prompts}: no usable conversation rows"):
        run_chain(_cfg(tmp_path, {**own_data, "sft.eval_data": prompts}))
    assert not (tmp_path / "base").exists()


def test_reward_functions_are_imported_and_tried_on_the_prompts_they_score(tmp_path, own_data):
    fn = tmp_path / "my_reward.py"
    fn.write_text("def exact(prompts, completions, answer, **kw):\n"
                  "    return [float(c.strip() == a) for c, a in zip(completions, answer)]\n")
    data = {**own_data, "grpo_rloo.prompts": own_data["ppo.prompts"]}
    # The prompts lack the `answer` field the function needs: the RL stage would have died after SFT.
    with pytest.raises(RewardError,
                       match=f"^stage grpo_rloo: grpo_rloo.reward scoring "
                             f"grpo_rloo.prompts={data['grpo_rloo.prompts']}: reward '{fn}:exact' "
                             "raised TypeError: .*'answer'"):
        run_chain(_cfg(tmp_path, data, f"grpo_rloo.reward=[{fn}:exact]"))
    with pytest.raises(RewardError,
                       match=f"^stage grpo_rloo: grpo_rloo.reward scoring .*: reward '{tmp_path}/nope.py:f': no file"):
        run_chain(_cfg(tmp_path, data, f"grpo_rloo.reward=[{tmp_path}/nope.py:f]"))
    # eval.reward scores eval.prompts in every evaluating stage, and the RM's policy samples.
    with pytest.raises(RewardError, match="^stage sft: eval.reward scoring eval.prompts=.* no attribute 'missing'"):
        run_chain(_cfg(tmp_path, {**data, "eval.prompts": data["grpo_rloo.prompts"]}, f"eval.reward=[{fn}:missing]"))
    with pytest.raises(RewardError, match="^stage rm: eval.reward scoring ppo.prompts="):
        run_chain(_cfg(tmp_path, data, f"eval.reward=[{fn}:missing]"))
    answered = _jsonl(tmp_path / "answered.jsonl", [{"prompt": p, "answer": "".join(sorted(p))} for p in PROMPTS])
    Preflight(_cfg(tmp_path, {**data, "grpo_rloo.prompts": answered},
                   f"grpo_rloo.reward=[{fn}:exact]")).check([REGISTRY["grpo_rloo"]])
    assert not (tmp_path / "base").exists()


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    return make_base(tmp_path_factory.mktemp("preflight_base"), steps=2)


def test_token_lengths_and_checkpoints_once_the_base_exists(base_dir, tmp_path, own_data, capsys):
    (tmp_path / "base").symlink_to(base_dir / "base")
    (tmp_path / "data").symlink_to(base_dir / "data")
    long = _jsonl(tmp_path / "long.jsonl", [{"prompt": "21", "chosen": "12", "rejected": "21"},
                                            {"prompt": "5183" * 10, "chosen": "1358", "rejected": "1385"}])
    cfg = _cfg(tmp_path, {**own_data, "rm.data": long}, "bad_rows=refuse")
    pre = Preflight(cfg)
    assert pre.start_checkpoint(REGISTRY["rm"]) == tmp_path / "base"  # sft not trained yet: the base's tokenizer
    with pytest.raises(DataFileError, match=f"^stage rm: rm.data: {long}:2: .* tokens, longer than seq_len=32"):
        pre.check([REGISTRY["rm"]])
    capsys.readouterr()
    assert Preflight(_cfg(tmp_path, {**own_data, "rm.data": long})).check([REGISTRY["rm"]]) == []
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"pre-flight: stage rm: rm.data: {long}: 1 rows used, 1 skipped "
                                                   f"({long}:2: ")
    assert lines[0].endswith(" tokens, longer than seq_len=32) (bad_rows: skip)")
    # A checkpoint made with another chat template, or an LM given as the reward model: named before anything runs.
    other = _cfg(tmp_path, own_data, "template.user=please sort {content}")
    with pytest.raises(handoff.HandoffError, match=f"^stage sft: sft.init={tmp_path / 'base'}: chat template "):
        Preflight(other).check([REGISTRY["sft"]])
    rl = _cfg(tmp_path, own_data, f"grpo_rloo.reward_model={tmp_path / 'base'}", "grpo_rloo.reward=[rm]")
    with pytest.raises(handoff.HandoffError, match="^stage grpo_rloo: grpo_rloo.reward_model=.* is a lm checkpoint"):
        Preflight(rl).check([REGISTRY["grpo_rloo"]])


def test_the_rm_samples_conversation_prompts(base_dir, tmp_path, own_data, capsys):
    """Issue 22's failure itself: the RM stage with rm.policy_samples on a messages-format sft.eval_data (before,
    every row was refused as 'ends with an assistant turn' and the stage died with no usable prompt rows)."""
    from llm.align.reward_training import run_rm
    seen = tmp_path / "seen.jsonl"
    fn = tmp_path / "alternate.py"  # scores a prompt's samples 1, 0, 1, ...: one pair per prompt; records the prompt
    fn.write_text(f"import json\ndef f(prompts, completions, **kw):\n    open({str(seen)!r}, 'a').write("
                  "json.dumps(prompts[0]) + '\\n')\n    return [float(i % 2 == 0) for i in range(len(completions))]\n")
    cfg = _cfg(tmp_path, own_data, f"rm.init={base_dir / 'base'}", "rm.steps=1", "rm.batch_size=4",
               "rm.optim.warmup_steps=0", "rm.policy_samples=2", "rm.checkpoint_every=0", "eval.max_new_tokens=2",
               f"eval.reward=[{fn}:f]")  # 2 tokens: garbage from a 2-step base fits seq_len
    metrics = run_rm(cfg)
    lines = capsys.readouterr().out.splitlines()
    assert metrics["n_train_pairs"] == 2 * len(PROMPTS) and metrics["n_eval_pairs"] == len(PROMPTS) + 3
    # The sampling phase before the RM trains (minutes on a CPU for thousands of prompts) reports its progress,
    # on the console and in the chain's progress log: the first batch, then the last with its total.
    total = 2 * (len(PROMPTS) + 3)
    sampled = [line for line in lines if line.startswith("rm: policy samples: sample ")]
    assert sampled and sampled[-1].startswith(f"rm: policy samples: sample {total}/{total} (100%)")
    assert f"rm: policy samples: sample {total}/{total}" in (tmp_path / "logs" / "progress.log").read_text()
    held_out = [json.loads(line) for line in seen.read_text().splitlines()][len(PROMPTS):]
    assert held_out == [[{"role": "system", "content": "sort"}, {"role": "user", "content": p}]
                        for p in sorted(PROMPTS[:3], key=lambda p: json.dumps(_chat(p)["messages"][:2]))]


def test_chain_entry_point_prints_the_preflight_mistake_in_one_line(tmp_path, own_data):
    proc = subprocess.run([sys.executable, "launch/chain.py", "--config", str(RECIPE), f"out_dir={tmp_path}",
                           f"sft.data={own_data['sft.data']}", f"rm.data={own_data['sft.data']}",
                           f"rm.eval_data={own_data['rm.data']}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"config error: stage rm: rm.data: {own_data['sft.data']}: no usable pair rows")
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "base").exists()


def test_an_rl_stage_with_no_learning_signal_says_so(base_dir, tmp_path, own_data, capsys):
    """Issue 22's own-task run: a reward the policy never reaches gave GRPO 15 iterations of zero advantage with no
    word. Every group's rewards equal → frac_reward_zero_std 1, one warning, and the count in the stage metrics."""
    from llm.align.grpo_rloo import run_grpo_rloo
    (tmp_path / "data").symlink_to(base_dir / "data")  # the bundled task's held-out prompts, for the final eval
    fn = tmp_path / "never.py"
    fn.write_text("def f(prompts, completions, **kw):\n    return [0.0] * len(completions)\n")
    cfg = _cfg(tmp_path, own_data, f"grpo_rloo.actor={base_dir / 'base'}",
               f"grpo_rloo.prompts={own_data['ppo.prompts']}",
               f"grpo_rloo.reward=[{fn}:f]", "grpo_rloo.iterations=2", "grpo_rloo.prompts_per_iteration=2",
               "grpo_rloo.group_size=2",
               "grpo_rloo.mini_batch=4", "grpo_rloo.epochs=1", "grpo_rloo.max_new_tokens=2",
               "grpo_rloo.checkpoint_every=0")
    metrics = run_grpo_rloo(cfg)
    lines = capsys.readouterr().out.splitlines()
    assert metrics["iterations_without_signal"] == 2
    assert metrics["last_train_row"]["frac_reward_zero_std"] == 1.0
    warnings = [line for line in lines if line.startswith("grpo_rloo: warning: iteration 1: every group's 2 answers")]
    assert len(warnings) == 1 and "no learning signal" in warnings[0]
    assert "grpo_rloo: 2 of 2 iterations had no learning signal (every group's rewards equal)" in lines
