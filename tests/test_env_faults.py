"""Environment faults, config and law files, resume (bench/hardening/env.py runs the same against the entry points).

A full disk is simulated with RLIMIT_FSIZE in a child process (writes past the limit fail with EFBIG, as they do
under `ulimit -f`): it needs no root and no mount, and the write sites cannot tell it from ENOSPC.
"""
import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import typed_yaml
from data_pipeline.shards import remove_stale_temps
from llm.config import ConfigError, load_config
from llm.scaling.law import LawFileError, read_law
from llm.train import checkpoint as ckpt
from llm.train.debug import run_debug
from tests.conftest import ROOT

LAW = ROOT / "bench/results_sweep/law.json"


def _law(tmp_path, path: str, value):
    doc = json.loads(LAW.read_text())
    node = doc
    *parents, last = path.split(".")
    for p in parents:
        node = node[p]
    node[last] = value
    f = tmp_path / "law.json"
    f.write_text(json.dumps(doc))
    return f


@pytest.mark.parametrize("key, value, rule", [
    ("n_opt.a", math.nan, "must be a finite number in \\(0, 1\\)"),
    ("n_opt.a", -0.5, "in \\(0, 1\\)"),
    ("n_opt.k", -1.0, "> 0"),
    ("n_opt.k", 1e308, "gives N_opt = inf"),
    ("parametric.E", 1e300, "in \\[0, 20\\] nats/token"),
    ("parametric.alpha", 50.0, "in \\(0, 2\\]"),
    ("parametric.B", math.inf, "> 0"),
    ("bootstrap.confidence", 1.5, "in \\(0, 1\\)"),
])
def test_a_law_file_with_impossible_constants_is_refused_naming_the_key(tmp_path, key, value, rule):
    """Read before: plan.py printed a loss of NaN or 1e300, or blamed the budget for an overflow."""
    f = _law(tmp_path, key, value)
    with pytest.raises(LawFileError, match=f"--law {f}: {key.replace('.', '[.]')} = .*{rule}"):
        read_law(f)


def test_the_sweeps_own_laws_pass_the_checks():
    for d in ("results_sweep", "results_sweep_seeds2"):
        assert read_law(ROOT / "bench" / d / "law.json").a > 0


def test_a_yaml_alias_bomb_is_refused_at_once_naming_the_file(tmp_path):
    p = tmp_path / "bomb.yaml"
    p.write_text("a: &a [x, x, x, x, x, x, x, x, x, x]\n" +
                 "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(8)))
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"bomb.yaml: its aliases expand to 1,234,567,909 nodes, more than the "
                                          r"100,000 allowed"):
        typed_yaml.read_yaml(p)
    assert time.perf_counter() - t0 < 2  # it hung the loader for minutes
    with pytest.raises(ConfigError, match="the value of 'x' is refused: its aliases expand"):
        typed_yaml.apply_overrides({}, ["x={a: &a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 10)}]" for i in range(5)) + "}"])


