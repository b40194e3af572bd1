"""Environment faults, config and law files, resume: every bad input tried against the real entry points.

    python bench/hardening/env.py [--repo DIR] [--only SUBSTRING] [--json OUT] [--jobs 1]

Each case sets up files in a fresh temporary folder, runs one entry point (launch/pretrain.py, prepare_data.py,
plan.py, sweep.py --fit-only, consolidate.py, evaluate.py) as a subprocess with a tiny config, and is classified:

  clear       a refused input: non-zero exit, at most two lines on stderr, no traceback, naming what it must
              name (the path and/or key); an accepted one (a resume that falls back): exit 0 and the check holds
  traceback   a Python traceback on stderr
  silent      exit 0 where the input should have been refused, or a check of the result fails (lost or wrong)
  late        refused, but with a message that does not name the culprit, after a long wait, or killed by the
              timeout (a hang)

Disk full: a 2 MiB tmpfs mounted per case (`mount -t tmpfs`, needs root); where mounting is refused, the child runs
under RLIMIT_FSIZE instead (writes past the limit fail with EFBIG), and the case says which it used.
--repo runs the cases against another checkout (the "before" counts of a change).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml

HERE = Path(__file__).resolve().parents[2]
TIMEOUT_S = 90
"""Per command; --timeout raises it on a loaded machine (a tiny run then takes a minute)."""
SLOW_S = 60


@dataclass
class Case:
    name: str
    setup: Callable[["Ctx"], list[str]]
    """Writes the case's files under ctx.dir; returns the command (argv after `python`)."""
    names: tuple[str, ...] = ()
    """Substrings a clear refusal must contain (lower-cased comparison)."""
    expect_ok: bool = False
    check: Callable[["Ctx", subprocess.CompletedProcess], str | None] | None = None
    """Returns why the result is wrong (silent), or None."""
    env: dict = field(default_factory=dict)
    fsize: int | None = None
    """RLIMIT_FSIZE for the child (bytes), the fallback for a full disk."""


