"""launch/plan.py end to end, as a subprocess: table, --json, --write-config, one-line errors."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from llm.config import load_config
from llm.scaling.plan import plan
from llm.scaling.plan_output import config_dict
from llm.scaling.laws import compute_optimal
from llm.shape import count_params

ROOT = Path(__file__).resolve().parents[2]


def run(*args):
    return subprocess.run([sys.executable, str(ROOT / "launch" / "plan.py"), *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_table():
    out = run("--flops", "1e19")
    assert out.returncode == 0, out.stderr
    assert "tokens per parameter" in out.stdout and "n_layers=" in out.stdout


@pytest.mark.parametrize("approach", ["1", "2", "3", "besiroglu"])
def test_json(approach):
    out = run("--flops", "1e20", "--approach", approach, "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    for key in ("n_params", "n_tokens", "flops", "predicted_loss", "tokens_per_param", "model"):
        assert key in spec
    assert spec["flops"] == 1e20
    # D is re-derived from the exact N of the shape, so the budget holds to within one token.
    assert 6 * spec["n_params"] * spec["n_tokens"] == pytest.approx(1e20, rel=1e-9)
    assert spec["tokens_per_param"] == pytest.approx(spec["n_tokens"] / spec["n_params"])
    from llm.config import ModelConfig
    assert count_params(ModelConfig(**spec["model"])) == spec["n_params"]
    n_law, _ = compute_optimal(1e20, approach)
    assert abs(spec["n_params"] / n_law - 1) < 0.15  # the shape lands near the law's N
    assert 1.8 < spec["predicted_loss"] < 3.5


def test_gpu_hours():
    out = run("--gpu-hours", "1000", "--gpu", "h100", "--mfu", "0.4", "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    # The hours buy FLOPs counted as MFU is (PaLM App. B, attention included); the 6ND budget the law takes is
    # correspondingly smaller, so the 1,000 hours asked are the hours the plan needs (not 1,088).
    assert spec["flops_palm"] == pytest.approx(1000 * 3600 * 989.4e12 * 0.4, rel=1e-6)
    assert spec["flops"] < 0.95 * spec["flops_palm"]
    assert spec["accelerator_hours"] == pytest.approx(1000)


def test_write_config(tmp_path):
    path = tmp_path / "sub" / "plan.yaml"
    out = run("--flops", "3e19", "--write-config", str(path))
    assert out.returncode == 0, out.stderr
    text = path.read_text()
    assert text.startswith("#") and "DeepSeek" in text and "Chinchilla" in text
    cfg = load_config(path)
    spec = plan(3e19)
    assert cfg.train.tokens == spec.n_tokens
    assert cfg.optim.min_lr_ratio == 0.1
    assert cfg.data.paths == ["runs/data/python_docs/data"]
    assert cfg.data.tokenizer == "runs/data/python_docs/tokenizer.model"  # what prepare_data.py writes beside it
    assert cfg.model.d_model == spec.model.d_model and count_params(cfg.model) == spec.n_params
    # The cosine runs over the planned tokens: steps × tokens per step covers D by less than one batch.
    assert 0 <= cfg.total_steps * cfg.tokens_per_step - spec.n_tokens < cfg.tokens_per_step
    assert 0 < cfg.optim.warmup_steps <= 0.02 * cfg.total_steps + 1
    assert cfg.precision.dtype == "bf16"


def test_config_dict_validates():
    raw = config_dict(plan(1e18, vocab_size=4096, seq_len=512, tp_degrees=(1,)), data_paths=["a", "b"], out_dir="x")
    assert raw["data"]["paths"] == ["a", "b"] and raw["out_dir"] == "x"


@pytest.mark.parametrize("args,message", [
    ((), "one of the arguments --flops --gpu-hours is required"),
    (("--flops", "-1"), "must be positive"),
    (("--flops", "abc"), "invalid float"),
    (("--flops", "1e12"), "smallest shape"),
    (("--gpu-hours", "10", "--gpu", "b9000"), "unknown accelerator"),
    (("--flops", "1e19", "--approach", "kaplan"), "invalid choice"),
    (("--flops", "1e19", "--mfu", "2"), "mfu"),
    (("--flops", "1e19", "--tp-degrees", "1,x"), "comma-separated"),
])
def test_errors_are_one_line(args, message):
    out = run(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


BAD_INPUTS = [
    (("--flops", "-1e19"), "argument --flops: must be positive"),
    (("--flops", "-inf"), "argument --flops: must be positive"),
    (("--flops", "inf"), "argument --flops: must be positive and finite, got inf"),
    (("--flops", "nan"), "argument --flops: must be positive and finite, got nan"),
    (("--flops", "1e60"), "the largest budget supported under besiroglu2024 is C="),
    (("--gpu-hours", "0"), "argument --gpu-hours: must be positive"),
    (("--gpu-hours", "-5"), "argument --gpu-hours: must be positive"),
    (("--flops", "1e19", "--mfu", "0"), "argument --mfu: must be in (0, 1], got 0"),
    (("--flops", "1e19", "--mfu", "1.5"), "argument --mfu: must be in (0, 1], got 1.5"),
    (("--flops", "1e19", "--gpu", "b9000"), "unknown accelerator 'b9000'"),
    (("--flops", "1e19", "--approach", "7"), "argument --approach: invalid choice: '7'"),
    (("--flops", "1e19", "--vocab-size", "0"), "argument --vocab-size: must be a positive integer"),
    (("--flops", "1e19", "--seq-len", "-3"), "argument --seq-len: must be a positive integer"),
    (("--flops", "1e19", "--tp-degrees", "7,11,13"), "no d_model up to 32768"),
]


@pytest.mark.parametrize("args,message", BAD_INPUTS)
def test_bad_inputs_get_one_line_and_exit_2(args, message):
    out = run(*args)
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.strip().splitlines()
    # argparse's own refusals keep its "plan.py: error:"; the rest are UserErrors (launch/cli.py, typed_yaml/errors.py)
    assert len(lines) == 1 and lines[0].startswith(("plan.py: error: ", "config error: ")) and message in lines[0]
    assert "Traceback" not in out.stderr


def test_write_config_onto_a_directory_or_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("")
    for target, message in ((tmp_path, "is a directory"), (tmp_path / "afile" / "plan.yaml", "is a file")):
        out = run("--flops", "1e19", "--write-config", str(target))
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in out.stderr


def test_largest_budget_named_is_one_that_plans():
    import re
    out = run("--flops", "1e60")
    c_max = float(re.search(r"is C=(\S+) FLOPs", out.stderr).group(1))
    assert plan(c_max * 0.99).n_params > 1e13
    assert run("--flops", f"{c_max * 1.5:.3g}").returncode == 2


def test_header_states_the_tp_degrees_used(tmp_path):
    path = tmp_path / "plan.yaml"
    out = run("--flops", "1e18", "--vocab-size", "4096", "--seq-len", "512", "--tp-degrees", "1,3",
              "--write-config", str(path))
    assert out.returncode == 0, out.stderr
    header = "".join(line for line in path.read_text().splitlines(keepends=True) if line.startswith("#"))
    assert "each TP degree in (1, 3)" in header and "64*lcm(1, 3) = 192" in header
    assert "1/2/4/8" not in header
    cfg = load_config(path)
    assert cfg.model.vocab_size % 192 == 0 and f"vocab_size padded to {cfg.model.vocab_size}" in header
    assert cfg.model.n_heads % 3 == 0 and cfg.model.d_ff % 3 == 0


def test_cluster_json_has_the_predictions():
    out = run("--flops", "1e21", "--gpus", "16", "--gpu", "a100", "--price-per-gpu-hour", "2", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    for key in ("layout", "memory_per_gpu", "step_time_s", "tokens_per_s", "mfu", "wall_clock_h", "gpu_hours", "cost"):
        assert key in got
    lay, mem = got["layout"], got["memory_per_gpu"]
    assert lay["tp"] * lay["pp"] * lay.get("context", 1) * lay["dp"] == 16
    assert {"params", "grads", "optimizer", "buckets", "activations", "logits_and_loss", "allowance"} <= set(mem)
    assert mem["total"] <= 80e9
    assert (got["gpu_hours"] == pytest.approx(got["wall_clock_h"] * 16)
            and got["cost"] == pytest.approx(2 * got["gpu_hours"]))
    assert got["tokens_per_s"] == pytest.approx(got["global_batch_size"] * got["model"]["seq_len"] / got["step_time_s"])
    assert 0 < got["mfu"] <= got["mfu_assumed"] * (1 + 1e-9)  # communication and bubble only add time


def test_cluster_explain_and_write_config(tmp_path):
    path = tmp_path / "plan.yaml"
    out = run("--flops", "3e21", "--gpus", "8", "--gpu", "a100-40gb", "--explain", "--write-config", str(path))
    assert out.returncode == 0, out.stderr
    assert "chosen" in out.stdout and "rejected: needs" in out.stdout and "ZeRO stage 0 or 1 only" in out.stdout
    text = path.read_text()
    assert "Predicted memory per GPU" in text and "Layout chosen by launch/plan.py for 8 x a100-40gb" in text
    cfg = load_config(path)
    got = json.loads(run("--flops", "3e21", "--gpus", "8", "--gpu", "a100-40gb", "--json").stdout)
    assert cfg.parallel.tensor == got["layout"]["tp"] and cfg.parallel.pipeline == got["layout"]["pp"]
    assert cfg.parallel.zero_stage == got["layout"]["zero_stage"]
    assert cfg.train.micro_batch_size == got["layout"]["micro_batch_size"] == got["micro_batch_size"]
    # The table's batch line shows the chosen layout's micro-batch, not the one-device default.
    assert f"micro {got['layout']['micro_batch_size']}\n" in out.stdout
    assert cfg.parallel.activation_checkpointing == got["layout"]["activation_checkpointing"]


def test_fixed_config_gets_a_layout():
    out = run("--config", "configs/debug.yaml", "--gpus", "4", "--gpu", "h100", "--json")
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout)
    lay = got["layout"]
    assert lay["tp"] * lay["pp"] * lay.get("context", 1) * lay["dp"] == 4 and "n_params" not in got
    assert run("--config", "configs/debug.yaml").returncode == 2


def test_a_config_with_a_renamed_key_plans_with_one_warning_line(tmp_path):
    import yaml
    raw = yaml.safe_load((ROOT / "configs" / "debug.yaml").read_text())
    raw.setdefault("parallel", {})["checkpoint_every_k"] = 2
    path = tmp_path / "old.yaml"
    path.write_text(yaml.safe_dump(raw))
    out = run("--config", str(path), "--gpus", "4", "--gpu", "h100", "--json")
    assert out.returncode == 0, out.stderr
    json.loads(out.stdout)  # stdout stays the JSON alone
    (line,) = [ln for ln in out.stderr.splitlines() if "checkpoint_every_k" in ln]
    assert line.startswith(f"warning: {path}: parallel.checkpoint_every_k was renamed parallel.recompute_every_k")


def test_nothing_fits_is_one_line():
    out = run("--flops", "1e24", "--gpus", "1", "--gpu", "a100-40gb")
    assert (out.returncode == 2 and "no layout of 1 GPUs fits" in out.stderr
            and len(out.stderr.strip().splitlines()) == 1)


def test_law_from_a_sweep(tmp_path):
    """--law plans with a sweep's own law.json (llm/scaling/law.py) and says which law it used, with its interval."""
    from llm.scaling.law import write_law
    from llm.scaling.law_fit import fit_law
    from llm.scaling.laws import BESIROGLU_2024
    rng = np.random.default_rng(0)
    runs = []
    for c in (1e18, 1e19, 1e20):
        n_opt, _ = BESIROGLU_2024.optimal(c)
        for t in (-0.5, -0.25, 0.0, 0.25, 0.5):
            n = n_opt * 10 ** t
            runs.append({"flops": c, "n_params": n, "n_tokens": c / (6 * n),
                         "loss": BESIROGLU_2024.loss(n, c / (6 * n)) * (1 + 1e-3 * rng.standard_normal())})
    write_law(tmp_path / "law.json", fit_law(runs, resamples=200, parametric=False))
    out = run("--law", str(tmp_path / "law.json"), "--flops", "1e21", "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    law = json.loads((tmp_path / "law.json").read_text())["n_opt"]
    assert spec["law"].startswith("sweep:") and spec["n_params_target"] == pytest.approx(law["k"] * 1e21 ** law["a"])
    assert spec["n_params_target"] == pytest.approx(BESIROGLU_2024.optimal(1e21)[0], rel=0.2)  # the law it came from
    assert "bootstrap" in spec["law_note"] and "extrapolated 10x" in spec["law_note"]
    hours = run("--law", str(tmp_path / "law.json"), "--gpu-hours", "100", "--gpu", "h100", "--mfu", "0.4")
    assert hours.returncode == 0 and "law interval" in hours.stdout, hours.stderr
    assert spec["shape_rules"] == "standard"  # the law file names no shape rules: the standard ones
    law_doc = json.loads((tmp_path / "law.json").read_text())
    write_law(tmp_path / "small.json", {**law_doc, "sweep": {"shapes": "small"}})
    small = json.loads(run("--law", str(tmp_path / "small.json"), "--flops", "1e21", "--json").stdout)
    assert small["shape_rules"] == "small" and small["model"]["head_dim"] == 32  # the sweep's rules by default
    chosen = json.loads(run("--law", str(tmp_path / "small.json"), "--flops", "1e21", "--shapes", "standard",
                            "--json").stdout)
    assert chosen["shape_rules"] == "standard" and chosen["model"] == spec["model"]


def test_small_shapes_and_the_floor_error_names_what_sets_it():
    out = run("--flops", "1e14", "--vocab-size", "512", "--seq-len", "128", "--tp-degrees", "1", "--shapes", "small")
    assert out.returncode == 0, out.stderr
    assert "head_dim=32" in out.stdout and "(small shape rules)" in out.stdout
    floor = run("--flops", "1e14", "--vocab-size", "512", "--seq-len", "128")  # heads split 8 ways: d_model >= 512
    assert floor.returncode == 2 and "tp_degrees=(1, 2, 4, 8) need d_model >= 512" in floor.stderr
    assert "fewer TP degrees, the small shape rules or a smaller vocabulary" in floor.stderr
    fixed = run("--config", "configs/debug.yaml", "--gpus", "2", "--shapes", "small")
    assert fixed.returncode == 2 and "--config fixes the shape" in fixed.stderr


def test_a_loss_at_or_above_ln_v_is_called_meaningless():
    """Issue 22: 3e13 FLOPs on small shapes predicted 12.56 nats/token, above ln 4096 = 8.32, without a word."""
    from llm.scaling.plan_output import format_table
    from llm.shape import SHAPE_RULES
    spec = plan(3e13, vocab_size=4096, seq_len=256, tp_degrees=(1,), shapes=SHAPE_RULES["small"])
    assert spec.predicted_loss >= np.log(spec.model.vocab_size)
    assert spec.loss_warning.startswith("meaningless: at or above ln V = 8.32")
    assert "N = " in spec.loss_warning and "outside the fitted 70M-16B" in spec.loss_warning
    assert "WARNING" in format_table(spec)
    # Below ln V but with D under Chinchilla's 5B tokens: flagged as an extrapolation; inside both ranges: silent.
    small = plan(1e18)
    assert small.predicted_loss < np.log(small.model.vocab_size)
    assert small.loss_warning.startswith("extrapolated: D = ") and "5B-500B" in small.loss_warning
    assert plan(1e21).loss_warning is None and "WARNING" not in format_table(plan(1e21))


def test_a_sweep_law_is_flagged_outside_its_budgets():
    from llm.scaling.law import SweepLaw
    from llm.scaling.plan import loss_warning
    law = SweepLaw("sweep", 0.5, 0.1, flops_range=(1e15, 1e17))
    assert loss_warning(3.0, 1e6, 1e8, 1e16, 4096, law) is None  # N, D far below Chinchilla's: the sweep's range rules
    assert loss_warning(3.0, 1e6, 1e8, 1e19, 4096, law) == \
        "extrapolated: C = 1e+19 is outside the sweep's budgets [1e+15, 1e+17]"


def test_time_and_cost_for_a_device_not_in_the_table():
    out = run("--flops", "1e19", "--gpu", "l40s", "--peak-tflops", "362", "--mfu", "0.35", "--price-per-gpu-hour", "2",
              "--json")
    assert out.returncode == 0, out.stderr
    spec = json.loads(out.stdout)
    assert spec["peak_flops"] == 362e12 and spec["accelerator"] == "l40s"
    assert spec["train_seconds"] == pytest.approx(spec["flops_palm"] / (362e12 * 0.35))
    assert spec["accelerator_hours"] == pytest.approx(spec["train_seconds"] / 3600)
    assert spec["cost"] == pytest.approx(2 * spec["accelerator_hours"])
    unknown = run("--flops", "1e19", "--gpu", "l40s")
    assert unknown.returncode == 2 and "--peak-tflops X --mfu Y, or --gpu cpu" in unknown.stderr
    no_mfu = run("--flops", "1e19", "--gpu", "l40s", "--peak-tflops", "362")
    assert no_mfu.returncode == 2 and "pass --mfu" in no_mfu.stderr


@pytest.mark.parametrize("seconds,text", [(0.06, "0.06 s"), (42, "42 s"), (90, "1.5 min"), (7200, "2 h"),
                                          (36 * 3600, "36 h"), (3 * 86400, "3 days"), (5000 * 86400, "5,000 days")])
def test_time_is_shown_at_its_scale(seconds, text):
    from llm.scaling.plan_output import format_seconds
    assert format_seconds(seconds) == text


def plan_main(capsys, *args):
    from launch import plan as plan_cli
    from launch import cli
    code = cli.call(plan_cli.main, list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cpu_time_uses_its_measured_and_cached_peak(tmp_path, monkeypatch, capsys):
    """--gpu cpu times this machine's fp32 matmuls once; the plan's time is its PaLM FLOPs at --mfu of that peak."""
    monkeypatch.setenv("LLM_FORGE_CACHE", str(tmp_path))
    args = ("--flops", "3e13", "--vocab-size", "4096", "--seq-len", "256", "--tp-degrees", "1", "--shapes", "small",
            "--gpu", "cpu", "--mfu", "0.3", "--json")
    code, out, err = plan_main(capsys, *args)
    assert code == 0, err
    spec = json.loads(out)
    (entry,) = json.loads((tmp_path / "cpu_peak.json").read_text()).values()
    assert spec["peak_flops"] == entry["flops"] > 0 and spec["accelerator"].startswith("cpu (")
    assert spec["train_seconds"] == pytest.approx(spec["flops_palm"] / (entry["flops"] * 0.3))
    assert spec["loss_warning"].startswith("meaningless")
    code, out, _ = plan_main(capsys, *args[:-1])
    assert code == 0 and "  WARNING" in out and " on one cpu (" in out
    gpus = plan_main(capsys, *args, "--gpus", "2")
    assert gpus[0] == 2 and "not --peak-tflops or cpu" in gpus[2]


def test_written_config_trains_evaluates_and_exports_as_it_is(tiny_data, tmp_path, monkeypatch, capsys):
    """Issue 22: a --write-config config had no data.tokenizer, so its checkpoints could not be exported."""
    import torch

    from llm.train.debug import run_debug
    monkeypatch.setenv("LLM_FORGE_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "plan.yaml"
    code, _, err = plan_main(capsys, "--flops", "3e12", "--vocab-size", "512", "--seq-len", "64", "--tp-degrees", "1",
                             "--shapes", "small", "--gpu", "cpu", "--mfu", "0.3", "--data-path", tiny_data["prefix"],
                             "--out-dir", str(tmp_path / "run"), "--write-config", str(path))
    assert code == 0, err
    cfg = load_config(path)
    assert cfg.data.tokenizer == str(Path(tiny_data["tokenizer"])) and Path(cfg.data.tokenizer).is_file()
    assert cfg.precision.dtype == "fp32"  # what a CPU trains in
    # Two steps of one micro-batch: the run as written, shortened.
    small = [f"train.global_batch_size={cfg.train.micro_batch_size}", "train.eval_batches=1", "optim.warmup_steps=1"]
    cfg = load_config(path, small + [f"train.tokens={2 * cfg.train.micro_batch_size * cfg.model.seq_len}"])
    outcome = run_debug(cfg, device=torch.device("cpu"))
    assert outcome.status == "finished" and outcome.step == 2 and np.isfinite(outcome.eval_loss)
    from llm.hf.export import export_hf
    hf = export_hf(outcome.checkpoint, tmp_path / "hf")
    assert (Path(hf) / "config.json").is_file() and any(Path(hf).glob("tokenizer*"))


def test_write_config_needs_a_tokenizer_that_fits(tiny_data, tmp_path, capsys):
    lone = tmp_path / "lone"
    lone.mkdir()
    code, _, err = plan_main(capsys, "--flops", "1e19", "--data-path", str(lone / "data"), "--write-config",
                             str(tmp_path / "a.yaml"))
    assert code == 2 and err.count("\n") == 1 and "pass --tokenizer PATH" in err
    code, _, err = plan_main(capsys, "--flops", "3e12", "--vocab-size", "256", "--seq-len", "64", "--tp-degrees", "1",
                             "--shapes", "small", "--tokenizer", tiny_data["tokenizer"], "--write-config",
                             str(tmp_path / "b.yaml"))
    assert code == 2 and "has 512 tokens, more than --vocab-size 256" in err
    assert not (tmp_path / "a.yaml").exists() and not (tmp_path / "b.yaml").exists()


def test_d_beyond_four_passes_over_the_data_is_warned(tiny_data):
    """--data-path is read for its size: a budget whose D needs many passes over it says so (Muennighoff et al.)."""
    base = ["--gpu", "cpu", "--mfu", "0.3", "--seq-len", "256", "--vocab-size", "512", "--shapes", "small",
            "--tp-degrees", "1", "--data-path", tiny_data["prefix"], "--json"]
    big = json.loads(run("--flops", "1e15", *base).stdout)
    assert big["data_tokens"] == tiny_data["tokens"]
    passes = big["n_tokens"] / tiny_data["tokens"]
    assert passes > 16 and f"D is {passes:.1f} passes over the data's {tiny_data['tokens']:,} tokens" \
        in big["data_warning"] and "past ~16 epochs" in big["data_warning"]
    small = json.loads(run("--flops", "3e12", *base).stdout)
    assert small["n_tokens"] < 4 * tiny_data["tokens"] and small["data_warning"] is None
    table = run("--flops", "1e15", *base[:-1]).stdout
    assert "passes over it" in table and "WARNING             D is" in table
    missing = json.loads(run("--flops", "1e15", *base[:-3], "--data-path", "/nonexistent/data", "--json").stdout)
    assert missing["data_tokens"] is None and "is not prepared yet" in missing["data_warning"]


def test_longest_seq_per_layout(tmp_path):
    """--longest-seq: per layout (tp, pp, context, dp, ZeRO, recompute) the longest seq_len that fits; the table and
    the JSON agree, and every length is one its layout accepts."""
    out = run("--config", "configs/debug.yaml", "--gpus", "8", "--gpu", "h100", "--gpu-memory", "40", "--longest-seq")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "longest seq_len per layout on 8 x h100 (40 GB per GPU; micro-batch 1):"
    assert lines[1].split() == ["tp", "pp", "cp", "dp", "zero", "recompute", "seq_len", "GB/GPU", "activations", "loss"]
    got = json.loads(run("--config", "configs/debug.yaml", "--gpus", "8", "--gpu", "h100", "--gpu-memory", "40",
                         "--longest-seq", "--json").stdout)
    rows = got["longest_seq"]
    assert rows[0]["seq_len"] == int(lines[2].split()[6].replace(",", "").lstrip(">="))
    for r in rows:
        lay = r["layout"]
        assert lay["tp"] * lay["pp"] * lay.get("context", 1) * lay["dp"] == 8
        assert r["seq_len"] % math.lcm(128, lay.get("context", 1)) == 0 and r["memory_per_gpu"]["total"] <= 40e9
    assert {r["layout"].get("context", 1) for r in rows} == {1, 2, 4}  # debug.yaml: 4 key/value heads
    # The document mask (seq x seq per row) shortens every layout's reach; --context limits the degrees.
    masked = json.loads(run("--config", "configs/debug.yaml", "--gpus", "8", "--gpu", "h100", "--gpu-memory", "40",
                            "--longest-seq", "--document-mask", "--context", "4", "--json").stdout)
    assert {r["layout"]["context"] for r in masked["longest_seq"]} == {4} and masked["document_mask"]
    best = max(r["seq_len"] for r in rows if r["layout"].get("context", 1) == 4)
    assert max(r["seq_len"] for r in masked["longest_seq"]) < best


def test_longest_seq_of_a_planned_model_follows_its_table():
    out = run("--flops", "1e21", "--gpus", "16", "--gpu", "h100", "--longest-seq")
    assert out.returncode == 0, out.stderr
    assert out.stdout.index("N_opt from the law") < out.stdout.index("longest seq_len")  # the spec first
    assert "longest seq_len per layout on 16 x h100" in out.stdout


@pytest.mark.parametrize("args,message", [
    (["--context", "3"], "--context 3 does not divide the 8 GPUs (--gpus)"),
    (["--context", "8"], "--context 8: parallel.context=8 does not divide the 4 heads per tensor-parallel rank"),
    (["--context", "8", "--longest-seq"], "--context 8: parallel.context=8 does not divide the 4 heads"),
    (["--document-mask"], "--document-mask counts the attention mask in --longest-seq's search"),
])
def test_context_refusals_are_one_line(args, message):
    out = run("--config", "configs/debug.yaml", "--gpus", "8", "--gpu", "h100", *args)
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_longest_seq_needs_a_cluster():
    out = run("--flops", "1e19", "--longest-seq")
    assert out.returncode == 2 and "give --gpus N" in out.stderr and len(out.stderr.strip().splitlines()) == 1
