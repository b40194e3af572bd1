"""Run an isoFLOP sweep, fit your own scaling law, draw it, and write the law plan.py can use.

    python launch/sweep.py --budgets 1e12 3e12 1e13 [--sizes-per-budget 5] [--config BASE.yaml] --out DIR
    python launch/sweep.py --budgets ... --out DIR --slurm [--sbatch-arg=--cpus-per-task=4 ...]
    python launch/plan.py --law DIR/law.json --flops 1e15

The grid (llm/spec/sweep.py): per budget C, sizes spread in log10 N around the current law's N_opt (--law, default
Besiroglu et al. 2024), shapes from the shape designer, D = C / 6N, batch and LR from plan.py's rule. Each point
is one pretraining config, DIR/points/NAME/config.yaml, the base config (--config, default configs/debug.yaml)
supplying data, tokenizer, precision and evaluation. Points run one after the other here (debug mode), or with
--slurm as one job array through launch/slurm/sweep.sbatch, one task per point.

Resumable: a point's DIR/points/NAME/done.json (its final eval loss) is written atomically after its run ends;
rerunning the same command skips finished points, runs the others (a killed run resumes from its checkpoint),
and re-fits. Out: DIR/law.json (llm/spec/law.py), DIR/report.md, DIR/isoflop.png (launch/sweep_plot.py).
Any user error prints one line and exits with status 2; a failed run exits 1 and names its log.

One writer: the sweep locks DIR, and each point's directory while it runs the point (typed_yaml/runlock.py), so a
second sweep (or --fit-only) on a running one is refused, naming it. A point's trainer runs in its own session (a
terminal's Ctrl-C reaches only the sweep, which stops it at a checkpoint) but dies with the sweep: on Linux it is
sent SIGTERM when the sweep dies, even by kill -9, and saves a checkpoint and exits; a rerun waits for a trainer
still doing so before it starts the point again, and the trainer's own lock on its run directory refuses any second
one.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import yaml  # noqa: E402  (after the path fix so `llm` resolves when run as a script)

from llm.config import ConfigError, config_from_dict, load_config  # noqa: E402
from llm.files import read_json  # noqa: E402
from llm.spec.law import LawFileError, LawFitError, fit_law, read_law, write_law  # noqa: E402
from llm.spec.plan import config_dict  # noqa: E402
from llm.spec.scaling import LAWS, get_law  # noqa: E402
from llm.spec.shape import SHAPE_RULES  # noqa: E402
from llm.spec.sweep import DEFAULT_SPREAD_DEX, MIN_SIZES, SweepGrid, design_grid  # noqa: E402
from llm.train.metrics import format_duration  # noqa: E402
from typed_yaml import runlock  # noqa: E402
from launch.plan import _Parser, _positive  # noqa: E402  (one-line errors; numbers such as -1e12 read as values)

ROOT = Path(__file__).resolve().parents[1]
PRETRAIN = ROOT / "launch" / "pretrain.py"
SWEEP_SBATCH = ROOT / "launch" / "slurm" / "sweep.sbatch"
DEFAULT_BASE = ROOT / "configs" / "debug.yaml"
POLL_S = 2.0
EVAL_TOKENS = 2 ** 20
"""Held-out tokens each point is evaluated on (all of a smaller validation split). Neighbouring sizes of a budget
often differ by a few hundredths of a nat, about the noise of the debug config's two eval batches (4k tokens);
a million tokens puts the noise near a thousandth and costs a fraction of a percent of a point's FLOPs."""
ORPHAN_WAIT_S = 300.0
"""How long a rerun waits for a point's trainer left by a killed sweep (sent SIGTERM when the sweep died) to save
its checkpoint and exit, before it gives up and names the process."""
PR_SET_PDEATHSIG = 1  # linux/prctl.h


class UserError(Exception):
    """A mistake in the arguments or in DIR; printed as one line, exit 2."""