class Ctx:
    def __init__(self, repo: Path, data: dict, root: Path, can_mount: bool):
        self.repo, self.data, self.can_mount = repo, data, can_mount
        self.dir = Path(tempfile.mkdtemp(dir=root))
        self.mounts: list[Path] = []
        self.fsize: int | None = None

    def p(self, *parts) -> Path:
        return self.dir.joinpath(*parts)

    def full_fs(self, name: str = "full", free_kb: int = 0) -> Path:
        """A folder on a 2 MiB filesystem with about `free_kb` KiB left (tmpfs; else RLIMIT_FSIZE on the child)."""
        d = self.p(name)
        d.mkdir(parents=True, exist_ok=True)
        if self.can_mount:
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(d)], check=True)
            self.mounts.append(d)
            filler = d / ".filler"
            with open(filler, "wb") as f:
                try:
                    f.write(b"\0" * (2048 - free_kb) * 1024)
                except OSError:
                    pass
        else:
            self.fsize = max(free_kb, 1) * 1024
        return d

    def config(self, name: str = "run.yaml", out_dir: Path | None = None, **sections) -> Path:
        cfg = {
            "model": {"n_layers": 2, "d_model": 64, "n_heads": 4, "n_kv_heads": 2, "d_ff": 128,
                      "vocab_size": 512, "seq_len": 32},
            "data": {"paths": [self.data["prefix"]], "tokenizer": self.data["tokenizer"]},
            "optim": {"lr": 3e-3, "warmup_steps": 1},
            "train": {"max_steps": 2, "global_batch_size": 4, "micro_batch_size": 2, "eval_every": 0,
                      "eval_batches": 1, "seed": 0, "log_every": 1},
            "precision": "fp32",
            "checkpoint": {"every": 0, "keep": 2},
            "out_dir": str(out_dir or self.p("out")),
        }
        for section, values in sections.items():
            if isinstance(values, dict) and isinstance(cfg.get(section), dict):
                cfg[section].update(values)
            else:
                cfg[section] = values
        path = self.p(name)
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        return path

    def cleanup(self) -> None:
        for d in reversed(self.mounts):
            subprocess.run(["umount", "-l", str(d)], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


def pretrain(ctx: Ctx, cfg: Path, *overrides: str) -> list[str]:
    return [str(ctx.repo / "launch/pretrain.py"), "--config", str(cfg), *overrides]


def run_ok(ctx: Ctx, argv: list[str], timeout: int | None = None) -> None:
    """A set-up step that must succeed (e.g. the run whose checkpoint a case then breaks)."""
    timeout = max(timeout or 0, TIMEOUT_S)
    r = subprocess.run([sys.executable, *argv], cwd=ctx.repo, capture_output=True, text=True, timeout=timeout,
                       env={**os.environ, "DS_ACCELERATOR": "cpu"})
    if r.returncode != 0:
        raise RuntimeError(f"set-up run failed: {' '.join(argv)}\n{r.stderr[-2000:]}")


def ckpts(out: Path) -> list[Path]:
    return sorted((out / "checkpoints").glob("step_*"))


# ---------------------------------------------------------------------------------------------------------
# Law files (plan.py --law).

def _law(ctx: Ctx, edit: Callable[[dict], None] | None = None, text: str | None = None) -> Path:
    path = ctx.p("law.json")
    if text is not None:
        path.write_text(text)
        return path
    doc = json.loads((ctx.repo / "bench/results_sweep/law.json").read_text())
    edit(doc)
    path.write_text(json.dumps(doc))  # json writes NaN/Infinity, as Python's json.loads reads them
    return path


def law_case(name: str, edit=None, text=None, key: str = "") -> Case:
    def setup(ctx):
        return [str(ctx.repo / "launch/plan.py"), "--law", str(_law(ctx, edit, text)), "--flops", "1e18"]
    return Case(f"law: {name}", setup, names=("law.json",) + ((key,) if key else ()))


def _set(path: str, value):
    def edit(doc):
        node = doc
        parts = path.split(".")
        for p in parts[:-1]:
            node = node[int(p)] if isinstance(node, list) else node[p]
        node[int(parts[-1]) if isinstance(node, list) else parts[-1]] = value
    return edit


LAW_CASES = [
    law_case("n_opt.a NaN", _set("n_opt.a", float("nan")), key="n_opt.a"),
    law_case("n_opt.a negative", _set("n_opt.a", -0.5), key="n_opt.a"),
    law_case("n_opt.a infinite", _set("n_opt.a", float("inf")), key="n_opt.a"),
    law_case("n_opt.a = 5 (overflows N_opt)", _set("n_opt.a", 5.0), key="n_opt.a"),
    law_case("n_opt.a a string", _set("n_opt.a", "abc"), key="n_opt.a"),
    law_case("n_opt.k zero", _set("n_opt.k", 0.0), key="n_opt.k"),
    law_case("n_opt.k negative", _set("n_opt.k", -1.0), key="n_opt.k"),
    law_case("n_opt.k 1e308", _set("n_opt.k", 1e308), key="n_opt.k"),
    law_case("parametric.E NaN", _set("parametric.E", float("nan")), key="parametric.E"),
    law_case("parametric.E 1e300", _set("parametric.E", 1e300), key="parametric.E"),
    law_case("parametric.A negative", _set("parametric.A", -1.0), key="parametric.A"),
    law_case("parametric.B infinite", _set("parametric.B", float("inf")), key="parametric.B"),
    law_case("parametric.alpha 50", _set("parametric.alpha", 50.0), key="parametric.alpha"),
    law_case("parametric.beta negative", _set("parametric.beta", -0.3), key="parametric.beta"),
    law_case("bootstrap.confidence 1.5", _set("bootstrap.confidence", 1.5), key="bootstrap.confidence"),
    law_case("bootstrap sample NaN", _set("bootstrap.samples.0.0", float("nan")), key="bootstrap.samples"),
    law_case("budget flops negative", _set("budgets.0.flops", -1.0), key="budgets"),
    law_case("budgets empty", _set("budgets", []), key="budgets"),
    law_case("truncated file", text=(HERE / "bench/results_sweep/law.json").read_text()[:700]),
    law_case("empty file", text=""),
    law_case("binary garbage", text="\x00\x01\x02PK\x03\x04"),
    law_case("format not a law", text='{"format": "something else"}'),
]


# ---------------------------------------------------------------------------------------------------------
# YAML configs.

BOMB = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] +
                 [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]) + "\n"


