"""The pictures of a run and of an alignment chain: loss and eval loss against tokens (log-log: the power law of the
scaling papers is a straight line there), the learning rate, throughput and MFU against step, from each
RUN_DIR/metrics.jsonl; every stage's scores from a chain's chain_report.json (written by llm/align/chain.py).
launch/plot.py draws them from the command line. A mistake in the runs or files named is a UserError (one line, exit 2).
"""
from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # after choosing the backend
from matplotlib.backend_bases import FigureCanvasBase
from matplotlib.ticker import FuncFormatter, NullFormatter

from typed_yaml.files import read_json
from llm.train.metrics import read_rows, valid_utilisation
from typed_yaml import ConfigError
from typed_yaml.errors import UserError as BaseUserError

RUN_FIGSIZE, CHAIN_FIGSIZE, DPI = (12, 8), (15, 8), 100  # inches, and pixels per inch: 1200×800 and 1500×800


class UserError(BaseUserError):
    """A mistake in the arguments or the files they name; printed as one line, exit 2 (launch/cli.py)."""

    label = "plot.py: error"  # as argparse's own refusals read


def read_metrics(run_dir: Path) -> list[dict]:
    """The rows of RUN_DIR/metrics.jsonl; raises UserError if there are none or one is not JSON."""
    path = run_dir / "metrics.jsonl"
    if not run_dir.is_dir():
        raise UserError(f"{run_dir} is not a directory")
    if path.is_dir():
        raise UserError(f"{path} is a directory, not a metrics file")
    if not path.is_file():
        raise UserError(f"{path} does not exist: is {run_dir} the out_dir of a run?")
    try:
        rows = read_rows(path, strict=True)
    except ConfigError as e:
        raise UserError(str(e)) from None
    if not any("step" in r for r in rows):
        raise UserError(f"{path} has no metrics rows yet")
    return rows


def _series(rows: list[dict], x: str, y: str) -> tuple[list, list]:
    points = [(r[x], r[y]) for r in rows if x in r and isinstance(r.get(y), (int, float))]
    return [p[0] for p in points], [p[1] for p in points]


def _labels(run_dirs: list[Path]) -> list[str]:
    """Each run's folder name, or its whole path where two runs share a name."""
    names = [d.resolve().name for d in run_dirs]
    return [n if names.count(n) == 1 else str(d) for n, d in zip(names, run_dirs)]


def plot_runs(run_dirs: list[Path]):
    runs = [(label, read_metrics(d)) for label, d in zip(_labels(run_dirs), run_dirs)]
    fig, axes = plt.subplots(2, 2, figsize=RUN_FIGSIZE, dpi=DPI, layout="constrained")
    (loss_ax, lr_ax), (tps_ax, mfu_ax) = axes
    mfu_na = []  # runs with MFU above 100%: a peak measured too low (llm/train/metrics.py), not plotted
    for i, (label, rows) in enumerate(runs):
        color = f"C{i % 10}"
        loss_ax.plot(*_series(rows, "tokens", "loss"), color=color, lw=1, alpha=0.7, label=f"{label} train")
        loss_ax.plot(*_series(rows, "tokens", "eval_loss"), "o-", color=color, ms=4, label=f"{label} eval")
        lr_ax.plot(*_series(rows, "step", "lr"), color=color, label=label)
        tps_ax.plot(*_series(rows, "step", "tokens_per_s"), color=color, lw=1, label=label)
        steps, mfu = _series(rows, "step", "mfu")
        shown = [(x, 100 * m) for x, m in zip(steps, mfu) if valid_utilisation(m) is not None]
        if shown:
            mfu_ax.plot(*zip(*shown), color=color, lw=1, label=label)
        if len(shown) < len(mfu):
            mfu_na.append(f"{label}: n/a at {len(mfu) - len(shown)} of {len(mfu)} steps")
    loss_ax.set(title="Loss", xlabel="tokens seen", ylabel="cross-entropy (nats/token)", xscale="log",
                yscale="log")
    lr_ax.set(title="Learning rate", xlabel="optimizer step", ylabel="learning rate")
    tps_ax.set(title="Throughput", xlabel="optimizer step", ylabel="tokens/s (all ranks)")
    mfu_ax.set(title="Model FLOPs utilisation (PaLM App. B)", xlabel="optimizer step", ylabel="MFU (%)")
    plain = FuncFormatter(lambda v, _: f"{v:g}")  # 5.5, not 5.5×10⁰: a loss axis spans less than a decade
    loss_ax.yaxis.set_major_formatter(plain)
    loss_ax.yaxis.set_minor_formatter(plain)
    loss_ax.xaxis.set_minor_formatter(NullFormatter())  # 2×10⁵, 3×10⁵, 4×10⁵ ... would overlap
    tps_ax.set_ylim(bottom=0)
    mfu_ax.set_ylim(bottom=0)
    if mfu_na:
        mfu_ax.text(0.5, 0.5, "MFU above 100% of the measured peak (peak timed too low):\n" + "\n".join(mfu_na),
                    ha="center", va="center", transform=mfu_ax.transAxes, fontsize="small")
    for ax in axes.flat:
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
    fig.suptitle(", ".join(label for label, _ in runs))
    return fig


