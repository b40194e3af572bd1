"""Bad inputs to the alignment entry points and the audit (issue 29), each run as a real subprocess and classified.

    python bench/hardening/align.py [--work DIR] [--only SUBSTR] [--jobs 2] [--out results.json]

Setup (once, ~1 min on 2 cores): a tiny base stage (5 pretraining steps) and a second one trained on other text
(another tokenizer), an in-stage checkpoint of a DPO run stopped after step 2, and an audit data folder.
Every case then runs launch/{chain,sft,rm,dpo,grpo_rloo,audit}.py with tiny settings and one bad input, and is
classified:
- clear: non-zero exit, no traceback, and the last line of stderr names what it must (the key, the file, ...);
- traceback: a Python traceback reached the user;
- silent: exit 0 (the bad input was accepted and something was trained, audited or skipped without a word);
- late-or-misleading: non-zero exit without a traceback, but the message does not name what it must, or the
  refusal came only after a stage trained (a progress line was printed first), or the run hung (timeout).
Each case states what a clear refusal names; the counts are the issue's before/after record.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPE = ROOT / "configs" / "align" / "default.yaml"
TIMEOUT_S = 150


@dataclass
class Case:
    name: str
    entry: str
    """launch/<entry>.py"""
    args: list[str]
    must: list[str]
    """Substrings the one-line refusal must contain."""
    setup: callable = None
    """setup(case_dir) -> extra args (files written into case_dir)."""
    expect_trained_first: bool = False
    """The bad input can only show during training (a reward that fails on real answers): training first is fine."""
    timeout_s: int = TIMEOUT_S
    extra_after: list[str] = field(default_factory=list)
    """Args only valid once the fix exists (e.g. reward_timeout_s=5); used when the key is known."""


def jl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pairs(n=8, same=False):
    return [{"prompt": f"{i}{i + 1}{i + 2}"[:3][::-1], "chosen": " ".join(sorted(f"{i}{i + 1}{i + 2}"[:3])),
             "rejected": " ".join(sorted(f"{i}{i + 1}{i + 2}"[:3])) if same else f"{i}"} for i in range(n)]


def prompts(n=8):
    return [{"prompt": "".join(str((i + k) % 10) for k in (3, 1, 2))} for i in range(n)]


def convs(n=8):
    return [{"prompt": p["prompt"], "completion": "".join(sorted(p["prompt"]))} for p in prompts(n)]


class Bench:
    def __init__(self, work: Path):
        self.work = work
        self.base = work / "setup" / "run" / "base"
        self.base2 = work / "setup" / "run2" / "base"
        self.ep = work / "setup" / "eval_prompts.jsonl"
        self.env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu", "PYTHONPATH": str(ROOT)}

    def run(self, entry, args, timeout=TIMEOUT_S):
        cmd = [sys.executable, str(ROOT / "launch" / f"{entry}.py")] + args
        t0 = time.perf_counter()
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env, cwd=ROOT)
            return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            err = e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")
            return None, out, err, time.perf_counter() - t0

    def setup(self):
        s = self.work / "setup"
        if (s / "done").is_file():
            return
        shutil.rmtree(s, ignore_errors=True)
        s.mkdir(parents=True)
        small = ["base.steps=5", "task.n_train=200", "task.n_dev=40", "task.n_eval_prompts=8", "eval.max_new_tokens=6"]
        for out, extra in ((s / "run", []), (s / "run2", ["seed=1", 'task.template_prompt="order {prompt}:"'])):
            rc, o, e, _ = self.run("chain",
                                   ["--config", str(RECIPE), f"out_dir={out}", "stages=[base]"] + small + extra,
                                   timeout=600)
            assert rc == 0, e[-3000:]
        jl(self.ep, prompts(8))
        # An in-stage DPO checkpoint at step 2 of 4: the eval reward fails on real answers after training.
        bad = s / "fail_on_answers.py"
        bad.write_text("def reward(prompts, completions, **kw):\n"
                       "    if any(completions):\n        raise RuntimeError('stop here')\n"
                       "    return [0.0] * len(completions)\n")
        out = s / "resumable"
        rc, o, e, _ = self.run("dpo", ["--config", str(RECIPE), f"out_dir={out}", f"dpo.init={self.base}",
                                       f"dpo.data={jl(s / 'pairs.jsonl', pairs())}", f"eval.prompts={self.ep}",
                                       "dpo.steps=4", "dpo.batch_size=4", "dpo.checkpoint_every=2",
                                       f"eval.reward=[{bad}:reward]", "eval.max_new_tokens=4"], timeout=600)
        assert list((out / "resume" / "dpo").glob("step_*")), (rc, e[-2000:])
        # An audit data folder: the base's pretraining data with its tokenizer; another with the other tokenizer.
        for name, tok_from in (("audit_data", s / "run"), ("audit_data_other_tok", s / "run2")):
            d = s / name
            d.mkdir()
            for suffix in ("bin", "idx"):
                shutil.copy(s / "run" / "base_pretrain" / f"data.{suffix}", d / f"data.{suffix}")
            shutil.copy(tok_from / "base" / "tokenizer.model", d / "tokenizer.model")
        (s / "done").write_text("")

    def reward_model(self) -> Path:
        """A tiny trained reward model (2 steps from the base), made once: the PPO cases need a real one."""
        out = self.work / "setup" / "rm_run"
        if not (out / "rm" / "stage.json").is_file():
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            rc, o, e, _ = self.run("rm", self.rm(out) + [f"out_dir={out}"], timeout=600)
            assert rc == 0, e[-3000:]
        return out / "rm"

    # -- argument builders -----------------------------------------------------------------------------------------
    def common(self, d):
        return ["--config", str(RECIPE), f"out_dir={d / 'out'}", f"eval.prompts={self.ep}", "eval.max_new_tokens=4"]

    def dpo(self, d, data=None, *extra):
        data = data or jl(d / "pairs.jsonl", pairs())
        return self.common(d) + [f"dpo.init={self.base}", f"dpo.data={data}", "dpo.steps=2", "dpo.batch_size=4",
                                 "dpo.checkpoint_every=0", *extra]

    def rm(self, d, data=None, eval_data=None, *extra):
        data = data or jl(d / "pairs.jsonl", pairs())
        eval_data = eval_data or jl(d / "pairs_eval.jsonl", pairs())
        return self.common(d) + [f"rm.init={self.base}", f"rm.data={data}", f"rm.eval_data={eval_data}",
                                 "rm.steps=2", "rm.batch_size=4", "rm.policy_samples=0", "rm.checkpoint_every=0",
                                 "rm.optim.warmup_steps=0",
                                 *extra]

    def sft(self, d, data=None, *extra):
        data = data or jl(d / "sft.jsonl", convs())
        return self.common(d) + [f"sft.init={self.base}", f"sft.data={data}", f"sft.eval_data={data}", "sft.steps=2",
                                 "sft.batch_size=4", "sft.eval_every=1", "sft.checkpoint_every=0",
                                 "sft.optim.warmup_steps=0", *extra]

    def rl(self, d, reward=None, data=None, *extra):
        data = data or jl(d / "prompts.jsonl", prompts())
        r = [f"grpo_rloo.reward=[{reward}]"] if reward else []
        return self.common(d) + [f"grpo_rloo.actor={self.base}", f"grpo_rloo.prompts={data}", "grpo_rloo.iterations=1",
                                 "grpo_rloo.prompts_per_iteration=2", "grpo_rloo.group_size=2",
                                 "grpo_rloo.mini_batch=4", "grpo_rloo.epochs=1",
                                 "grpo_rloo.max_new_tokens=4", "grpo_rloo.checkpoint_every=0", *r, *extra]

    def ppo(self, d, data=None, *extra, rm=None):
        data = data or jl(d / "prompts.jsonl", prompts())
        return self.common(d) + [f"ppo.actor={self.base}", f"ppo.reward_model={rm or self.reward_model()}",
                                 f"ppo.prompts={data}", "ppo.iterations=1", "ppo.rollout_batch=4", "ppo.mini_batch=4",
                                 "ppo.ppo_epochs=1", "ppo.max_new_tokens=4", "ppo.checkpoint_every=0", *extra]

    def chain(self, d, stages, *extra):
        return self.common(d) + [f"stages=[{','.join(stages)}]", *extra]


def write_bytes(name, data):
    def make(d):
        p = d / name
        p.write_bytes(data)
        return p
    return make


def reward_file(body):
    def make(d):
        p = d / "user_reward.py"
        p.write_text("import math, os, sys, time\n" + body)
        return f"{p}:reward"
    return make


def cases(b: Bench) -> list[Case]:
    C: list[Case] = []

    def add(name, entry, build, must, **kw):
        C.append(Case(name, entry, [], must, setup=build, **kw))

    # -- pairs that carry no preference ------------------------------------------------------------------------------
    add("dpo: every pair chosen == rejected", "dpo",
        lambda d: b.dpo(d, jl(d / "same.jsonl", pairs(same=True))), ["dpo.data", "same.jsonl", "chosen"])
    add("dpo: one pair chosen == rejected, bad_rows=refuse", "dpo",
        lambda d: b.dpo(d, jl(d / "some.jsonl", pairs() + pairs(1, same=True)), "bad_rows=refuse"),
        ["dpo.data", "some.jsonl:9", "chosen"])
    add("rm: every pair chosen == rejected", "rm",
        lambda d: b.rm(d, jl(d / "same.jsonl", pairs(same=True))), ["rm.data", "same.jsonl", "chosen"])
    add("rm: held-out pairs chosen == rejected", "rm",
        lambda d: b.rm(d, None, jl(d / "same_eval.jsonl", pairs(same=True))), ["rm.eval_data", "same_eval.jsonl"])
    add("dpo: chosen == rejected as message lists", "dpo",
        lambda d: b.dpo(d, jl(d / "msgs.jsonl", [{"prompt": [{"role": "user", "content": "321"}],
                                                 "chosen": [{"role": "assistant", "content": "123"}],
                                                 "rejected": [{"role": "assistant", "content": "123"}]}] * 4)),
        ["dpo.data", "msgs.jsonl", "chosen"])
    add("dpo: chosen == rejected but for whitespace", "dpo",
        lambda d: b.dpo(d, jl(d / "ws.jsonl", [{"prompt": "321", "chosen": "123", "rejected": " 123 "}] * 4)),
        ["dpo.data", "ws.jsonl", "chosen"])
    add("chain dpo: both replies empty", "chain",
        lambda d: b.chain(d, ["dpo"], f"dpo.init={b.base}", "dpo.steps=2", "dpo.batch_size=4",
                          f"dpo.data={jl(d / 'empty.jsonl', [{'prompt': '321', 'chosen': '', 'rejected': ''}] * 4)}"),
        ["dpo.data", "empty.jsonl"])

    # -- unreadable files --------------------------------------------------------------------------------------------
    latin = "".join(json.dumps(r) + "\n" for r in pairs()).encode() + '{"prompt": "caf\xe9"}\n'.encode("latin-1")
    binary = bytes(range(256)) * 8
    unreadable = {"non-UTF-8 JSONL": ("latin1.jsonl", latin, "UTF-8"), "binary file": ("blob.jsonl", binary, ""),
                  "corrupt parquet": ("bad.parquet", b"PAR1garbage", "")}
    for key, entry, builder, kinds in (
            ("dpo.data", "dpo", lambda d, f: b.dpo(d, f), list(unreadable)),
            ("rm.data", "rm", lambda d, f: b.rm(d, f), ["non-UTF-8 JSONL"]),
            ("sft.data", "sft", lambda d, f: b.sft(d, f), ["binary file"]),
            ("grpo_rloo.prompts", "grpo_rloo", lambda d, f: b.rl(d, None, f), ["corrupt parquet"]),
            ("eval.prompts", "dpo", lambda d, f: b.dpo(d, None, f"eval.prompts={f}"), ["non-UTF-8 JSONL"])):
        for kind in kinds:
            fname, data, word = unreadable[kind]
            add(f"{key}: {kind}", entry, lambda d, bl=builder, f=fname, x=data: bl(d, write_bytes(f, x)(d)),
                [key, fname] + ([word] if word else []))
    add("dpo.data: empty parquet (0 bytes)", "dpo", lambda d: b.dpo(d, write_bytes("empty.parquet", b"")(d)),
        ["dpo.data", "empty.parquet"])

    def truncated_parquet(d):
        import pyarrow as pa
        import pyarrow.parquet as pq
        p = d / "trunc.parquet"
        pq.write_table(pa.Table.from_pylist(pairs()), p)
        p.write_bytes(p.read_bytes()[:-40])
        return b.dpo(d, p)
    add("dpo.data: truncated parquet", "dpo", truncated_parquet, ["dpo.data", "trunc.parquet"])

    def empty_dir(d):
        (d / "notads").mkdir()
        return b.dpo(d, d / "notads")
    add("dpo.data: a directory that is not a dataset", "dpo", empty_dir, ["dpo.data", "notads"])

    def corrupt_arrow(d):
        import datasets
        p = d / "ds"
        datasets.Dataset.from_list(pairs()).save_to_disk(str(p))
        for f in p.glob("*.arrow"):
            f.write_bytes(b"garbage" * 10)
        return b.dpo(d, p)
    add("dpo.data: save_to_disk directory with a corrupt arrow file", "dpo", corrupt_arrow, ["dpo.data", "ds"])

    def corrupt_ds_json(d):
        import datasets
        p = d / "ds2"
        datasets.Dataset.from_list(pairs()).save_to_disk(str(p))
        (p / "dataset_info.json").write_text("{not json")
        return b.dpo(d, p)
    add("dpo.data: save_to_disk directory with corrupt dataset_info.json", "dpo", corrupt_ds_json, ["dpo.data", "ds2"])
    add("dpo.data: empty file", "dpo", lambda d: b.dpo(d, write_bytes("empty.jsonl", b"")(d)),
        ["dpo.data", "empty.jsonl"])
    add("dpo.data: gzip-compressed JSONL", "dpo",
        lambda d: b.dpo(d, write_bytes("pairs.jsonl.gz", __import__("gzip").compress(latin))(d)),
        ["dpo.data", "pairs.jsonl.gz"])
    add("dpo.data: UTF-16 JSONL", "dpo",
        lambda d: b.dpo(d, write_bytes("u16.jsonl",
                                       "".join(json.dumps(r) + "\n" for r in pairs()).encode("utf-16"))(d)),
        ["dpo.data", "u16.jsonl"])
    add("chain sft+dpo: non-UTF-8 dpo.data found before sft trains", "chain",
        lambda d: b.chain(d, ["sft", "dpo"], f"sft.init={b.base}", f"sft.data={jl(d / 's.jsonl', convs())}",
                          f"sft.eval_data={d / 's.jsonl'}", "sft.steps=2", "sft.batch_size=4",
                          "sft.optim.warmup_steps=0", f"dpo.data={write_bytes('latin1.jsonl', latin)(d)}"),
        ["stage dpo", "dpo.data", "latin1.jsonl"])
    add("chain sft+dpo: corrupt parquet dpo.data found before sft trains", "chain",
        lambda d: b.chain(d, ["sft", "dpo"], f"sft.init={b.base}", f"sft.data={jl(d / 's.jsonl', convs())}",
                          f"sft.eval_data={d / 's.jsonl'}", "sft.steps=2", "sft.batch_size=4",
                          "sft.optim.warmup_steps=0", f"dpo.data={write_bytes('bad.parquet', b'PAR1xx')(d)}"),
        ["stage dpo", "dpo.data", "bad.parquet"])

    # -- parameters with no meaning ---------------------------------------------------------------------------------
    params = [
        ("dpo", ["dpo.beta=-1"], "dpo.beta"), ("dpo", ["dpo.beta=0"], "dpo.beta"),
        ("dpo", ["dpo.beta=.nan"], "dpo.beta"),
        ("dpo", ["dpo.optim.lr=-1"], "dpo.optim.lr"),

        ("grpo_rloo", ["grpo_rloo.beta=-0.1"], "grpo_rloo.beta"),
        ("grpo_rloo", ["grpo_rloo.clip_eps=0"], "grpo_rloo.clip_eps"),
        ("grpo_rloo", ["grpo_rloo.clip_eps=1.5"], "grpo_rloo.clip_eps"),
        ("grpo_rloo", ["grpo_rloo.group_size=1"], "group_size"),
        ("grpo_rloo", ["grpo_rloo.temperature=0"], "grpo_rloo.temperature"),
        ("grpo_rloo", ["grpo_rloo.temperature=-1"], "grpo_rloo.temperature"),
        ("grpo_rloo", ["grpo_rloo.mini_batch=0"], "grpo_rloo.mini_batch"),
        ("grpo_rloo", ["grpo_rloo.max_new_tokens=0"], "grpo_rloo.max_new_tokens"),
        ("grpo_rloo", ["grpo_rloo.optim.lr=0"], "grpo_rloo.optim.lr"),
        ("grpo_rloo", ["grpo_rloo.reward_weights=[.nan]"], "grpo_rloo.reward_weights"),

        ("dpo", ["ppo.temperature=0"], "ppo.temperature"), ("dpo", ["eval.temperature=-1"], "eval.temperature"),
        ("dpo", ["ppo.mini_batch=0"], "ppo.mini_batch"),
        ("dpo", ["ppo.kl_target=-1"], "ppo"), ("dpo", ["ppo.kl_horizon=0"], "ppo.kl_horizon"),
        ("dpo", ["ppo.ppo_epochs=0"], "ppo.ppo_epochs"), ("dpo", ["ppo.iterations=0"], "ppo.iterations"),
        ("dpo", ["ppo.rollout_batch=0"], "ppo.rollout_batch"), ("dpo", ["ppo.value_clip=-1"], "ppo.value_clip"),
        ("dpo", ["ppo.reward_clip=0"], "ppo.reward_clip"), ("dpo", ["ppo.beta=.inf"], "ppo.beta"),
        ("dpo", ["ppo.max_new_tokens=0"], "ppo.max_new_tokens"),
        ("dpo", ["eval.max_new_tokens=0"], "eval.max_new_tokens"),
        ("dpo", ["eval.correct_reward=.nan"], "eval.correct_reward"),
        ("dpo", ["rm.margin=-1"], "rm.margin"), ("dpo", ["rm.policy_samples=-1"], "rm.policy_samples"),
        ("dpo", ["sft.eval_every=-1"], "sft.eval_every"), ("dpo", ["task.n_train=0"], "task.n_train"),
        ("dpo", ["base.steps=0"], "base.steps"), ("dpo", ["base.lr=-1"], "base.lr"),

    ]
    for _, extra, key in params:
        add(f"chain (config only): {' '.join(extra)}", "chain", lambda d, e=extra: b.chain(d, [], *e), [key])

    # -- user code ------------------------------------------------------------------------------------------------
    on_answers = "    if not any(completions):\n        return [0.0] * len(completions)\n"
    user = [
        ("reward calls sys.exit(0)", "def reward(p, c, **k):\n    sys.exit(0)\n", False),
        ("reward calls sys.exit(3)", "def reward(p, c, **k):\n    sys.exit(3)\n", False),
        ("reward raises", "def reward(p, c, **k):\n    raise ValueError('boom')\n", False),
        ("reward returns NaN", "def reward(p, c, **k):\n    return [math.nan] * len(c)\n", False),
        ("reward returns a short list", "def reward(p, c, **k):\n    return [0.0]\n", False),
        ("reward returns None", "def reward(p, c, **k):\n    pass\n", False),
        ("reward hangs", "def reward(p, c, **k):\n    time.sleep(3600)\n", False),
        ("reward exits at import", "sys.exit(0)\ndef reward(p, c, **k):\n    return [0.0] * len(c)\n", False),
        ("reward sys.exit(0) on real answers", "def reward(p, c, **k):\n" + on_answers + "    sys.exit(0)\n", True),
        ("reward hangs on real answers", "def reward(p, c, **k):\n" + on_answers + "    time.sleep(3600)\n", True),
        ("reward wrong length on real answers", "def reward(p, c, **k):\n" + on_answers + "    return [1.0]\n", True),
    ]
    for name, body, late in user:
        add(f"grpo_rloo.reward: {name}", "grpo_rloo", lambda d, body=body: b.rl(d, reward_file(body)(d)),
            ["grpo_rloo.reward", "user_reward.py"], expect_trained_first=late, timeout_s=60,
            extra_after=["reward_timeout_s=5"])
    bodies = {n: body for n, body, _ in user}
    exits, hang_on_answers = bodies["reward calls sys.exit(0)"], bodies["reward hangs on real answers"]
    add("eval.reward (dpo stage): sys.exit(0)", "dpo",
        lambda d: b.dpo(d, None, f"eval.reward=[{reward_file(exits)(d)}]"), ["eval.reward", "user_reward.py"])
    add("eval.reward (dpo stage): hangs on real answers", "dpo",
        lambda d: b.dpo(d, None, f"eval.reward=[{reward_file(hang_on_answers)(d)}]"), ["eval.reward", "user_reward.py"],
        expect_trained_first=True, timeout_s=60, extra_after=["reward_timeout_s=5"])
    add("chain: eval.reward sys.exit(0) before sft trains", "chain",
        lambda d: b.chain(d, ["sft"], f"sft.init={b.base}", f"sft.data={jl(d / 's.jsonl', convs())}",
                          f"sft.eval_data={d / 's.jsonl'}", "sft.steps=2", "sft.batch_size=4",
                          "sft.optim.warmup_steps=0", f"eval.reward=[{reward_file(exits)(d)}]"),
        ["eval.reward", "user_reward.py"])

    # -- corrupt checkpoints --------------------------------------------------------------------------------------
    def broken_base(d, mutate):
        p = d / "base"
        shutil.copytree(b.base, p)
        mutate(p)
        return b.dpo(d, None, f"dpo.init={p}")
    for name, mutate in (
            ("stage.json not JSON", lambda p: (p / "stage.json").write_text("{oops")),
            ("stage.json a list", lambda p: (p / "stage.json").write_text("[]")),
            ("stage.json missing keys", lambda p: (p / "stage.json").write_text('{"stage": "base"}')),
            ("stage.json binary", lambda p: (p / "stage.json").write_bytes(binary)),
            ("model.pt corrupt", lambda p: (p / "model.pt").write_bytes(b"not a zip")),
            ("tokenizer.model corrupt", lambda p: (p / "tokenizer.model").write_bytes(b"junk"))):
        add(f"dpo.init: {name}", "dpo", lambda d, m=mutate: broken_base(d, m), ["base", name.split()[0]])

    def broken_resume(d, mutate):
        out = d / "out"
        shutil.copytree(b.work / "setup" / "resumable", out)
        step = sorted((out / "resume" / "dpo").glob("step_*"))[-1]
        mutate(step)
        a = b.dpo(d, b.work / "setup" / "pairs.jsonl", "dpo.steps=4", "dpo.checkpoint_every=2")
        return a
    for name, mutate in (
            ("trainer_state.json not JSON", lambda s: (s / "trainer_state.json").write_text("{oops")),
            ("trainer_state.json missing rng", lambda s: (s / "trainer_state.json").write_text(json.dumps(
                {k: v for k, v in json.loads((s / "trainer_state.json").read_text()).items() if k != "rng"}))),
            ("trainer_state.json RNG text corrupt", lambda s: (s / "trainer_state.json").write_text(json.dumps(
                {**json.loads((s / "trainer_state.json").read_text()),
                 "rng": {**json.loads((s / "trainer_state.json").read_text())["rng"], "torch": "!!notbase64"}}))),
            ("trainer_state.json binary", lambda s: (s / "trainer_state.json").write_bytes(binary))):
        add(f"dpo resume: {name}", "dpo", lambda d, m=mutate: broken_resume(d, m), ["trainer_state.json"])

    def chain_skip_corrupt(d):
        out = d / "out"
        (out / "dpo").mkdir(parents=True)
        (out / "dpo" / "stage.json").write_text("{oops")
        return b.chain(d, ["dpo"], f"dpo.init={b.base}", f"dpo.data={jl(d / 'p.jsonl', pairs())}")
    add("chain: a complete-looking stage dir with corrupt stage.json", "chain", chain_skip_corrupt,
        ["stage.json"])

    # -- the audit ------------------------------------------------------------------------------------------------
    s = b.work / "setup"
    add("audit: data tokenized with another tokenizer", "audit",
        lambda d: ["--checkpoint", str(b.base), "--data", str(s / "audit_data_other_tok"), "--docs-per-bucket", "4"],
        ["tokenizer", "audit_data_other_tok"])

    def audit_corrupt(d, mutate, ckpt=False):
        data = d / "data"
        shutil.copytree(s / "audit_data", data)
        c = d / "ckpt"
        shutil.copytree(b.base, c)
        mutate(c if ckpt else data)
        return ["--checkpoint", str(c), "--data", str(data), "--docs-per-bucket", "4"]
    add("audit: corrupt data.idx", "audit",
        lambda d: audit_corrupt(d, lambda p: (p / "data.idx").write_bytes(b"junk" * 4)), ["data.idx"])
    add("audit: truncated data.bin", "audit",
        lambda d: audit_corrupt(d, lambda p: (p / "data.bin").write_bytes((p / "data.bin").read_bytes()[:100])),
        ["data.bin"])
    add("audit: corrupt tokenizer in data folder", "audit",
        lambda d: audit_corrupt(d, lambda p: (p / "tokenizer.model").write_bytes(b"junk")), ["tokenizer.model"])
    add("audit: checkpoint stage.json not JSON", "audit",
        lambda d: audit_corrupt(d, lambda p: (p / "stage.json").write_text("{oops"), ckpt=True), ["stage.json"])
    add("audit: checkpoint model.pt corrupt", "audit",
        lambda d: audit_corrupt(d, lambda p: (p / "model.pt").write_bytes(b"junk"), ckpt=True), ["model.pt"])
    add("audit: corrupt canaries.json", "audit",
        lambda d: audit_corrupt(d, lambda p: (p / "canaries.json").write_text("{oops")), ["canaries.json"])
    add("audit: --eval binary file", "audit",
        lambda d: ["--checkpoint", str(b.base), "--data", str(s / "audit_data"), "--docs-per-bucket", "4",
                   "--eval", str(write_bytes("eval.jsonl", binary)(d))], ["eval.jsonl"])
    # -- launch/ppo.py (the PPO stage alone) ----------------------------------------------------------------------
    add("ppo: reward_model is a language model, not an RM", "ppo", lambda d: b.ppo(d, None, rm=str(b.base)),
        ["ppo.reward_model", "not a reward model"])
    add("ppo: reward_model missing", "ppo", lambda d: b.ppo(d, None, rm=str(d / "no_rm")), ["ppo.reward_model",
                                                                                                "no_rm"])
    add("ppo: actor missing", "ppo", lambda d: b.ppo(d, None, f"ppo.actor={d / 'no_actor'}"),
        ["ppo.actor", "no_actor"])
    add("ppo: prompts file missing", "ppo", lambda d: b.ppo(d, d / "none.jsonl"), ["ppo.prompts", "none.jsonl"])
    add("ppo: prompts are binary", "ppo", lambda d: b.ppo(d, write_bytes("bin.jsonl", binary)(d)),
        ["ppo.prompts", "bin.jsonl"])
    add("ppo: prompts are preference pairs", "ppo", lambda d: b.ppo(d, jl(d / "pairs.jsonl", [{"chosen": "1"}] * 4)),
        ["ppo.prompts", "pairs.jsonl"])
    for key, value in (("clip_eps", "-0.1"), ("gamma", "1.5"), ("lam", "-1"), ("beta", "-1"), ("temperature", "0"),
                       ("iterations", "0"), ("reward_clip", "0"), ("ppo_epochs", "0"), ("kl_estimator", "k9"),
                       ("mini_batch", "3"), ("rollout_batch", "0"), ("value_clip", "-1"), ("ema", "1.5"),
                       ("max_new_tokens", "0"), ("kl_target", "-5")):
        add(f"ppo: ppo.{key}={value}", "ppo", (lambda k, v: lambda d: b.ppo(d, None, f"ppo.{k}={v}"))(key, value),
            [f"ppo.{key}"])
    return C


def classify(case: Case, rc, out, err) -> tuple[str, str]:
    lines = [x for x in err.strip().splitlines() if x.strip()]
    last = lines[-1] if lines else ""
    if rc is None:
        return "late-or-misleading", f"hung past {case.timeout_s} s"
    if "Traceback (most recent call last)" in err or "Traceback (most recent call last)" in out:
        return "traceback", last[:300]
    if rc == 0:
        return "silent", (out.strip().splitlines() or [""])[-1][:300]
    trained = any(m in out for m in ("step 1/", "iteration 1/", "done in"))
    missing = [m for m in case.must if m not in last]
    if missing or (trained and not case.expect_trained_first):
        why = f"missing {missing}" if missing else "refused only after training"
        return "late-or-misleading", f"{why}: {last[:300]}"
    return "clear", last[:300]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/align_hardening"))
    ap.add_argument("--only", default=None, help="a regular expression: run the cases whose name matches")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    b = Bench(args.work)
    b.setup()
    b.reward_model()  # before the cases run in parallel
    sys.path.insert(0, str(ROOT))
    from llm.align.config import AlignConfig
    fixed = "reward_timeout_s" in AlignConfig.__dataclass_fields__
    todo = [c for c in cases(b) if args.only is None or re.search(args.only, c.name)]
    # a before and an after run may share one setup
    runs = args.work / (("cases_after" if fixed else "cases") + ("_only" if args.only else ""))
    shutil.rmtree(runs, ignore_errors=True)

    def one(i_case):
        i, case = i_case
        d = runs / f"{i:03d}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        a = case.setup(d) + (case.extra_after if fixed else [])
        rc, out, err, wall = b.run(case.entry, a, case.timeout_s)
        verdict, msg = classify(case, rc, out, err)
        return {"case": case.name, "entry": case.entry, "rc": rc, "verdict": verdict, "message": msg,
                "wall_s": round(wall, 1)}

    results = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for r in pool.map(one, enumerate(todo)):
            results.append(r)
            print(f"{r['verdict']:>18}  rc={r['rc']}  {r['wall_s']:5.1f}s  {r['case']}\n{'':20}{r['message']}",
                  flush=True)
    counts = {k: sum(r["verdict"] == k for r in results) for k in ("clear", "traceback", "silent",
                                                                  "late-or-misleading")}
    print(json.dumps({"cases": len(results), **counts}))
    if args.out:
        args.out.write_text(json.dumps({"counts": counts, "results": results}, indent=1))


if __name__ == "__main__":
    main()