def yaml_case(name, text, names, entry="pretrain"):
    def setup(ctx):
        path = ctx.p("bad.yaml")
        path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
        if entry == "pretrain":
            return pretrain(ctx, path)
        return [str(ctx.repo / "launch/prepare_data.py"), "--config", str(path), "--input",
                str(ctx.repo / "data/raw/python_docs.jsonl"), "--output", str(ctx.p("prep"))]
    return Case(f"yaml: {name}", setup, names=names)


def ds_case(name, deepspeed, names, entry="pretrain"):
    def setup(ctx):
        cfg = ctx.config(parallel={"deepspeed": deepspeed})
        if entry == "plan":
            return [str(ctx.repo / "launch/plan.py"), "--config", str(cfg), "--gpus", "8"]
        return pretrain(ctx, cfg)
    return Case(f"parallel.deepspeed ({entry}): {name}", setup, names=names)


def override_bomb(ctx):
    cfg = ctx.config()
    flow = "{a: &a [x,x,x,x,x,x,x,x,x,x], " + ", ".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)) + "}"
    return pretrain(ctx, cfg, f"parallel.deepspeed={flow}")


YAML_CASES = [
    yaml_case("billion laughs (pretrain)", BOMB, ("bad.yaml", "alias")),
    yaml_case("billion laughs (prepare_data)", BOMB, ("bad.yaml", "alias"), entry="prepare"),
    Case("yaml: billion laughs in an override", override_bomb, names=("alias",)),
    yaml_case("nesting 20000 deep", "a: " + "[" * 20000 + "]" * 20000 + "\n", ("bad.yaml",)),
    yaml_case("not UTF-8", b"model:\n  n_layers: \xff\xfe\n", ("bad.yaml",)),
    yaml_case("a tab-indented file", "model:\n\tn_layers: 2\n", ("bad.yaml",)),
    yaml_case("lr .nan", "optim:\n  lr: .nan\n", ("optim.lr",)),
    yaml_case("top level a list", "- 1\n- 2\n", ("bad.yaml",)),
    ds_case("unknown key", {"zero_optimisation": {"stage": 1}}, ("parallel.deepspeed.zero_optimisation",)),
    ds_case("generated key", {"train_batch_size": 64}, ("parallel.deepspeed.train_batch_size",)),
    ds_case("not a mapping", 3, ("parallel.deepspeed",)),
    ds_case("unknown key", {"no_such_knob": 1}, ("parallel.deepspeed.no_such_knob",), entry="plan"),
]


# ---------------------------------------------------------------------------------------------------------
# Devices.

def eval_device(device):
    def setup(ctx):
        run_ok(ctx, pretrain(ctx, ctx.config()))
        return [str(ctx.repo / "launch/evaluate.py"), "--checkpoint", str(ckpts(ctx.p("out"))[-1]), "--tasks",
                "python_docs_ppl", "--limit", "1", "--device", device]
    return setup


def pretrain_device(ctx):
    return pretrain(ctx, ctx.config())


DEVICE_CASES = [
    Case("device: evaluate.py --device cuda on a CPU build", eval_device("cuda"), names=("--device", "cuda")),
    Case("device: evaluate.py --device cuda:3", eval_device("cuda:3"), names=("--device", "cuda")),
    Case("device: evaluate.py --device tpu", eval_device("tpu"), names=("--device", "tpu")),
    Case("device: pretrain with CUDA_VISIBLE_DEVICES='' works on CPU", pretrain_device, expect_ok=True,
         env={"CUDA_VISIBLE_DEVICES": ""}),
]