def test_ordinary_aliases_still_load(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("base: &b {x: 1, y: [1, 2]}\none: *b\ntwo: {<<: *b, y: 3}\n")
    assert typed_yaml.read_yaml(p) == {"base": {"x": 1, "y": [1, 2]}, "one": {"x": 1, "y": [1, 2]},
                                       "two": {"x": 1, "y": 3}}


def test_unknown_deepspeed_keys_are_refused_in_debug_mode_too(tiny_config):
    """Debug mode never builds a DeepSpeed config, so a typo there used to pass until the run was launched."""
    with pytest.raises(ConfigError, match=r"parallel.deepspeed.zero_optimisation is not a DeepSpeed 0.19.8 config "
                                          r"key \(did you mean zero_optimization\?\)"):
        load_config(tiny_config(), ["parallel.deepspeed={zero_optimisation: {stage: 1}}"])
    with pytest.raises(ConfigError, match="parallel.deepspeed.train_batch_size is generated from"):
        load_config(tiny_config(), ["parallel.deepspeed={train_batch_size: 64}"])


@pytest.mark.skipif(torch.version.cuda is not None, reason="a CUDA build of PyTorch")
def test_device_cuda_on_a_cpu_build_is_one_line():
    from llm.train.hardware import parse_device
    with pytest.raises(ConfigError,
                       match=r"--device cuda: this PyTorch \(.*\) is built without CUDA; use --device cpu"):
        parse_device("cuda")
    with pytest.raises(ConfigError, match="--device tpu: not a torch device"):
        parse_device("tpu")
    assert parse_device("cpu") == torch.device("cpu")


FULL_DISK_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    import torch
    from llm.config import load_config
    from llm.train.single_process import SingleProcessBackend
    from llm.train.loop import save_checkpoint
    from llm.train.metrics import MetricsLogger
    from typed_yaml.disk import DiskFull
    cfg = load_config(sys.argv[1])
    backend = SingleProcessBackend(cfg, torch.device("cpu"))
    save_checkpoint(backend, cfg, 1, 0)  # fits: the limit is set below, from its size
    size = (Path(cfg.checkpoint.dir) / "step_00000001" / "optimizer.pt").stat().st_size
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill, as a full disk gives ENOSPC
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
    for what, write in (("checkpoint", lambda: save_checkpoint(backend, cfg, 2, 0)),
                        ("metrics",
                         lambda: MetricsLogger(Path(cfg.out_dir) / "m.jsonl").log({"step": 2, "x": "y" * size}))):
        try:
            write()
        except DiskFull as e:
            print(what, e)
""")


def test_a_full_disk_is_one_line_naming_the_path_and_nothing_is_marked_complete(tiny_config):
    cfg = load_config(tiny_config())
    r = subprocess.run([sys.executable, "-c", FULL_DISK_CHILD, str(tiny_config())], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    root = cfg.checkpoint.dir
    assert lines[0].startswith(f"checkpoint {root}/.tmp-step_00000002: file too large (the file-size limit, ulimit "
                               "-f, is ") and "while writing the checkpoint of step 2; nothing was marked complete " \
           f"(latest complete checkpoint: {root}/step_00000001)" in lines[0], lines[0]
    assert lines[1].startswith(f"metrics {cfg.out_dir}/m.jsonl: file too large") and "metrics row of step 2" in lines[1]
    # The half-written step is gone, not published: a resume starts from step 1.
    assert [p.name for p in sorted(Path(root).iterdir())] == ["step_00000001"]
    assert ckpt.resume_point(root) == ckpt.step_dir(root, 1)


def _train_two_checkpoints(tiny_config, keep):
    path = tiny_config(checkpoint={"every": 2, "keep": keep})
    run_debug(load_config(path, ["train.max_steps=4"]), device=torch.device("cpu"))
    return path, load_config(path).checkpoint.dir


def test_resume_falls_back_past_an_unreadable_newest_checkpoint_with_a_warning(tiny_config, capsys):
    path, root = _train_two_checkpoints(tiny_config, keep=2)
    newest = ckpt.step_dir(root, 4)
    name = "model.pt"
    f = newest / name
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    capsys.readouterr()  # the first run's lines
    out = run_debug(load_config(path, ["train.max_steps=6"]), device=torch.device("cpu"))
    lines = capsys.readouterr().out.splitlines()
    warning = next(x for x in lines if x.startswith("warning: checkpoint"))
    assert f"checkpoint {newest} cannot be resumed from: {name}" in warning
    assert f"resuming from {ckpt.step_dir(root, 2)}" in warning
    assert f"resumed from {ckpt.step_dir(root, 2)} at step 2" in lines
    assert out.step == 6 and ckpt.unreadable(newest) is None  # retrained and saved again over the bad one


@pytest.mark.parametrize("name, content, why", [
    ("model.pt", b"PK\x03\x04half", "model.pt is truncated or corrupt"),
    ("trainer_state.json", b"\0garbage", "trainer_state.json is not readable JSON"),
    ("trainer_state.json", b'{"tokens": 0}', "trainer_state.json lacks an integer step"),
    ("rng_rank0.json", b"{", "rng_rank0.json is not readable JSON"),
    ("config.yaml", b"a: [", "config.yaml cannot be read"),
])
def test_an_only_checkpoint_that_is_unreadable_is_refused_naming_the_file_and_the_choices(tmp_path, name, content,
                                                                                            why):
    """The files a resume reads, each damaged in turn, in a checkpoint directory laid out as save_checkpoint does."""
    step = ckpt.step_dir(tmp_path, 4)
    step.mkdir()
    torch.save({"w": torch.zeros(3)}, step / "model.pt")
    torch.save({"optimizer": {}}, step / "optimizer.pt")
    (step / "rng_rank0.json").write_text(json.dumps(ckpt.rng_state()))
    (step / "config.yaml").write_text("model: {n_layers: 2}\n")
    ckpt.write_state(step / ckpt.STATE_FILE, {"step": 4, "tokens": 0})
    assert ckpt.resume_point(tmp_path) == step
    (step / name).write_bytes(content)
    with pytest.raises(ConfigError, match=rf"checkpoint {step} cannot be resumed from: {why}.*no earlier complete "
                                          r"checkpoint is readable: restore it from a copy, delete .* or start a new "
                                          r"run with checkpoint.resume=false"):
        ckpt.resume_point(tmp_path)


def test_temporary_files_of_a_killed_data_preparation_are_removed_on_the_next_run(tmp_path):
    (tmp_path / "work/ingest").mkdir(parents=True)
    stale = [tmp_path / "work/ingest/shard_00000_00000.jsonl.tmp4242", tmp_path / "tokens/data.bin.tmp",
             tmp_path / "work/sigs/b000_k001.npy.tmp17"]
    kept = [tmp_path / "work/ingest/shard_00000_00000.jsonl", tmp_path / "work/.lock-task0",
            tmp_path / "notes.tmpl"]
    for p in stale + kept:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("x")
    assert remove_stale_temps(tmp_path) == 3
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)


def test_a_full_disk_on_one_rank_of_a_deepspeed_run_is_one_line_and_no_traceback(tiny_data, tmp_path):
    """2 ranks, ZeRO-0: rank 0 writes the model and optimizer file and runs out of room (RLIMIT_FSIZE below its size),
    rank 1 writes only its RNG file. Before, rank 0 deleted the half-written step while rank 1 was still writing
    into it: rank 1 died with a "parent directory does not exist" traceback. Now the ranks agree on the failure
    first (llm/train/loop.py save_checkpoint): one line, exit 2, nothing published."""
    import resource
    import signal
    from tests.parallel.launcher_utils import PRETRAIN, free_port, launch_env, launcher_config_dict, write_config
    out = tmp_path / "run"
    cfg = write_config(tmp_path / "c.yaml", launcher_config_dict(tiny_data, out, checkpoint={"every": 2, "keep": 1},
                                                                 parallel={"zero_stage": 0}))

    def limit():  # the model states with Adam's moments are ~2.6 MB here; every other file is under 100 KB
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (400_000, 400_000))
    r = subprocess.run(["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()), str(PRETRAIN), "--config",
                        str(cfg)], cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=600,
                       preexec_fn=limit)
    text = r.stdout + r.stderr
    assert r.returncode == 2 and "Traceback" not in text, text[-4000:]
    ours = [line for line in text.splitlines() if "while writing the checkpoint of step 2" in line]
    assert len(ours) == 1 and ours[0].startswith("error: ") and "file too large" in ours[0], text[-4000:]
    assert "nothing was marked complete (latest complete checkpoint: none)" in ours[0]
    assert not list((out / "checkpoints").iterdir())  # the half-written step deleted, nothing published


ALIGN_FULL_DISK_CHILD = textwrap.dedent("""
    import resource, signal, sys
    from pathlib import Path
    from llm.align import handoff
    from llm.align.resume import StageResume
    from llm.train.runtime import SingleProcess
    from llm.train.runtime import Trainer
    from llm.config import ModelConfig
    from llm.config.training import OptimConfig
    from llm.model import Transformer
    from typed_yaml.disk import DiskFull
    out, tokenizer = Path(sys.argv[1]), sys.argv[2]
    model = Transformer(ModelConfig(n_layers=2, d_model=64, n_heads=4, n_kv_heads=2, d_ff=128, vocab_size=512,
                                    seq_len=64), seed=1)
    runtime = SingleProcess()
    trainer = Trainer(runtime.prepare(model, OptimConfig(), 0), OptimConfig(), 10)
    resume = StageResume(out / "resume" / "sft", every=1, total=10, runtime=runtime)
    resume.progress.log = None  # its progress lines to the file only: stdout holds the two lines the test reads
    resume.maybe_save(1, {"policy": trainer}, {}, {}, [])  # fits: the limit is set below, from its size
    size = (out / "resume" / "sft" / "step_00000001" / "policy.pt").stat().st_size
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size // 2, size // 2))
    for what, write in (("in-stage", lambda: resume.maybe_save(2, {"policy": trainer}, {}, {}, [])),
                        ("stage", lambda: handoff.save_stage(out / "sft", "sft", model, tokenizer))):
        try:
            write()
        except DiskFull as e:
            print(what, e)
""")


def test_a_full_disk_in_an_alignment_stage_is_one_line_and_nothing_is_published(tiny_data, tmp_path):
    """Before, both writes ended in torch's 'enforce fail' traceback and left their half-written folders behind."""
    r = subprocess.run([sys.executable, "-c", ALIGN_FULL_DISK_CHILD, str(tmp_path), tiny_data["tokenizer"]], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2, r.stdout
    root = tmp_path / "resume" / "sft"
    assert lines[0].startswith(f"in-stage {root}/.tmp-step_00000002: file too large") and \
        f"nothing was marked complete (latest complete checkpoint: {root}/step_00000001)" in lines[0], lines[0]
    assert [p.name for p in root.iterdir()] == ["step_00000001"]
    assert lines[1].startswith(f"stage {tmp_path}/.tmp-sft") and f"the sft stage directory {tmp_path}/sft" in lines[1]
    assert "nothing was published" in lines[1] and not (tmp_path / "sft").exists()
    assert not (tmp_path / ".tmp-sft").exists()
