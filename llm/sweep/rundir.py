"""The sweep directory's state: where each point lives, and its done.json, the marker that it has finished.

    DIR/sweep.json                 the arguments, the grid and one entry per run (points.py)
    DIR/points.txt                 one run name a line: task i of the SLURM job array runs line i + 1
    DIR/points/NAME/config.yaml    the point's pretraining config
    DIR/points/NAME/run/           its run directory (metrics.jsonl, checkpoints)
    DIR/points/NAME/train.log      its trainer's output (local runs)
    DIR/points/NAME/done.json      its final eval loss, written atomically after its run ends
    DIR/families/FAMILY/           with --family: each family's law.json, report.md and isoflop.png (fit.py)
    DIR/compare.json, compare.md, compare.png   with --family: the families compared (compare.py)
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

from llm.config import ConfigError
from typed_yaml.files import atomic_write_text, read_json
from llm.sweep import RunFailed, UserError
from llm.train.metrics import final_eval_loss

POLL_S = 2.0
"""Seconds between two looks at a running point's metrics.jsonl, or at the SLURM queue."""


def point_dir(out: Path, name: str) -> Path:
    return out / "points" / name


def marker(out: Path, name: str) -> Path:
    return point_dir(out, name) / "done.json"


def metrics_file(out: Path, name: str) -> Path:
    """The metrics.jsonl of point `name`'s run (llm/train/metrics.py writes and reads it)."""
    return point_dir(out, name) / "run" / "metrics.jsonl"


def run_finished(out: Path, point: dict) -> bool:
    """Whether the point's run logged its final eval loss (it may have been killed before its marker)."""
    return final_eval_loss(metrics_file(out, point["name"]), point["total_steps"]) is not None


def collect_point(out: Path, point: dict, wall_s: float | None = None) -> dict:
    """Write the point's done.json from its finished run. Raises RunFailed if the run has no final eval loss."""
    metrics = metrics_file(out, point["name"])
    loss = final_eval_loss(metrics, point["total_steps"])
    if loss is None or not math.isfinite(loss):
        raise RunFailed(f"point {point['name']}: no final eval loss at step {point['total_steps']} in "
                        f"{metrics} (see {point_dir(out, point['name']) / 'train.log'})")
    done = {"name": point["name"], "seed": point.get("seed"), "flops": point["flops"], "n_params": point["n_params"],
            "n_params_active": point.get("n_params_active", point["n_params"]), "family": point.get("family"),
            "n_tokens": point["n_tokens"], "tokens_trained": point["tokens_trained"],
            "total_steps": point["total_steps"], "loss": loss, "wall_s": wall_s,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    # A marker is either absent or complete, whenever the sweep is killed.
    atomic_write_text(marker(out, point["name"]), json.dumps(done) + "\n")
    return done


def finished(out: Path, doc: dict) -> dict[str, dict]:
    """{run name: its done.json} of the runs of sweep record `doc` that have finished."""
    done = {}
    for p in doc["points"]:
        m = marker(out, p["name"])
        if m.exists():
            done[p["name"]] = read_done(m)
    return done


def read_done(m: Path) -> dict:
    """A point's done.json, checked: a damaged one is named (delete it and the point runs again), never fitted."""
    again = "delete it and rerun the sweep to train the point again"
    try:
        rec = read_json(m, what="sweep point record")
    except ConfigError as e:
        raise UserError(f"{e}; {again}") from None
    loss = rec.get("loss")
    if isinstance(loss, bool) or not isinstance(loss, (int, float)) or not math.isfinite(loss) or loss <= 0:
        raise UserError(f"{m}: 'loss' is {loss!r}, not a positive finite number; {again}")
    for key in ("flops", "n_params", "n_tokens"):
        v = rec.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise UserError(f"{m}: {key!r} is {v!r}, not a positive number; {again}")
    return rec