# ---------------------------------------------------------------------------------------------------------
# Disk full.

def nothing_complete(ctx, r):
    done = [p for p in ctx.dir.rglob("step_*") if (p / "trainer_state.json").is_file()]
    return f"a checkpoint marked complete on a full disk: {done[0]}" if done else None


def disk_pretrain(where: str, free_kb: int, every: int = 0):
    def setup(ctx):
        full = ctx.full_fs(free_kb=free_kb)
        if where == "checkpoint":
            cfg = ctx.config(checkpoint={"dir": str(full / "ckpt"), "every": every, "keep": 2})
        else:
            cfg = ctx.config(out_dir=full / "out", checkpoint={"every": every, "keep": 2})
        return pretrain(ctx, cfg)
    return setup


def disk_prepare(free_kb):
    def setup(ctx):
        full = ctx.full_fs(free_kb=free_kb)
        return [str(ctx.repo / "launch/prepare_data.py"), "--input", str(ctx.repo / "data/raw/python_docs.jsonl"),
                "--output", str(full / "prep"), "--no-progress", "tokenize.vocab_size=512"]
    return setup


def prep_nothing_done(ctx, r):
    final = list(ctx.dir.rglob("data.idx"))
    if final:
        return f"{final[0]} published on a full disk"
    return None


def disk_plan(ctx):
    full = ctx.full_fs(free_kb=0)
    return [str(ctx.repo / "launch/plan.py"), "--flops", "1e19", "--write-config", str(full / "plan.yaml")]


def disk_consolidate(ctx):
    run_ok(ctx, pretrain(ctx, ctx.config()))
    full = ctx.full_fs(free_kb=100)
    return [str(ctx.repo / "launch/consolidate.py"), str(ckpts(ctx.p("out"))[-1]), "--output", str(full / "c.pt")]


def disk_rlimit_checkpoint(ctx):
    return pretrain(ctx, ctx.config())


DISK_CASES = [
    Case("disk full: checkpoint.dir with 300 KiB free", disk_pretrain("checkpoint", 300),
         names=("no space", "checkpoint"), check=nothing_complete),
    Case("disk full: checkpoint.dir with 0 KiB free", disk_pretrain("checkpoint", 0),
         names=("no space", "checkpoint"), check=nothing_complete),
    Case("disk full: periodic checkpoint, 300 KiB free", disk_pretrain("checkpoint", 300, every=1),
         names=("no space", "checkpoint"), check=nothing_complete),
    Case("disk full: out_dir with 0 KiB free", disk_pretrain("out", 0), names=("no space", "out")),
    Case("disk full: out_dir with 40 KiB free", disk_pretrain("out", 40), names=("no space",),
         check=nothing_complete),
    Case("disk full: out_dir with 600 KiB free", disk_pretrain("out", 600), names=("no space",),
         check=nothing_complete),
    Case("disk full: prepare_data output, 0 KiB free", disk_prepare(0), names=("no space", "prep"),
         check=prep_nothing_done),
    Case("disk full: prepare_data output, 200 KiB free", disk_prepare(200), names=("no space", "prep"),
         check=prep_nothing_done),
    Case("disk full: prepare_data output, 900 KiB free", disk_prepare(900), names=("no space", "prep"),
         check=prep_nothing_done),
    Case("disk full: plan.py --write-config", disk_plan, names=("no space", "plan.yaml")),
    Case("disk full: consolidate.py --output", disk_consolidate, names=("no space", "c.pt")),
    Case("file size limit (EFBIG): checkpoint save", disk_rlimit_checkpoint, names=("file too large", "checkpoint"),
         check=nothing_complete, fsize=200 * 1024),
]


# ---------------------------------------------------------------------------------------------------------
# Resume from damaged checkpoints.

def _two_checkpoints(ctx, **train):
    cfg = ctx.config(train={"max_steps": 4, **train}, checkpoint={"every": 2, "keep": 2})
    run_ok(ctx, pretrain(ctx, cfg))
    return cfg


