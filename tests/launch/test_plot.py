"""launch/plot.py: the PNGs are written at their size and hold a picture; every user error is one line, exit 2."""
import json
import shutil
import subprocess
import sys

import pytest
import torch
import yaml
from matplotlib.image import imread

from launch import cli
from launch import plot as plot_cli
from llm.config import load_config
from llm.train.debug import run_debug
from tests.conftest import ROOT, tiny_config_dict

PLOT = ROOT / "launch" / "plot.py"

CHAIN_REPORT = {  # the shape llm/align/chain.py writes (values from a seed-0 run of configs/align/default.yaml)
    "stages": {
        "base": {"pretrain_loss": 1.234, "pretrain_eval_loss": 1.242, "checker_accuracy": 0.0, "wall_s": 4.1},
        "sft": {"train_loss": 0.434, "eval_loss": 0.472, "checker_accuracy": 0.473, "wall_s": 9.9},
        "rm": {"pairwise_accuracy": 0.967, "pairwise_accuracy_demo_pairs": 0.975,
               "pairwise_accuracy_policy_pairs": 0.962, "n_eval_pairs": 425, "wall_s": 12.8},
        "ppo": {"last_train_row": {"step": 40, "kl": 1.2}, "checker_accuracy": 0.707, "rm_reward": 0.458,
                "rm_reward_correct": 0.752, "rm_reward_wrong": -0.252, "rm_checker_agreement": 0.816, "kl": 0.964,
                "wall_s": 14.3},
        "dpo": {"checker_accuracy": 0.5, "kl": 3.65, "wall_s": 4.8}},
    "skipped": [], "summary": {}}


def plot(*args):
    return subprocess.run([sys.executable, str(PLOT), *map(str, args)], capture_output=True, text=True, timeout=300)


def assert_picture(path, height, width):
    image = imread(path)
    assert image.shape == (height, width, 4)
    assert image[..., :3].std() > 0.05  # not a blank canvas: curves, bars and text


@pytest.fixture(scope="module")
def two_runs(tiny_data, tmp_path_factory):
    """A tiny debug run, and a copy of it under another name: two runs to overlay."""
    root = tmp_path_factory.mktemp("runs")
    path = root / "run.yaml"
    path.write_text(yaml.safe_dump(tiny_config_dict(tiny_data, root / "a")))
    cfg = load_config(path)
    run_debug(cfg, device=torch.device("cpu"))
    shutil.copytree(root / "a", root / "b")
    return root / "a", root / "b"


