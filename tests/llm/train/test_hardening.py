"""Never save or resume into a broken state, and catch what a user gets wrong before the first step."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llm.config import ConfigError, load_config
from llm.train import checkpoint as ckpt
from llm.train.backend import Throughput
from llm.train.debug import run_debug
from llm.train.single_process import SingleProcessBackend
from llm.train.loop import SpikeWatch, TrainingDiverged, save_checkpoint, train
from llm.train.metrics import MetricsLogger
from llm.train.setup import build_datasets
from tests.conftest import ROOT

QUIET = dict(device=torch.device("cpu"))


def run(path, *overrides, **kw):
    cfg = load_config(path, list(overrides))
    return cfg, run_debug(cfg, **{**QUIET, **kw})


def test_nonfinite_gradient_stops_at_that_step_and_saves_nothing(tiny_config):
    """A finite loss whose gradients are inf: the step is not applied, the run stops there, no checkpoint."""
    cfg = load_config(tiny_config(), ["checkpoint.every=1"])
    backend = SingleProcessBackend(cfg, torch.device("cpu"))
    before = {k: v.clone() for k, v in backend.model.state_dict().items()}
    backend.model.layers[1].mlp.w_up.weight.register_hook(lambda g: g * math.inf)
    train_set, valid_set = build_datasets(cfg)
    with pytest.raises(TrainingDiverged, match=r"gradient norm became (inf|nan) at step 1; first non-finite: "
                                               r"gradient of layers\.\d+\.\S+; nothing was saved"):
        train(cfg, backend, train_set, valid_set, Throughput(1.0, 1.0, 1.0))
    after = backend.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the non-finite update was applied"
    assert ckpt.latest_checkpoint(cfg.checkpoint.dir) is None


def test_a_checkpoint_with_nonfinite_state_is_never_written(tiny_config):
    cfg = load_config(tiny_config())
    backend = SingleProcessBackend(cfg, torch.device("cpu"))
    with torch.no_grad():
        backend.model.norm.weight[0] = math.nan
    with pytest.raises(TrainingDiverged, match=r"state at step 3 holds non-finite values \(parameter norm.weight\)"):
        save_checkpoint(backend, cfg, 3, 0)
    assert not Path(cfg.checkpoint.dir).exists() or not any(Path(cfg.checkpoint.dir).iterdir())
    with torch.no_grad():
        backend.model.norm.weight[0] = 1.0
    backend.optimizer.state[backend.model.norm.weight] = {"exp_avg": torch.full((4,), math.inf)}
    with pytest.raises(TrainingDiverged, match="optimizer state exp_avg"):
        save_checkpoint(backend, cfg, 3, 0)


@pytest.mark.parametrize("override, key", [
    ("train.global_batch_size=16", "train.global_batch_size: 8 → 16"),
    ("data.valid_fraction=0.2", "data.valid_fraction: 0.05 → 0.2"),
    ("model.seq_len=16", "model.seq_len: 32 → 16"),
    ("train.seed=7", "train.seed: 0 → 7"),
])
def test_resume_refuses_another_run_unless_asked(tiny_config, override, key):
    path = tiny_config()
    run(path, "train.max_steps=2")
    with pytest.raises(ConfigError, match="belongs to another run") as e:
        run(path, "train.max_steps=3", override)
    assert key in str(e.value) and "checkpoint.allow_changes=[" in str(e.value)
    name = override.split("=")[0]
    cfg, out = run(path, "train.max_steps=3", override, f"checkpoint.allow_changes=[{name}]")
    assert out.step == 3


def test_resume_refuses_another_model_shape_whatever_is_allowed(tiny_config):
    path = tiny_config()
    run(path, "train.max_steps=2")
    with pytest.raises(ConfigError, match=r"another shape \(model.d_ff: 128 → 256\)"):
        run(path, "train.max_steps=3", "model.d_ff=256", "checkpoint.allow_changes=[model.d_ff]")


def test_extending_a_run_is_a_resume_not_another_run(tiny_config):
    path = tiny_config()
    run(path, "train.max_steps=2")
    cfg, out = run(path, "train.max_steps=4", "optim.lr=1e-3")
    assert out.step == 4


def test_eval_only_without_weights_refuses(tiny_config):
    with pytest.raises(ConfigError, match="--eval-only has no weights to evaluate"):
        run(tiny_config(), eval_only=True)


def test_a_torn_metrics_line_does_not_block_resume(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1, "loss": 2.0}) + "\n" + json.dumps({"step": 2, "loss": 1.5}) + "\n"
                    + '{"step": 3, "lo')
    MetricsLogger(path, resume_step=2).close()
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_a_metrics_path_that_is_a_folder_is_a_config_error(tmp_path):
    (tmp_path / "metrics.jsonl").mkdir()
    with pytest.raises(ConfigError, match=r"metrics.jsonl is a directory"):
        MetricsLogger(tmp_path / "metrics.jsonl", resume_step=0)


def test_a_corrupt_tokenizer_is_named_by_its_key(tiny_config, tmp_path):
    bad = tmp_path / "tokenizer.model"
    bad.write_bytes(b"\x00not a sentencepiece model")
    with pytest.raises(ConfigError, match=r"^data.tokenizer=.*tokenizer.model cannot be loaded: .*not a SentencePiece "
                                          r"model$"):
        run(tiny_config(), f"data.tokenizer={bad}")


def test_prune_removes_stale_temporary_directories(tmp_path):
    for step in (1, 2, 3):
        d = ckpt.step_dir(tmp_path, step)
        d.mkdir()
        ckpt.write_state(d / ckpt.STATE_FILE, {"step": step})
    stale = ckpt.temp_dir_for(ckpt.step_dir(tmp_path, 4))
    stale.mkdir()
    (stale / "model.pt").write_bytes(b"half")
    ckpt.prune(tmp_path, keep=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_00000002", "step_00000003"]


def test_loss_spike_warns_with_the_step(tiny_config, capsys):
    cfg, out = run(tiny_config(), "train.max_steps=8", "optim.lr=1.0", "train.log_every=1")
    lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in lines if line.startswith("warning: loss spike at step")]
    assert warnings and "lower optim.lr" in warnings[0], lines
    rows = [json.loads(line) for line in (Path(cfg.out_dir) / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("loss_spike") for r in rows)
    assert lines[-1].startswith("warning:") and "loss spike(s) in this run" in lines[-1]


def test_spike_watch_is_quiet_on_a_falling_loss_and_warns_once_per_spike():
    watch = SpikeWatch(vocab_size=512)
    assert [watch.check(s, 6.2 - 0.1 * s) for s in range(1, 30)] == [None] * 29
    assert watch.check(30, 9.0) is not None  # > 2x the recent median (~4)
    assert watch.check(31, 9.5) is None  # the same spike
    assert watch.check(32, 3.0) is None and watch.check(33, 9.0) is not None


def test_output_paths_that_are_files_are_refused_before_the_first_step(tiny_config, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"checkpoint.dir=.*cannot be a directory: .*a_file is a file"):
        run(tiny_config(), f"checkpoint.dir={blocker}/ckpt")
    with pytest.raises(ConfigError, match=r"out_dir=.*a_file is a file"):
        run(tiny_config(), f"out_dir={blocker}")


def test_data_with_ids_past_the_vocabulary_is_refused_without_a_tokenizer(tiny_config):
    with pytest.raises(ConfigError, match=r"holds token id \d+ but model.vocab_size=100"):
        run(tiny_config(), "data.tokenizer=null", "model.vocab_size=100")


def test_a_busy_rendezvous_port_is_named(tiny_config):
    import socket
    from tests.parallel.launcher_utils import launch_env
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        proc = subprocess.run(["deepspeed", "--num_gpus", "2", "--master_port", str(port),
                               str(ROOT / "launch" / "pretrain.py"), "--config", str(tiny_config())],
                              cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=600)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("config error")]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert len(ours) == 1 and f"port {port}" in ours[0] and "--master_port" in ours[0], ours


def test_a_config_error_under_the_launcher_is_printed_once(tiny_config):
    from tests.parallel.launcher_utils import free_port, launch_env
    proc = subprocess.run(["deepspeed", "--num_gpus", "2", "--master_port", str(free_port()),
                           str(ROOT / "launch" / "pretrain.py"), "--config", str(tiny_config()), "optim.lr=0"],
                          cwd=ROOT, env=launch_env(), capture_output=True, text=True, timeout=600)
    ours = [line for line in proc.stderr.splitlines() if line.startswith("config error")]
    assert proc.returncode == 2 and len(ours) == 1 and "optim.lr=0" in ours[0], proc.stderr[-3000:]


def test_rerun_after_kill_resumes_bitwise(tiny_config, tmp_path):
    """kill -9 mid-run (between checkpoints), then the same command: the losses equal an uninterrupted run's."""
    path = tiny_config(model={"dropout": 0.1})
    common = ["train.max_steps=12", "checkpoint.every=4", "train.log_every=1", "train.eval_every=4"]
    run(path, *common, f"out_dir={tmp_path / 'full'}")
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "launch" / "pretrain.py"), "--config", str(path), *common, f"out_dir={out}"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in proc.stdout:
        if line.startswith("step 6/"):
            proc.kill()
            break
    proc.wait()
    assert ckpt.latest_checkpoint(out / "checkpoints").name == "step_00000004"
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]

    def losses(d):
        rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r.get("loss"), r.get("eval_loss")) for r in rows]
    assert losses(out) == losses(tmp_path / "full")


def test_mfu_above_one_is_called_out(tiny_config, capsys):
    """A peak timed while the machine was busy makes MFU exceed 100%: say so once instead of logging nonsense."""
    cfg = load_config(tiny_config(), ["train.max_steps=3"])
    backend = SingleProcessBackend(cfg, torch.device("cpu"))
    train(cfg, backend, *build_datasets(cfg), Throughput(1e9, 1e9, 1.0))
    lines = capsys.readouterr().out.splitlines()
    warnings = [line for line in lines if "is above 100%" in line]
    assert len(warnings) == 1 and "read this run's MFU as relative" in warnings[0], lines