def damage(target: str, how: str, both_kept: bool = True, then: str = "resume"):
    """Break `target` (a file of the newest checkpoint) by `how`, then resume (train to step 6) or evaluate."""
    def setup(ctx):
        cfg = ctx.config(train={"max_steps": 4}, checkpoint={"every": 2, "keep": 2 if both_kept else 1})
        run_ok(ctx, pretrain(ctx, cfg))
        newest = ckpts(ctx.p("out"))[-1]
        f = newest / target
        if how == "truncate":
            data = f.read_bytes()
            f.write_bytes(data[: len(data) // 2])
        elif how == "empty":
            f.write_bytes(b"")
        elif how == "garbage":
            f.write_bytes(b"\x00garbage\xff" * 10)
        elif how == "delete":
            f.unlink()
        elif how == "no-step":
            f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items() if k != "step"}))
        if then == "eval":
            return pretrain(ctx, cfg, "--eval-only")
        if then == "consolidate":
            return [str(ctx.repo / "launch/consolidate.py"), str(newest), "--output", str(ctx.p("c.pt"))]
        if then == "init_from":
            return pretrain(ctx, ctx.config("b.yaml", out_dir=ctx.p("b"), checkpoint={"init_from": str(newest)}))
        return pretrain(ctx, cfg, "train.max_steps=6")
    return setup


def resumed_from_older(ctx, r):
    out = r.stdout + r.stderr
    if "resuming from" not in out or "step_00000004" not in out or "step_00000002" not in out:
        return "no warning naming the unreadable step_00000004 and the step_00000002 resumed from"
    if not (ctx.p("out/checkpoints/step_00000006/trainer_state.json")).is_file():
        return "the resumed run did not reach step 6"
    return None


RESUME_CASES = [
    Case("resume: newest model.pt truncated, older kept", damage("model.pt", "truncate"), expect_ok=True,
         check=resumed_from_older),
    Case("resume: newest optimizer.pt empty, older kept", damage("optimizer.pt", "empty"), expect_ok=True,
         check=resumed_from_older),
    Case("resume: newest trainer_state.json garbage, older kept", damage("trainer_state.json", "garbage"),
         expect_ok=True, check=resumed_from_older),
    Case("resume: newest rng_rank0.json garbage, older kept", damage("rng_rank0.json", "garbage"), expect_ok=True,
         check=resumed_from_older),
    Case("resume: newest config.yaml garbage, older kept", damage("config.yaml", "garbage"), expect_ok=True,
         check=resumed_from_older),
    Case("resume: newest model.pt deleted, older kept", damage("model.pt", "delete"), expect_ok=True,
         check=resumed_from_older),
    Case("resume: newest trainer_state.json without 'step'", damage("trainer_state.json", "no-step"),
         expect_ok=True, check=resumed_from_older),
    Case("resume: only checkpoint's model.pt truncated", damage("model.pt", "truncate", both_kept=False),
         names=("model.pt", "step_00000004")),
    Case("resume: only checkpoint's trainer_state.json empty", damage("trainer_state.json", "empty", False),
         names=("trainer_state.json", "step_00000004")),
    # --eval-only falls back like a resume (a warning naming the bad step, "eval loss ... at step 2"): the
    # newest readable checkpoint is evaluated and says which it is.
    Case("--eval-only: model.pt truncated, older kept", damage("model.pt", "truncate", then="eval"), expect_ok=True,
         check=lambda ctx, r: None if ("step_00000004" in r.stdout + r.stderr and "at step 2" in r.stdout)
         else "evaluated without naming the unreadable step_00000004 and the step evaluated"),
    Case("--eval-only: only checkpoint's model.pt truncated", damage("model.pt", "truncate", False, then="eval"),
         names=("model.pt",)),
    Case("consolidate: model.pt truncated", damage("model.pt", "truncate", then="consolidate"),
         names=("model.pt",)),
    Case("init_from: model.pt truncated", damage("model.pt", "truncate", then="init_from"), names=("model.pt",)),
]