def test_runs_overlaid(two_runs, tmp_path):
    out = tmp_path / "curves.png"
    r = plot(*two_runs, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_picture(out, 800, 1200)


def test_chain_report(tmp_path):
    (tmp_path / "chain_report.json").write_text(json.dumps(CHAIN_REPORT))
    out = tmp_path / "chain.png"
    r = plot("--chain", tmp_path, "--out", out)
    assert r.returncode == 0, r.stderr
    assert_picture(out, 800, 1500)


def test_chain_report_of_a_partial_chain(tmp_path):
    """Only base and SFT done: the panels of the missing stages say so instead of failing."""
    report = {"stages": {k: CHAIN_REPORT["stages"][k] for k in ("base", "sft")}, "skipped": [], "summary": {}}
    (tmp_path / "chain_report.json").write_text(json.dumps(report))
    r = plot("--chain", tmp_path, "--out", tmp_path / "chain.png")
    assert r.returncode == 0, r.stderr
    assert_picture(tmp_path / "chain.png", 800, 1500)


def _bad_cases(tmp_path, run_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.jsonl").write_text("")
    (tmp_path / "garbled").mkdir()
    (tmp_path / "garbled" / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n')
    (tmp_path / "no_report").mkdir()
    (tmp_path / "bad_report").mkdir()
    (tmp_path / "bad_report" / "chain_report.json").write_text("{")
    (tmp_path / "no_stages").mkdir()
    (tmp_path / "no_stages" / "chain_report.json").write_text('{"stages": {}}')
    (tmp_path / "a_file").write_text("")
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "metrics.jsonl").write_bytes(b"\xff\xfe\x00" * 20)
    (tmp_path / "numbers").mkdir()
    (tmp_path / "numbers" / "metrics.jsonl").write_text("1\n2\n")
    (tmp_path / "metrics_dir" / "metrics.jsonl").mkdir(parents=True)
    (tmp_path / "stage_a_number").mkdir()
    (tmp_path / "stage_a_number" / "chain_report.json").write_text('{"stages": {"sft": 3}}')
    (tmp_path / "binary_report").mkdir()
    (tmp_path / "binary_report" / "chain_report.json").write_bytes(b"\x80\x81" * 20)
    (tmp_path / "empty.png").mkdir()
    out = tmp_path / "out.png"
    return {
        "missing run dir": ([tmp_path / "nope", "--out", out], "is not a directory"),
        "no metrics.jsonl": ([tmp_path / "no_report", "--out", out], "metrics.jsonl does not exist"),
        "empty metrics.jsonl": ([tmp_path / "empty", "--out", out], "has no metrics rows yet"),
        "garbled metrics.jsonl": ([tmp_path / "garbled", "--out", out], "metrics.jsonl:2: not JSON"),
        "binary metrics.jsonl": ([tmp_path / "binary", "--out", out], "metrics.jsonl: not a metrics file (not UTF-8"),
        "metrics rows not objects": ([tmp_path / "numbers", "--out", out], "metrics.jsonl:1: a metrics row is a JSON"),
        "metrics.jsonl a folder": ([tmp_path / "metrics_dir", "--out", out], "metrics.jsonl is a directory"),
        "a stage that is a number": (["--chain", tmp_path / "stage_a_number", "--out", out],
                                     "stage 'sft' is not an object of metrics"),
        "binary chain report": (["--chain", tmp_path / "binary_report", "--out", out], "chain_report.json: not a chain "
                                                                                        "report (not UTF-8"),
        "one bad run of two": ([run_dir, tmp_path / "empty", "--out", out], "has no metrics rows yet"),
        "no chain report": (["--chain", tmp_path / "no_report", "--out", out], "chain_report.json does not exist"),
        "garbled chain report": (["--chain", tmp_path / "bad_report", "--out", out],
                                 "chain_report.json: not valid JSON"),
        "chain report without stages": (["--chain", tmp_path / "no_stages", "--out", out], "has no stages"),
        "out in a missing folder": ([run_dir, "--out", tmp_path / "nope" / "x.png"], "is not an existing folder"),
        "out under a file": ([run_dir, "--out", tmp_path / "a_file" / "x.png"], "is not an existing folder"),
        "out is a folder": ([run_dir, "--out", tmp_path / "empty.png"], "is a directory"),
        "out of unknown type": ([run_dir, "--out", tmp_path / "x.jpgg"], "unknown image type '.jpgg'"),
        "out unwritable": ([run_dir, "--out", "/proc/plot.png"], "/proc/plot.png"),
        "no run and no chain": (["--out", out], "give one or more RUN_DIRs, or --chain"),
        "runs and chain": ([run_dir, "--chain", tmp_path, "--out", out], "give one or more RUN_DIRs, or --chain"),
        "no --out": ([run_dir], "the following arguments are required: --out"),
    }


def test_every_user_error_is_one_line_and_exit_2(two_runs, tmp_path, capsys):
    """In-process (main(), as the script runs it) to spare a Python start-up per case; an exception other than
    the exit would fail the test, so a traceback cannot hide behind the one line."""
    for name, (args, expected) in _bad_cases(tmp_path, two_runs[0]).items():
        try:
            rc = cli.call(plot_cli.main, [str(a) for a in args])
        except SystemExit as e:  # argparse's own errors
            rc = e.code
        err = capsys.readouterr().err
        assert rc == 2, (name, err)
        assert len(err.strip().splitlines()) == 1, (name, err)
        assert expected in err, (name, err)
    assert not (tmp_path / "out.png").exists()


def test_an_error_from_the_script_is_one_line(tmp_path):
    r = plot(tmp_path / "nope", "--out", tmp_path / "out.png")
    assert (r.returncode == 2
            and r.stderr.strip().splitlines() == [f"plot.py: error: {tmp_path / 'nope'} is not a directory"])


def _bar_labels(fig):
    return {ax.get_title(): [t.get_text() for t in ax.get_xticklabels()] for ax in fig.axes}


@pytest.mark.parametrize("name", ["grpo_rloo", "rl"])  # "rl": its name before the rename, in older reports
def test_chain_plots_the_grpo_rloo_stage(tmp_path, name):
    """Issue 22: --chain left the rl stage (now grpo_rloo, llm/align/grpo_rloo.py) out of every panel."""
    rl = {"checker_accuracy": 0.62, "kl": 0.8, "rm_reward": 0.3, "rm_reward_correct": 0.7, "rm_reward_wrong": -0.2,
          "rm_checker_agreement": 0.79, "wall_s": 11.0}
    report = {**CHAIN_REPORT, "stages": {**CHAIN_REPORT["stages"], name: rl}}
    (tmp_path / "chain_report.json").write_text(json.dumps(report))
    labels = _bar_labels(plot_cli.plot_chain(tmp_path))
    assert labels["Checker accuracy (held-out prompts)"][-1] == name
    assert labels["KL to the reference"] == ["ppo", "dpo", name]
    assert labels["Wall time"][-1] == name
    assert f"RM=checker\n({name})" in labels["Reward model"]
    assert labels["RM score of the sampled policies' answers"] == [
        f"{s} {k}" for s in ("ppo", name) for k in ("correct", "wrong", "all")]


def test_mfu_above_100_percent_is_not_plotted(two_runs, tmp_path):
    """An MFU above 1 (a CPU peak timed too low) is written to metrics.jsonl but drawn as n/a, not as 243%."""
    run = tmp_path / "run"
    shutil.copytree(two_runs[0], run)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "mfu" in r]
    for i, r in enumerate(steps):
        r["mfu"] = 2.43 if i % 2 else 0.5
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fig = plot_cli.plot_runs([run])
    mfu_ax = next(ax for ax in fig.axes if ax.get_title().startswith("Model FLOPs"))
    (line,) = mfu_ax.get_lines()
    assert max(line.get_ydata()) == 50.0 and len(line.get_ydata()) == len(steps) - len(steps) // 2
    (note,) = mfu_ax.texts
    assert "above 100%" in note.get_text() and f"n/a at {len(steps) // 2} of {len(steps)} steps" in note.get_text()


def test_routing_of_an_moe_run(two_runs, tmp_path, capsys):
    """--routing: per-layer expert-share heatmaps over the steps and the balance/entropy curves of an MoE run's
    metrics (rows as llm/train/routing.py writes them); a dense run is refused in one line."""
    run = tmp_path / "moe"
    run.mkdir()
    rows = [{"step": s, "loss": 5.0, "moe_load": [[0.7 - 0.05 * s, 0.1, 0.1, 0.1 + 0.05 * s]] * 3,
             "moe_load_max": 4 * (0.7 - 0.05 * s), "moe_router_entropy": 1.0 + 0.05 * s, "moe_dropped_tokens": 0}
            for s in range(1, 7)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "routing.png"
    assert cli.call(plot_cli.main, [str(run), "--routing", "--out", str(out)]) == 0
    assert imread(out).shape[0] > 400
    assert cli.call(plot_cli.main, [str(two_runs[0]), "--routing", "--out", str(tmp_path / "no.png")]) == 2
    assert "has no moe_load columns" in capsys.readouterr().err