def read_chain(out_dir: Path) -> dict:
    path = out_dir / "chain_report.json"
    if not path.exists():
        raise UserError(f"{path} does not exist: run launch/chain.py with out_dir={out_dir} first")
    try:
        report = read_json(path, what="chain report")
    except ConfigError as e:
        raise UserError(str(e)) from None
    if not isinstance(report.get("stages"), dict) or not report["stages"]:
        raise UserError(f"{path} has no stages")
    bad = [name for name, metrics in report["stages"].items() if not isinstance(metrics, dict)]
    if bad:
        raise UserError(f"{path}: stage {bad[0]!r} is not an object of metrics")
    return report


# The chain figure's panels: title, y label, and per bar (stage, metric key, bar label). Keys are those the
# stages record (llm/align/{base_stage,sft,reward_training,ppo,dpo,grpo_rloo}.py, names in llm/align/config.py
# STAGES); a bar whose stage or key is absent is left out. "rl" is grpo_rloo's old name (RENAMED_STAGES there), kept so
# that reports written before the rename still plot.
TUNED = ("ppo", "dpo", "grpo_rloo", "rl")  # the stages that tune the SFT policy further
SAMPLED = ("ppo", "grpo_rloo", "rl")  # ...by sampling answers and scoring them (the RM's score, where an RM rewards
# them)
CHAIN_PANELS = [
    ("Checker accuracy (held-out prompts)", "fraction correct",
     [(s, "checker_accuracy", s) for s in ("base", "sft", *TUNED)]),
    ("Reward model", "fraction",
     [("rm", "pairwise_accuracy", "pairwise acc."), ("rm", "pairwise_accuracy_demo_pairs", "demo pairs"),
      ("rm", "pairwise_accuracy_policy_pairs", "policy pairs")]
     + [(s, "rm_checker_agreement", f"RM=checker\n({s})") for s in SAMPLED]),
    ("KL to the reference", "KL (nats/sequence)", [(s, "kl", s) for s in TUNED]),
    ("RM score of the sampled policies' answers", "reward (RM units)",
     [(s, k, f"{s} {label}") for s in SAMPLED
      for k, label in (("rm_reward_correct", "correct"), ("rm_reward_wrong", "wrong"), ("rm_reward", "all"))]),
    ("Losses", "cross-entropy (nats/token)",
     [("base", "pretrain_eval_loss", "base eval"), ("sft", "train_loss", "sft train"),
      ("sft", "eval_loss", "sft eval")]),
    ("Wall time", "seconds", [(s, "wall_s", s) for s in ("base", "sft", "rm", *TUNED)]),
]
UNIT_INTERVAL = {"Checker accuracy (held-out prompts)", "Reward model"}


def plot_chain(out_dir: Path):
    stages = read_chain(out_dir)["stages"]
    fig, axes = plt.subplots(2, 3, figsize=CHAIN_FIGSIZE, dpi=DPI, layout="constrained")
    for ax, (title, ylabel, bars) in zip(axes.flat, CHAIN_PANELS):
        present = [(label, stages[s][k]) for s, k, label in bars
                   if isinstance(stages.get(s, {}).get(k), (int, float))]
        ax.set(title=title, ylabel=ylabel)
        if not present:
            ax.text(0.5, 0.5, "not in this report", ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([]), ax.set_yticks([])
            continue
        labels, values = zip(*present)
        bars_drawn = ax.bar(labels, values, color=[f"C{i}" for i in range(len(values))])
        ax.bar_label(bars_drawn, fmt="%.3g", padding=2)
        ax.axhline(0, color="black", lw=0.8)
        if title in UNIT_INTERVAL:
            ax.set_ylim(0, 1.1)
        if title == "Reward model":
            ax.axhline(0.5, color="gray", ls="--", lw=1, label="chance")
            ax.legend(fontsize="small", loc="lower right")
        ax.margins(y=0.15)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"Alignment chain: {out_dir}")
    return fig


def check_out(out: Path) -> None:
    """Refuse an --out that cannot be written before any plotting work is done."""
    if out.is_dir():
        raise UserError(f"--out {out} is a directory")
    if out.suffix.lower().lstrip(".") not in FigureCanvasBase.get_supported_filetypes():
        raise UserError(f"--out {out}: unknown image type {out.suffix!r}; use .png (or .pdf, .svg)")
    parent = out.parent
    if not parent.is_dir():
        raise UserError(f"--out {out}: {parent} is not an existing folder")
    if not os.access(parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"--out {out} is not writable")