def stale_tmp_ckpt(ctx):
    cfg = ctx.config(checkpoint={"every": 1})
    tmp = ctx.p("out/checkpoints/.tmp-step_00000001")
    tmp.mkdir(parents=True)
    (tmp / "model.pt").write_bytes(b"half")
    return pretrain(ctx, cfg)


def out_dir_is_file(ctx):
    ctx.p("out").write_text("x")
    return pretrain(ctx, ctx.config())


def metrics_is_dir(ctx):
    ctx.p("out/metrics.jsonl").mkdir(parents=True)
    return pretrain(ctx, ctx.config())


def truncated_data(suffix):
    def setup(ctx):
        src = Path(ctx.data["prefix"])
        dst = ctx.p("data")
        for s in (".bin", ".idx"):
            shutil.copy(src.with_suffix(s), dst.with_suffix(s))
        f = dst.with_suffix(suffix)
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])
        return pretrain(ctx, ctx.config(data={"paths": [str(dst)], "tokenizer": ctx.data["tokenizer"]}))
    return setup


def corrupt_tokenizer(ctx):
    tok = ctx.p("tokenizer.model")
    tok.write_bytes(b"\x00not a sentencepiece model")
    return pretrain(ctx, ctx.config(data={"paths": [ctx.data["prefix"]], "tokenizer": str(tok)}))


def corrupt_peak_cache(ctx):
    cache = ctx.p("cache")
    cache.mkdir()
    (cache / "cpu_peak.json").write_text("{not json")
    return pretrain(ctx, ctx.config())


def cache_dir_is_file(ctx):
    ctx.p("cachefile").write_text("x")
    return pretrain(ctx, ctx.config())


MISC_CASES = [
    Case("stale .tmp-step directory from a kill", stale_tmp_ckpt, expect_ok=True,
         check=lambda ctx, r: None if not list(ctx.p("out/checkpoints").glob(".tmp-*")) else "temp dir left"),
    Case("out_dir is a file", out_dir_is_file, names=("out",)),
    Case("metrics.jsonl is a directory", metrics_is_dir, names=("metrics.jsonl",)),
    Case("data .idx truncated", truncated_data(".idx"), names=("data.idx",)),
    Case("data .bin truncated", truncated_data(".bin"), names=("data.bin",)),
    Case("tokenizer file corrupt", corrupt_tokenizer, names=("tokenizer.model",)),
    Case("corrupt CPU peak cache is re-measured", corrupt_peak_cache, expect_ok=True,
         env={"LLM_FORGE_CACHE": "{dir}/cache"}),
    Case("LLM_FORGE_CACHE is a file", cache_dir_is_file, expect_ok=True, env={"LLM_FORGE_CACHE": "{dir}/cachefile"}),
]


# ---------------------------------------------------------------------------------------------------------
# Data preparation.

def stale_tmp_files(ctx):
    out = ctx.p("prep")
    run_ok(ctx, [str(ctx.repo / "launch/prepare_data.py"), "--input", str(ctx.repo / "data/raw/python_docs.jsonl"),
                 "--output", str(out), "--no-progress", "tokenize.vocab_size=512"], timeout=180)
    # What a kill -9 mid-write leaves: temporary files of a process that no longer exists.
    victims = [p for p in out.rglob("*") if p.is_file() and p.suffix in (".jsonl", ".json")][:3]
    for v in victims:
        (v.parent / (v.name + ".tmp999999")).write_text("half a line")
    (out / "data.bin.tmp999999").write_bytes(b"\0" * 100)
    return [str(ctx.repo / "launch/prepare_data.py"), "--input", str(ctx.repo / "data/raw/python_docs.jsonl"),
            "--output", str(out), "--no-progress", "tokenize.vocab_size=512"]


def no_tmp_left(ctx, r):
    left = [p for p in ctx.p("prep").rglob("*.tmp[0-9]*")]
    return f"{len(left)} temporary files left, e.g. {left[0]}" if left else None


