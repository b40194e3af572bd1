"""The sweep's points as files: each point's pretraining config (DIR/points/NAME/config.yaml), and the record of the
whole sweep (DIR/sweep.json: its arguments, the grid, one entry per run) that a rerun checks it resumes."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import yaml

from llm.config import ConfigError, config_from_dict, load_config
from typed_yaml.files import atomic_write_text, read_json
from llm.scaling.law import read_law
from llm.scaling.plan_output import config_dict
from llm.scaling.laws import get_law
from llm.shape import SHAPE_RULES
from llm.scaling.grid import SweepGrid, design_grid
from llm.sweep import UserError
from llm.sweep.families import Family, active_params, family_point, parse_families
from llm.sweep.rundir import point_dir
from typed_yaml import runlock

EVAL_TOKENS = 2 ** 20
"""Held-out tokens each point is evaluated on (all of a smaller validation split). Neighbouring sizes of a budget
often differ by a few hundredths of a nat, about the noise of the debug config's two eval batches (4k tokens);
a million tokens puts the noise near a thousandth and costs a fraction of a percent of a point's FLOPs."""


def resolve_data(raw: dict, base: Path) -> dict:
    """The base config's data section with its paths made absolute (from the current directory, as pretrain.py
    reads them), so the point configs work from any directory a SLURM task starts in."""
    data = dict(raw.get("data") or {})
    data["paths"] = [str(Path(p).resolve()) for p in data.get("paths") or []]
    if data.get("tokenizer"):
        data["tokenizer"] = str(Path(data["tokenizer"]).resolve())
    if not data["paths"]:
        raise UserError(f"--config {base}: data.paths is empty; the sweep's runs need a prepared dataset")
    return data


def check_base(base: Path, fit_only: bool) -> None:
    """The cheap checks of base config `base`, before the grid is designed: it loads, and unless `fit_only` (nothing
    trains, the data need not be here any more) its prepared data is there. UserError naming the problem."""
    if not base.is_file():
        raise UserError(f"--config {base}: no such file")
    load_config(base)
    if fit_only:
        return
    for prefix in resolve_data(yaml.safe_load(base.read_text()), base)["paths"]:
        if not (Path(prefix + ".bin").is_file() and Path(prefix + ".idx").is_file()):
            raise UserError(f"--config {base}: data.paths {prefix}.bin/.idx not found; prepare it with "
                            "`python launch/prepare_data.py --input RAW.jsonl --output DIR` and use DIR/data")


def point_config(point, base_raw: dict, base_cfg, run_dir: Path, base: Path, valid_samples: int | None,
                 eval_tokens: int = EVAL_TOKENS, seed: int | None = None) -> dict:
    """The pretraining config of one point: plan.py's config for the point's spec, with the base config's data and
    precision, and `seed` (default the base config's: initialisation and sample order). Evaluation only at the end
    (the fit reads the final eval loss), over the validation split up to eval_tokens (valid_samples; the base
    config's eval_batches if unknown). A checkpoint every quarter of the run, so a killed point resumes rather than
    restarts."""
    spec = point.spec
    raw = config_dict(spec, out_dir=str(run_dir))
    if point.model.moe is not None:  # a family's experts (llm/sweep/families.py); config_dict writes the shape only
        raw["model"]["moe"] = dataclasses.asdict(point.model.moe)
    raw["data"] = resolve_data(base_raw, base)
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


def family_runs(grid: SweepGrid, families: list[Family], seeds: int, first_seed: int,
                law=None) -> list[tuple]:
    """(point, seed, run name, family name) for every run: each family's version of each grid point, `seeds`
    times (`law`: the grid's, see family_point). Without families (a sweep without --family) the runs and names
    are seeded_runs's, family None."""
    if not families:
        return [(p, seed, name, None) for p, seed, name in seeded_runs(grid, seeds, first_seed)]
    runs = []
    for f in families:
        fam_grid = dataclasses.replace(grid, points=[family_point(p, f, law) for p in grid.points])
        runs += [(p, seed, f"{f.name}_{name}", f.name) for p, seed, name in seeded_runs(fam_grid, seeds, first_seed)]
    return runs