class RunFailed(Exception):
    """A point's training run exited non-zero; printed as one line naming its log, exit 1."""


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)  # a marker is either absent or complete, whenever the sweep is killed


# ---------------------------------------------------------------------------------------------------------
# The sweep's files.

def point_dir(out: Path, name: str) -> Path:
    return out / "points" / name


def marker(out: Path, name: str) -> Path:
    return point_dir(out, name) / "done.json"


def _resolve_data(raw: dict, base: Path) -> dict:
    """The base config's data section with its paths made absolute (from the current directory, as pretrain.py
    reads them), so the point configs work from any directory a SLURM task starts in."""
    data = dict(raw.get("data") or {})
    data["paths"] = [str(Path(p).resolve()) for p in data.get("paths") or []]
    if data.get("tokenizer"):
        data["tokenizer"] = str(Path(data["tokenizer"]).resolve())
    if not data["paths"]:
        raise UserError(f"--config {base}: data.paths is empty; the sweep's runs need a prepared dataset")
    return data


def point_config(point, base_raw: dict, base_cfg, run_dir: Path, base: Path, valid_samples: int | None,
                 eval_tokens: int = EVAL_TOKENS, seed: int | None = None) -> dict:
    """The pretraining config of one point: plan.py's config for the point's spec, with the base config's data and
    precision, and `seed` (default the base config's: initialisation and sample order). Evaluation only at the end
    (the fit reads the final eval loss), over the validation split up to eval_tokens (valid_samples; the base
    config's eval_batches if unknown). A checkpoint every quarter of the run, so a killed point resumes rather than
    restarts."""
    spec = point.spec
    raw = config_dict(spec, out_dir=str(run_dir))
    raw["data"] = _resolve_data(base_raw, base)
    raw["precision"] = base_raw.get("precision", "fp32")
    # eval_batches counts global batches (llm/train/loop.py); the floor keeps every evaluated sample distinct.
    if valid_samples:
        samples = min(valid_samples, max(1, eval_tokens // point.model.seq_len))
        eval_batches = max(1, samples // spec.global_batch_size)
    else:
        eval_batches = base_cfg.train.eval_batches
    g = spec.global_batch_size
    micro = max(m for m in range(1, min(g, base_cfg.train.micro_batch_size) + 1) if g % m == 0)
    raw["train"].update(micro_batch_size=micro,
                        seed=base_cfg.train.seed if seed is None else seed, eval_every=0, eval_batches=eval_batches)
    raw["checkpoint"] = {"every": max(1, spec.total_steps // 4), "keep": 1}
    config_from_dict(raw, source=f"sweep point {point.name}")
    return raw


def seeded_runs(grid: SweepGrid, seeds: int, first_seed: int) -> list[tuple]:
    """(grid point, seed, run name) for every run: each point `seeds` times, seeds first_seed, first_seed + 1, ...
    With one seed a run is named after its point, as in sweeps made before --seeds."""
    return [(p, first_seed + i, p.name if seeds == 1 else f"{p.name}_s{first_seed + i}")
            for p in grid.points for i in range(seeds)]


def grid_json(grid: SweepGrid, args_record: dict, runs: list[tuple]) -> dict:
    """DIR/sweep.json: the arguments, the grid, and one entry per run (`runs` from seeded_runs; "size" names its
    grid point, which every seed of it shares)."""
    return {"args": args_record, "law": grid.law, "spread_dex": grid.spread_dex, "budgets": grid.budgets,
            "notes": grid.notes,
            "points": [{"name": name, "size": p.name, "seed": seed, "flops": p.flops,
                        "n_params_target": p.n_params_target,
                        "n_params": p.n_params, "n_params_non_embedding": p.spec.n_params_non_embedding,
                        "n_tokens": p.n_tokens, "flops_palm": p.spec.flops_palm,
                        "global_batch_size": p.spec.global_batch_size, "lr": p.spec.lr,
                        "total_steps": p.spec.total_steps, "warmup_steps": p.spec.warmup_steps,
                        "tokens_trained": p.spec.total_steps * p.spec.global_batch_size * p.model.seq_len,
                        "shape": {k: getattr(p.model, k) for k in ("n_layers", "d_model", "n_heads", "n_kv_heads",
                                                                  "head_dim", "d_ff", "vocab_size", "seq_len")}}
                       for p, seed, name in runs]}


def preflight(args) -> None:
    """The cheap checks, run before the grid is designed (a minute or more for wide budgets): the base config and
    its prepared data, and with --slurm the SLURM commands and the job script. UserError naming the first problem."""
    if args.slurm and not args.fit_only:
        needed = ("sbatch",) if args.no_wait else ("sbatch", "squeue")  # squeue: waiting for the array to finish
        missing = [c for c in needed if shutil.which(c) is None]
        if missing:
            raise UserError(f"--slurm: {' and '.join(missing)} not found (is SLURM installed and on PATH?); without "
                            "--slurm the points run here one after the other")
        if not SWEEP_SBATCH.is_file():
            raise UserError(f"--slurm: the job script {SWEEP_SBATCH} is missing from this checkout")
    base = Path(args.config)
    if not base.is_file():
        raise UserError(f"--config {base}: no such file")
    load_config(base)
    if args.fit_only:
        return  # nothing trains: the data need not be here any more
    for prefix in _resolve_data(yaml.safe_load(base.read_text()), base)["paths"]:
        if not (Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()):
            raise UserError(f"--config {base}: data.paths {prefix}.bin/.idx not found; prepare it with "
                            "`python launch/prepare_data.py --input RAW.jsonl --output DIR` and use DIR/data")


def prepare(args) -> dict:
    """Design the grid and write DIR/sweep.json and every point's config; on a rerun, check DIR holds this sweep."""
    base = Path(args.config)
    if not base.is_file():
        raise UserError(f"--config {base}: no such file")
    base_cfg = load_config(base)
    base_raw = yaml.safe_load(base.read_text())
    law = read_law(args.law) if args.law.endswith(".json") or Path(args.law).is_dir() else get_law(args.law)
    grid = design_grid(args.budgets, args.sizes_per_budget, law, base_cfg.model.vocab_size, base_cfg.model.seq_len,
                       spread_dex=args.spread, tie_embeddings=base_cfg.model.tie_embeddings,
                       rules=SHAPE_RULES[args.shapes])
    record = {"budgets": grid.budgets, "sizes_per_budget": args.sizes_per_budget, "spread": args.spread,
              "law": args.law, "config": str(base.resolve()), "shapes": args.shapes, "eval_tokens": args.eval_tokens,
              "seeds": args.seeds}
    runs = seeded_runs(grid, args.seeds, base_cfg.train.seed)
    doc = grid_json(grid, record, runs)
    out = Path(args.out)
    existing = out / "sweep.json"
    if existing.is_file():
        try:
            old = read_json(existing, what="sweep record")
        except ConfigError as e:
            raise UserError(f"{e}: --out {out} is a damaged sweep directory; give a new --out") from None
        if (not isinstance(old.get("args"), dict) or not isinstance(old.get("points"), list)
                or not all(isinstance(q, dict) and "name" in q for q in old["points"])):
            raise UserError(f"{existing}: not a sweep record (no 'args' and 'points'); give a new --out")
        old["args"].setdefault("shapes", "standard")  # sweeps made before --shapes and --eval-tokens existed
        old["args"].setdefault("eval_tokens", EVAL_TOKENS)
        old["args"].setdefault("seeds", 1)
        if [p["name"] for p in old["points"]] != [p["name"] for p in doc["points"]] or old["args"] != record:
            raise UserError(f"--out {out} holds another sweep (its sweep.json has other budgets, sizes, law or base "
                            "config): rerun with the same arguments to resume it, or give a new --out")
    elif out.exists() and any(p.name != runlock.LOCK_FILE for p in out.iterdir()):
        raise UserError(f"--out {out} exists and is not a sweep directory (no sweep.json): give a new or empty one")
    out.mkdir(parents=True, exist_ok=True)
    data = _resolve_data(base_raw, base)
    valid_samples = _valid_samples(base_cfg, data, grid.points[0]) if grid.points else None
    doc["data"] = {"paths": data["paths"], "tokenizer": data.get("tokenizer"),
                   "valid_fraction": base_cfg.data.valid_fraction, "train_tokens": _train_tokens(base_cfg, data),
                   "valid_samples": valid_samples}
    for (p, seed, name), entry in zip(runs, doc["points"]):
        d = point_dir(out, name)
        d.mkdir(parents=True, exist_ok=True)
        raw = point_config(p, base_raw, base_cfg, d / "run", base, valid_samples, args.eval_tokens, seed)
        entry["eval_samples"] = raw["train"]["eval_batches"] * p.spec.global_batch_size
        header = (f"# isoFLOP sweep point {name} (launch/sweep.py): C = {p.flops:.3g} FLOPs (6ND), "
                  f"N = {p.n_params:,}, D = C / 6N = {p.n_tokens:,} tokens, seed {seed}.\n"
                  "# Batch and peak LR: DeepSeek LLM 2024 (arXiv:2401.02954) at C, as plan.py; cosine over exactly "
                  "train.tokens to 10% (Chinchilla).\n")
        cfg_path = d / "config.yaml"
        text = header + yaml.safe_dump(raw, sort_keys=False)
        if not cfg_path.is_file() or cfg_path.read_text() != text:
            _atomic_write(cfg_path, text)
    (out / "points.txt").write_text("".join(f"{name}\n" for _, _, name in runs))  # sweep.sbatch: task i = line i
    _atomic_write(existing, json.dumps(doc, indent=1) + "\n")
    return doc


def _train_tokens(base_cfg, data: dict) -> int | None:
    """Tokens of the training split (all data.paths), for the epochs each point spends; None if unreadable."""
    try:
        from data_pipeline.indexed import IndexedDataset
        total = sum(IndexedDataset(p).num_tokens() for p in data["paths"])
    except (OSError, ValueError):
        return None
    return int(total * (1 - base_cfg.data.valid_fraction))


def _valid_samples(base_cfg, data: dict, point) -> int | None:
    """Samples of the validation split every point sees (all share data, seq_len and seed); None if unreadable
    (pretrain.py then names the problem in the point's own log)."""
    from llm.train.setup import build_datasets
    raw = point_config(point, {"data": data}, base_cfg, Path("unused"), Path("unused"), None)
    cfg = config_from_dict(raw, source="sweep validation split")
    try:
        return len(build_datasets(cfg)[1])
    except (ConfigError, OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------
# Running and collecting points.

def final_eval_loss(run_dir: Path, total_steps: int) -> float | None:
    """The eval loss logged at the last step of a run's metrics.jsonl (None if the run did not get there)."""
    path = run_dir / "metrics.jsonl"
    loss = None
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step") == total_steps and "eval_loss" in row:
            loss = float(row["eval_loss"])
    return loss


def collect_point(out: Path, point: dict, wall_s: float | None = None) -> dict:
    """Write the point's done.json from its finished run. Raises RunFailed if the run has no final eval loss."""
    run_dir = point_dir(out, point["name"]) / "run"
    loss = final_eval_loss(run_dir, point["total_steps"])
    if loss is None or not math.isfinite(loss):
        raise RunFailed(f"point {point['name']}: no final eval loss at step {point['total_steps']} in "
                        f"{run_dir / 'metrics.jsonl'} (see {point_dir(out, point['name']) / 'train.log'})")
    done = {"name": point["name"], "seed": point.get("seed"), "flops": point["flops"], "n_params": point["n_params"],
            "n_tokens": point["n_tokens"], "tokens_trained": point["tokens_trained"],
            "total_steps": point["total_steps"], "loss": loss, "wall_s": wall_s,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    _atomic_write(marker(out, point["name"]), json.dumps(done) + "\n")
    return done


def finished(out: Path, doc: dict) -> dict[str, dict]:
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


def _last_train_row(metrics: Path) -> dict | None:
    try:
        lines = metrics.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line being written
            continue
        if "loss" in row:
            return row
    return None


def _watch(proc: subprocess.Popen, metrics: Path, total_steps: int, prefix: str, log) -> int:
    """Wait for a point's run and show its progress from its metrics.jsonl: on a terminal one line rewritten in
    place (step, loss, tokens/s, the point's ETA), in a log a line at each quarter of the run. Returns its status."""
    tty, quarter, t0 = sys.stdout.isatty(), 1, time.monotonic()
    shown, first = False, None  # first: (time, step) of the first logged step seen, to time steps without start-up
    while True:
        try:
            rc = proc.wait(timeout=POLL_S)
            break
        except subprocess.TimeoutExpired:
            pass
        row = _last_train_row(metrics)
        if not row or not row.get("step"):
            continue
        step, now = int(row["step"]), time.monotonic()
        first = first or (now, step)
        per_step = (now - first[0]) / (step - first[1]) if step > first[1] else (now - t0) / step
        eta = per_step * max(0, total_steps - step)
        msg = (f"{prefix}: step {step}/{total_steps} loss {row['loss']:.4f} "
               f"{row.get('tokens_per_s', 0) / 1e3:.1f}k tok/s, ETA {format_duration(eta)}")
        if tty:
            print(f"\r{msg}\033[K", end="", flush=True)
            shown = True
        elif step >= quarter * total_steps / 4 and step < total_steps:
            log(msg)
            quarter = int(step * 4 // total_steps) + 1
    if shown:
        print("\r\033[K", end="", flush=True)
    return rc


def wait_for_orphan(run_dir: Path, name: str, wait_s: float = ORPHAN_WAIT_S, log=print) -> None:
    """Wait until no process holds run directory `run_dir`'s lock: a trainer of an earlier sweep that was killed
    (sent SIGTERM when its sweep died, it is saving a checkpoint), or one started by hand. UserError naming it
    after wait_s seconds."""
    lock = run_dir / runlock.LOCK_FILE
    holder = runlock.holder(lock)
    if holder is None:
        return
    log(f"{name}: waiting for {runlock.describe(holder)} to finish writing {run_dir} (a trainer of an earlier "
        "sweep, stopping at a checkpoint?) before running the point again")
    deadline = time.monotonic() + wait_s
    while (holder := runlock.holder(lock)) is not None:
        if time.monotonic() > deadline:
            raise UserError(f"point {name}: {run_dir} is still written by {runlock.describe(holder)} after "
                            f"{wait_s:.0f} s: stop it (kill {holder.get('pid')}) or let it finish, then rerun")
        time.sleep(0.5)


def die_with_parent():
    """A preexec_fn for a point's trainer: on Linux, SIGTERM when the sweep dies however it dies (prctl
    PR_SET_PDEATHSIG, prctl(2); kept across exec), so pretrain.py saves a checkpoint and exits instead of training on
    as an orphan beside the rerun. None elsewhere (there, the trainer's run lock still refuses a second trainer)."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    prctl, parent = ctypes.CDLL(None, use_errno=True).prctl, os.getpid()  # looked up before the fork

    def arm():
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent:  # the sweep died before the line above: nothing would signal us
            os.kill(os.getpid(), signal.SIGTERM)
    return arm


def run_local(out: Path, doc: dict, log=print) -> None:
    """Run every unfinished point in debug mode, one after the other, with a progress line per point: i/N and an
    ETA from the 6ND FLOPs still to run at the rate measured so far (points differ in cost, not in count)."""
    done = finished(out, doc)
    todo = [p for p in doc["points"] if p["name"] not in done]
    total = len(doc["points"])
    if done:
        log(f"sweep: {len(done)}/{total} points already finished (done.json), skipping them")
    flops_left = sum(6.0 * p["n_params"] * p["tokens_trained"] for p in todo)
    flops_run, t_start = 0.0, time.monotonic()
    env = dict(os.environ)
    env.setdefault("DS_ACCELERATOR", "cpu")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    for i, p in enumerate(todo, len(done) + 1):
        d = point_dir(out, p["name"])
        cost = 6.0 * p["n_params"] * p["tokens_trained"]
        flops_left -= cost
        if final_eval_loss(d / "run", p["total_steps"]) is not None:  # killed after its run, before its marker
            result = collect_point(out, p)
            log(f"[{i}/{total}] {p['name']}: run had finished, collected: eval loss {result['loss']:.4f}")
            continue
        point_lock = runlock.lock_dir(d, f"sweep point {d}")  # against a SLURM task's --collect-point
        wait_for_orphan(d / "run", p["name"], log=log)
        log(f"[{i}/{total}] {p['name']}: N={p['n_params']:,} D={p['n_tokens']:,} ({p['total_steps']} steps) ...")
        t0 = time.monotonic()
        with open(d / "train.log", "a") as fh:
            proc = subprocess.Popen([sys.executable, str(PRETRAIN), "--config", str(d / "config.yaml")], stdout=fh,
                                    stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=die_with_parent(),
                                    start_new_session=True)  # a terminal's Ctrl-C reaches only the sweep (below)
            try:
                rc = _watch(proc, d / "run" / "metrics.jsonl", p["total_steps"], f"[{i}/{total}] {p['name']}", log)
            except BaseException:  # Ctrl-C or a kill of the sweep: SIGTERM makes pretrain.py save a checkpoint
                proc.terminate()   # and exit, so the rerun resumes the point instead of restarting it
                proc.wait()
                raise
        if rc != 0:
            raise RunFailed(f"point {p['name']} exited with status {rc}: see {d / 'train.log'}; rerun the same "
                            "command to resume")
        wall = time.monotonic() - t0
        result = collect_point(out, p, wall)
        point_lock.release()
        flops_run += cost
        eta = (time.monotonic() - t_start) / flops_run * flops_left
        log(f"[{i}/{total}] {p['name']}: eval loss {result['loss']:.4f} in {wall:.0f} s; ETA {format_duration(eta)}")


def run_slurm(out: Path, doc: dict, sbatch_args: list[str], wait: bool, log=print) -> None:
    """Submit the unfinished points as one job array (launch/slurm/sweep.sbatch: task i runs line i of
    DIR/points.txt) and, with `wait`, poll until it has left the queue, printing each point as it finishes."""
    done = finished(out, doc)
    names = [p["name"] for p in doc["points"]]
    todo = [i for i, n in enumerate(names) if n not in done]
    if not todo:
        return
    (out / "slurm").mkdir(exist_ok=True)
    argv = ["sbatch", "--parsable", f"--array={','.join(map(str, todo))}",
            f"--output={out / 'slurm' / 'sweep-%A_%a.out'}", *sbatch_args, str(SWEEP_SBATCH), str(out.resolve())]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=ROOT)
    except FileNotFoundError:
        raise UserError("--slurm: sbatch not found (is SLURM installed and on PATH?)") from None
    if proc.returncode != 0:
        raise UserError(f"sbatch failed: {(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    job = proc.stdout.strip().split(";")[0]
    log(f"sweep: submitted job array {job} with {len(todo)} tasks (logs {out / 'slurm'}/sweep-{job}_<task>.out)")
    if not wait:
        log("sweep: --no-wait: rerun the same command after the job to collect and fit")
        return
    seen, t_start, total = set(done), time.monotonic(), len(names)
    while True:
        q = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True, timeout=60)
        now = finished(out, doc)
        for name in names:
            if name in now and name not in seen:
                seen.add(name)
                new = len(seen) - len(done)
                eta = (time.monotonic() - t_start) / new * (total - len(seen))
                log(f"[{len(seen)}/{total}] {name}: eval loss {now[name]['loss']:.4f}; ETA {format_duration(eta)}")
        if q.returncode == 0 and not q.stdout.strip():
            break
        time.sleep(POLL_S)
    missing = [n for n in names if n not in finished(out, doc)]
    if missing:
        raise RunFailed(f"job {job} ended with {len(missing)} point(s) unfinished ({', '.join(missing[:3])}"
                        f"{', ...' if len(missing) > 3 else ''}): see {out / 'slurm'}; rerun to resubmit them")


# ---------------------------------------------------------------------------------------------------------
# Fit and outputs.

def fit_and_write(out: Path, doc: dict, resamples: int, seed: int, log=print) -> dict:
    from launch.sweep_plot import plot_isoflop
    from launch.sweep_report import write_report
    done = finished(out, doc)
    points = [done[p["name"]] for p in doc["points"] if p["name"] in done]
    if not points:
        raise RunFailed(f"no point of {out} has finished yet (no done.json): nothing to fit; run the sweep "
                        "without --fit-only")
    try:
        law = fit_law(points, resamples=resamples, seed=seed)
    except LawFitError as e:
        # The runs are still worth a look: the report and the left panel show them, and say why there is no law.
        # A law.json from an earlier fit no longer describes these runs, so plan.py must not find it.
        (out / "law.json").unlink(missing_ok=True)
        partial = {"budgets": [], "excluded_budgets": e.excluded, "points": points, "fit_error": str(e)}
        plot_isoflop(partial, out / "isoflop.png")
        write_report(out / "report.md", doc, partial)
        raise RunFailed(f"{e}; wrote {out / 'report.md'} and {out / 'isoflop.png'} without a law") from None
    law["sweep"] = {"dir": str(out.resolve()), "law_centred_on": doc["law"], "spread_dex": doc["spread_dex"],
                    "shapes": doc["args"].get("shapes", "standard"), "seeds": doc["args"].get("seeds", 1),
                    "notes": doc["notes"], "data": doc.get("data")}
    write_law(out / "law.json", law)
    plot_isoflop(law, out / "isoflop.png")
    write_report(out / "report.md", doc, law)
    a, b = law["n_opt"], law["d_opt"]
    ci = lambda iv: "" if not iv else f" [{iv[0]:.3f}, {iv[1]:.3f}]"  # noqa: E731
    log(f"sweep: N_opt ∝ C^{a['a']:.3f}{ci(a['a_interval'])}, D_opt ∝ C^{b['b']:.3f}{ci(b['b_interval'])}; "
        f"wrote {out / 'law.json'}, {out / 'report.md'}, {out / 'isoflop.png'}")
    return law


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--budgets", type=_positive, nargs="+", help="FLOP budgets C (6ND), at least two")
    p.add_argument("--sizes-per-budget", type=int, default=5, help=f"model sizes per budget (>= {MIN_SIZES})")
    p.add_argument("--spread", type=float, default=DEFAULT_SPREAD_DEX,
                   help=f"half-width of each budget's grid in log10 N (default {DEFAULT_SPREAD_DEX}: 10x end to end)")
    p.add_argument("--config", default=str(DEFAULT_BASE),
                   help="base run config: data, tokenizer, vocab_size, seq_len, precision (default configs/debug.yaml)")
    p.add_argument("--shapes", choices=sorted(SHAPE_RULES), default="standard",
                   help="shape designer rules: standard, or small (32-wide heads, for CPU-scale models; "
                        "llm/spec/shape.py)")
    p.add_argument("--eval-tokens", type=int, default=EVAL_TOKENS,
                   help=f"held-out tokens each point is evaluated on, at most (default {EVAL_TOKENS:,})")
    p.add_argument("--seeds", type=int, default=1,
                   help="training runs per grid point, seeds from the base config's train.seed up (default 1); "
                        "the fit takes every run")
    p.add_argument("--law", default="besiroglu",
                   help=f"law whose N_opt centres the grid: {', '.join(LAWS)}, or a previous sweep's law.json")
    p.add_argument("--out", required=True, help="sweep directory (rerun with the same one to resume)")
    p.add_argument("--slurm", action="store_true", help="run the points as a SLURM job array (launch/slurm/)")
    p.add_argument("--sbatch-arg", action="append", default=[], metavar="OPT",
                   help="extra sbatch option for --slurm, e.g. --sbatch-arg=--partition=cpu (repeatable)")
    p.add_argument("--no-wait", action="store_true", help="with --slurm: submit and return; rerun to collect")
    p.add_argument("--fit-only", action="store_true",
                   help="run nothing: fit, draw and report the points finished so far")
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--collect-point", metavar="NAME", help=argparse.SUPPRESS)  # sweep.sbatch, after a task's run
    args = p.parse_args(argv)
    out = Path(args.out)
    created = False
    # A kill (SIGTERM: `kill`, a scheduler) stops the sweep the way Ctrl-C does, so the running point is sent
    # SIGTERM too and saves a checkpoint to resume from, instead of training on as an orphan.
    try:
        previous = signal.signal(signal.SIGTERM, _interrupt)
    except ValueError:  # not the main thread (main() called from a harness): SIGTERM keeps its disposition
        previous = None
    try:
        if args.collect_point:
            doc = json.loads((out / "sweep.json").read_text())
            point = next((q for q in doc["points"] if q["name"] == args.collect_point), None)
            if point is None:
                raise UserError(f"--collect-point {args.collect_point}: not a point of {out / 'sweep.json'}")
            runlock.lock_dir(point_dir(out, point["name"]), f"sweep point {point_dir(out, point['name'])}")
            collect_point(out, point)
            return 0
        if not args.budgets:
            raise UserError("--budgets is required: FLOP budgets such as --budgets 1e13 3e13 1e14")
        if args.eval_tokens < 1:
            raise UserError(f"--eval-tokens {args.eval_tokens} must be a positive number of tokens")
        if args.seeds < 1:
            raise UserError(f"--seeds {args.seeds} must be at least 1 run per point")
        if args.bootstrap < 1:
            raise UserError(f"--bootstrap {args.bootstrap} must be a positive number of resamples")
        preflight(args)
        created = not out.exists()  # a refused sweep leaves no directory behind (the lock made it)
        runlock.lock_dir(out, f"--out {out}")  # before the grid's design and any write; held until the end
        doc = prepare(args)
        n_done = len(finished(out, doc))
        print(f"sweep: {len(doc['budgets'])} budgets, {len(doc['points'])} points ({n_done} finished) in {out}; "
              f"grid centred on {doc['law']}")
        for note in doc["notes"]:
            print(f"sweep: note: {note}")
        if args.fit_only:
            pass
        elif args.slurm:
            run_slurm(out, doc, args.sbatch_arg, wait=not args.no_wait)
            if args.no_wait:
                return 0
        else:
            run_local(out, doc)
        fit_and_write(out, doc, args.bootstrap, args.seed)
    except (UserError, ConfigError, LawFileError, ValueError) as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"sweep.py: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("sweep.py: interrupted; finished points are kept (done.json), the running one was stopped at a "
              "checkpoint: rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        runlock.release_all()
        if created and out.is_dir() and not any(out.iterdir()):
            out.rmdir()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