def kill9_prepare(ctx):
    out = ctx.p("prep")
    argv = [sys.executable, str(ctx.repo / "launch/prepare_data.py"), "--input",
            str(ctx.repo / "data/raw/python_docs.jsonl"), "--output", str(out), "--no-progress",
            "tokenize.vocab_size=512"]
    proc = subprocess.Popen(argv, cwd=ctx.repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(out.rglob("*.tmp[0-9]*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return argv[1:]


def prep_input(name, content):
    def setup(ctx):
        f = ctx.p(name)
        f.write_bytes(content)
        return [str(ctx.repo / "launch/prepare_data.py"), "--input", str(f), "--output", str(ctx.p("prep")),
                "--no-progress", "tokenize.vocab_size=512"]
    return setup


DATA_CASES = [
    Case("prepare_data: stale *.tmp<pid> files from a killed run", stale_tmp_files, expect_ok=True, check=no_tmp_left),
    Case("prepare_data: rerun after kill -9 mid-run", kill9_prepare, expect_ok=True, check=no_tmp_left),
    Case("prepare_data: input is binary", prep_input("in.jsonl", b"\x00\x01\xff" * 100), names=("in.jsonl",)),
    Case("prepare_data: truncated gzip input", prep_input("in.jsonl.gz", gzip.compress(b'{"text": "a"}\n' * 500)[:60]),
         names=("in.jsonl.gz",)),
]


# ---------------------------------------------------------------------------------------------------------
# Sweep points (done.json).

def sweep_dir(ctx, broken: str | None):
    """A designed sweep (made by --fit-only on an empty --out, which designs the grid and finds nothing to fit) whose
    points are marked done with losses from a known law; one done.json is then broken."""
    out = ctx.p("sweep")
    base = ctx.config()
    argv = [str(ctx.repo / "launch/sweep.py"), "--config", str(base), "--out", str(out), "--fit-only",
            "--budgets", "3e10", "6e10", "--sizes-per-budget", "3", "--spread", "0.25", "--bootstrap", "20"]
    subprocess.run([sys.executable, *argv], cwd=ctx.repo, capture_output=True, timeout=TIMEOUT_S)
    for p in json.loads((out / "sweep.json").read_text())["points"]:
        loss = 1.5 + 500 / p["n_params"] ** 0.35 + 100 / p["n_tokens"] ** 0.35
        (out / "points" / p["name"] / "done.json").write_text(json.dumps({**p, "loss": loss}))
    victim = sorted((out / "points").glob("*/done.json"))[0]
    if broken == "truncated":
        victim.write_text(victim.read_text()[:30])
    elif broken == "empty":
        victim.write_text("")
    elif broken == "nan":
        victim.write_text(json.dumps({**json.loads(victim.read_text()), "loss": float("nan")}))
    elif broken == "list":
        victim.write_text("[1, 2]")
    elif broken == "a directory":
        victim.unlink()
        victim.mkdir()
    return argv


SWEEP_CASES = [Case(f"sweep --fit-only: done.json {b}", (lambda b: lambda ctx: sweep_dir(ctx, b))(b),
                    names=("done.json",)) for b in ("truncated", "empty", "nan", "list", "a directory")]


CASES = LAW_CASES + YAML_CASES + DEVICE_CASES + DISK_CASES + RESUME_CASES + MISC_CASES + DATA_CASES + SWEEP_CASES


def classify(case: Case, ctx: Ctx, r: subprocess.CompletedProcess | None, seconds: float) -> tuple[str, str]:
    if r is None:
        return "late", f"killed after {TIMEOUT_S} s (hang)"
    err = r.stderr.strip()
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith(("warning", "[", "W"))]
    if "Traceback (most recent call last)" in err:
        return "traceback", err.splitlines()[-1][:200]
    if case.expect_ok:
        if r.returncode != 0:
            return "late", f"refused a valid case (exit {r.returncode}): {err.splitlines()[-1][:200] if err else ''}"
        why = case.check(ctx, r) if case.check else None
        return ("silent", why) if why else ("clear", "ok")
    if r.returncode == 0:
        why = case.check(ctx, r) if case.check else None
        return "silent", why or f"exit 0: {(r.stdout.strip().splitlines() or [''])[-1][:160]}"
    why = case.check(ctx, r) if case.check else None
    if why:
        return "silent", why
    last = err.splitlines()[-1] if err else ""
    missing = [n for n in case.names if n.lower() not in err.lower()]
    if missing or len(lines) > 2 or seconds > SLOW_S:
        return "late", f"({seconds:.0f} s, {len(lines)} lines, missing {missing}) {last[:200]}"
    return "clear", last[:200]


def run_case(case: Case, repo: Path, data: dict, root: Path, can_mount: bool) -> dict:
    ctx = Ctx(repo, data, root, can_mount)
    try:
        argv = case.setup(ctx)
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "PYTHONUNBUFFERED": "1",
               **{k: v.format(dir=ctx.dir) for k, v in case.env.items()}}
        fsize = case.fsize or ctx.fsize

        def limit():
            if fsize:
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
                resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        t0 = time.monotonic()
        try:
            r = subprocess.run([sys.executable, *argv], cwd=repo, capture_output=True, text=True, env=env,
                               timeout=TIMEOUT_S, preexec_fn=limit if fsize else None)
        except subprocess.TimeoutExpired:
            r = None
        seconds = time.monotonic() - t0
        verdict, detail = classify(case, ctx, r, seconds)
        how = " [RLIMIT_FSIZE]" if fsize else (" [tmpfs]" if ctx.mounts else "")
        return {"case": case.name + how, "verdict": verdict, "detail": detail, "seconds": round(seconds, 1)}
    except Exception as e:  # a broken set-up is the harness's problem: report it, go on
        return {"case": case.name, "verdict": "setup-failed", "detail": f"{type(e).__name__}: {str(e)[:300]}",
                "seconds": 0}
    finally:
        ctx.cleanup()


def _can_mount(root: Path) -> bool:
    d = root / "probe"
    d.mkdir()
    ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(d)], capture_output=True).returncode == 0
    if ok:
        subprocess.run(["umount", str(d)], check=False)
    return ok