def grid_json(grid: SweepGrid, args_record: dict, runs: list[tuple]) -> dict:
    """DIR/sweep.json: the arguments, the grid, and one entry per run (`runs` from seeded_runs, or family_runs
    whose fourth item names the run's family, recorded as "family"; "size" names its grid point, which every seed
    and family of it shares). "n_params_active" is the N of C = 6ND (llm/sweep/families.py): n_params for a dense
    model, the parameters a token uses for a mixture of experts."""
    return {"args": args_record, "law": grid.law, "spread_dex": grid.spread_dex, "budgets": grid.budgets,
            "notes": grid.notes,
            "points": [{"name": name, "size": p.name, "seed": seed, "flops": p.flops,
                        **({"family": fam[0]} if fam and fam[0] else {}),
                        "n_params_target": p.n_params_target, "n_params_active": active_params(p.model),
                        "n_params": p.n_params, "n_params_non_embedding": p.spec.n_params_non_embedding,
                        "n_tokens": p.n_tokens, "flops_palm": p.spec.flops_palm,
                        "global_batch_size": p.spec.global_batch_size, "lr": p.spec.lr,
                        "total_steps": p.spec.total_steps, "warmup_steps": p.spec.warmup_steps,
                        "tokens_trained": p.spec.total_steps * p.spec.global_batch_size * p.model.seq_len,
                        "shape": {k: getattr(p.model, k) for k in ("n_layers", "d_model", "n_heads", "n_kv_heads",
                                                                  "head_dim", "d_ff", "vocab_size", "seq_len")}
                        | ({"moe": dataclasses.asdict(p.model.moe)} if p.model.moe is not None else {})}
                       for p, seed, name, *fam in runs]}


def prepare(args) -> dict:
    """Design the grid and write DIR/sweep.json and every point's config; on a rerun, check DIR holds this sweep.
    `args`: launch/sweep.py's arguments (config, law, budgets, sizes_per_budget, spread, shapes, eval_tokens, seeds,
    family, out). Returns the sweep record."""
    base = Path(args.config)
    if not base.is_file():
        raise UserError(f"--config {base}: no such file")
    families = parse_families(getattr(args, "family", None))
    base_cfg = load_config(base)
    base_raw = yaml.safe_load(base.read_text())
    law = read_law(args.law) if args.law.endswith(".json") or Path(args.law).is_dir() else get_law(args.law)
    grid = design_grid(args.budgets, args.sizes_per_budget, law, base_cfg.model.vocab_size, base_cfg.model.seq_len,
                       spread_dex=args.spread, tie_embeddings=base_cfg.model.tie_embeddings,
                       rules=SHAPE_RULES[args.shapes])
    record = {"budgets": grid.budgets, "sizes_per_budget": args.sizes_per_budget, "spread": args.spread,
              "law": args.law, "config": str(base.resolve()), "shapes": args.shapes, "eval_tokens": args.eval_tokens,
              "seeds": args.seeds}
    if families:  # only then: the record of a sweep made before --family must still equal its rerun's
        record["families"] = [f.to_json() for f in families]
    runs = family_runs(grid, families, args.seeds, base_cfg.train.seed, law)
    doc = grid_json(grid, record, runs)
    out = Path(args.out)
    existing = out / "sweep.json"
    if existing.is_file():
        _check_same_sweep(existing, doc, record)
    elif out.exists() and any(p.name != runlock.LOCK_FILE for p in out.iterdir()):
        raise UserError(f"--out {out} exists and is not a sweep directory (no sweep.json): give a new or empty one")
    out.mkdir(parents=True, exist_ok=True)
    data = resolve_data(base_raw, base)
    valid_samples = _valid_samples(base_cfg, data, grid.points[0]) if grid.points else None
    doc["data"] = {"paths": data["paths"], "tokenizer": data.get("tokenizer"),
                   "valid_fraction": base_cfg.data.valid_fraction, "train_tokens": _train_tokens(base_cfg, data),
                   "valid_samples": valid_samples}
    for (p, seed, name, family), entry in zip(runs, doc["points"]):
        d = point_dir(out, name)
        d.mkdir(parents=True, exist_ok=True)
        raw = point_config(p, base_raw, base_cfg, d / "run", base, valid_samples, args.eval_tokens, seed)
        entry["eval_samples"] = raw["train"]["eval_batches"] * p.spec.global_batch_size
        if family and p.model.moe is not None:
            size = (f"family {family}: model.moe {dataclasses.asdict(p.model.moe)}, N = {p.n_params:,}, "
                    f"N active = {entry['n_params_active']:,}, D = C / 6N_active")
        else:
            size = (f"family {family}, " if family else "") + f"N = {p.n_params:,}, D = C / 6N"
        header = (f"# isoFLOP sweep point {name} (launch/sweep.py): C = {p.flops:.3g} FLOPs (6ND), {size} = "
                  f"{p.n_tokens:,} tokens, seed {seed}.\n"
                  "# Batch and peak LR: DeepSeek LLM 2024 (arXiv:2401.02954) at C, as plan.py; cosine over exactly "
                  "train.tokens to 10% (Chinchilla).\n")
        cfg_path = d / "config.yaml"
        text = header + yaml.safe_dump(raw, sort_keys=False)
        if not cfg_path.is_file() or cfg_path.read_text() != text:
            atomic_write_text(cfg_path, text)
    (out / "points.txt").write_text("".join(f"{name}\n" for _, _, name, _ in runs))  # sweep.sbatch: task i = line i
    atomic_write_text(existing, json.dumps(doc, indent=1) + "\n")
    return doc


def _check_same_sweep(existing: Path, doc: dict, record: dict) -> None:
    """UserError unless sweep record `existing` is a sweep record of the same arguments and runs as `doc`."""
    out = existing.parent
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