def main() -> int:
    global TIMEOUT_S, SLOW_S
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", type=Path, default=HERE, help="checkout whose entry points are run (default: this one)")
    ap.add_argument("--only", help="run only cases whose name contains this")
    ap.add_argument("--json", type=Path, help="write the results here (rewritten after every case)")
    ap.add_argument("--from", dest="start", type=int, default=1, help="start at case number N (1-based)")
    ap.add_argument("--timeout", type=int, default=TIMEOUT_S, help="seconds per command (default %(default)s)")
    args = ap.parse_args()
    TIMEOUT_S, SLOW_S = args.timeout, max(SLOW_S, args.timeout * 2 // 3)
    repo = args.repo.resolve()
    sys.path.insert(0, str(HERE))
    root = Path(tempfile.mkdtemp(prefix="env-faults-"))
    can_mount = _can_mount(root)
    from tests.parallel.launcher_utils import prepare_tiny_data
    data = prepare_tiny_data(root / "tiny_data")
    cases = [c for c in CASES if not args.only or args.only.lower() in c.name.lower()]
    results, counts = [], {}
    for i, case in enumerate(cases):
        if i + 1 < args.start:
            continue
        res = run_case(case, repo, data, root, can_mount)
        results.append({"n": i + 1, **res})
        counts[res["verdict"]] = counts.get(res["verdict"], 0) + 1
        print(f"[{i + 1}/{len(cases)}] {res['verdict']:<12} {res['case']} ({res['seconds']} s): {res['detail']}",
              flush=True)
        if args.json:
            args.json.write_text(json.dumps({"repo": str(repo), "counts": counts, "results": results}, indent=1))
    print(f"repo {repo}: {len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
