"""DIR/report.md of a sweep: what was run and what was found, in words and numbers (llm/sweep/fit.py writes it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from llm.scaling.laws import BESIROGLU_2024, HOFFMANN_2022_APPROACH2
from llm.shape import SHAPE_RULES, SMALL


def _ci(iv, fmt="{:.3f}") -> str:
    return "(no interval)" if not iv else f"[{fmt.format(iv[0])}, {fmt.format(iv[1])}]"


def _span(values) -> str:
    lo, hi = min(values), max(values)
    return f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"


def _seed_noise(grid: dict, done: dict, seeds: int) -> str:
    """The report's sentence on the seeds: which, and how much the final loss varies between them at one size."""
    first = min(p.get("seed", 0) for p in grid["points"])
    by_size: dict[str, list[float]] = {}
    for p in grid["points"]:
        if p["name"] in done:
            by_size.setdefault(p.get("size", p["name"]), []).append(done[p["name"]]["loss"])
    spread = {size: float(np.std(losses, ddof=1)) for size, losses in by_size.items() if len(losses) > 1}
    text = (f"Seeds: every size was trained {seeds} times (train.seed {first}–{first + seeds - 1}: initialisation, "
            "sample order, and so which held-out samples fill the evaluated batches when they are fewer than the "
            "split); the fits take every run, and the bootstrap resamples runs.")
    if not spread:
        return text + " No size has two finished seeds yet."
    worst = max(spread, key=spread.get)
    return text + (f" Seed noise, the standard deviation of the final loss across seeds: median "
                   f"{np.median(list(spread.values())):.4f} nats/token over {len(spread)} sizes, largest "
                   f"{spread[worst]:.4f} at {worst}.")


def _family_line(grid: dict) -> list[str]:
    """The report's first lines for one family of a sweep with --family (llm/sweep/families.py); [] without."""
    family = next((p.get("family") for p in grid["points"] if p.get("family")), None)
    if family is None:
        return []
    moe = next((p["shape"].get("moe") for p in grid["points"]), None)
    what = (f"model.moe {moe}; N below is all parameters, the fit's N the active ones (C = 6ND with this model's "
            "FLOPs per token)" if moe else "dense")
    return [f"Family `{family}` ({what}); the families compared: DIR/compare.md.", ""]


def write_report(path: Path, grid: dict, law: dict) -> None:
    """Write the report of sweep `grid` (DIR/sweep.json) and its fitted `law` (DIR/law.json) to `path`."""
    data = grid.get("data") or {}
    train_tokens = data.get("train_tokens")
    boot = law.get("bootstrap", {})
    pct = f"{boot.get('confidence', 0.9):.0%}"
    done = {p["name"]: p for p in law["points"]}
    rules = SHAPE_RULES[grid.get("args", {}).get("shapes", "standard")]
    shapes = rules.name.upper()
    small = (f"; {rules.head_dim}-wide heads and width steps, aspect ratios {'-'.join(map(str, rules.aspect_band))} "
             f"preferred and {'-'.join(map(str, rules.fallback_band))} allowed, for CPU-scale models"
             if rules is SMALL else "")
    valid = data.get("valid_samples")
    seq_len = grid["points"][0]["shape"]["seq_len"] if grid["points"] else 0
    evals = [p["eval_samples"] for p in grid["points"] if p.get("eval_samples")]
    lines = [
        "# IsoFLOP sweep report", "",
        *_family_line(grid),
        f"Budgets (C = 6ND FLOPs): {', '.join(f'{c:.3g}' for c in grid['budgets'])}; "
        f"{len(grid['points'])} points planned, {len(done)} finished. Grid centred on the N_opt of "
        f"`{grid['law']}`, sizes spread ±{grid['spread_dex']} dex in log10 N (llm/scaling/grid.py); shapes from the "
        f"shape designer's {shapes} rules (llm/shape.py, one device{small}); N counts all parameters, "
        "embeddings included (Chinchilla's convention); D = C / 6N from each shape's exact N.",
        "Each run: batch and peak LR from DeepSeek LLM 2024 (arXiv:2401.02954) at C, as plan.py; warmup 1% of the "
        "steps, cosine decayed to 10% exactly at the run's last token (Chinchilla §3.1); the loss is the final eval "
        "loss on the held-out split" + (f" ({valid:,} samples of {seq_len} tokens; each point evaluates "
        f"{_span(evals)} of them, whole global batches, the same samples for every point of a budget"
        + (" and seed)." if grid.get("args", {}).get("seeds", 1) > 1 else ").")
                                        if valid and evals else "."),
        f"Data: {', '.join(data.get('paths') or ['?'])} (tokenizer {data.get('tokenizer')}), "
        + (f"{train_tokens:,} training tokens." if train_tokens else "training tokens unknown."), "",
    ]
    seeds = grid.get("args", {}).get("seeds", 1)
    if seeds > 1:
        lines += [_seed_noise(grid, done, seeds), ""]
    if grid["notes"]:
        lines += ["How the grid departs from the plain rule:", ""] + [f"- {n}" for n in grid["notes"]] + [""]
    lines += ["## Runs", "",
              "| point | C | N | shape (layers × d_model) | D = C/6N | tokens trained | steps | batch | peak LR | "
              "epochs | eval loss | wall s |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in grid["points"]:
        r = done.get(p["name"])
        epochs = f"{p['tokens_trained'] / train_tokens:.3f}" if train_tokens else "?"
        s = p["shape"]
        lines.append(f"| {p['name']} | {p['flops']:.3g} | {p['n_params']:,} | {s['n_layers']} × {s['d_model']} | "
                     f"{p['n_tokens']:,} | {p['tokens_trained']:,} | {p['total_steps']} | {p['global_batch_size']} | "
                     f"{p['lr']:.3g} | {epochs} | {r['loss']:.4f} | "
                     + (f"{r['wall_s']:.0f} |" if r and r.get("wall_s") else "– |") if r else
                     f"{p['tokens_trained']:,} | {p['total_steps']} | | | {epochs} | not run | – |")
    if "fit_error" in law:
        lines += ["## No law fitted", "", law['fit_error'].split(' (')[0] + ":", ""]
        lines += [f"- C={e['flops']:.3g}: {e['reason']}" for e in law["excluded_budgets"]]
        bad = {e["flops"] for e in law["excluded_budgets"]}
        lines += [f"- C={c:.3g}: its parabola has a minimum inside the sizes run, but a power law needs a second such "
                  "budget" for c in sorted({p["flops"] for p in law["points"]} - bad)]
        lines += ["", "A budget whose best run is its smallest size has its optimum below the sizes sampled; when that "
                  "size is already the smallest shape the designer builds (see the notes above), only a larger budget "
                  "moves the optimum into range: under Besiroglu et al. 2024, N_opt grows as C^0.51.", ""]
        path.write_text("\n".join(lines))
        return
    over = max((p["tokens_trained"] / p["n_tokens"] - 1 for p in grid["points"]), default=0.0)
    emb = [1 - p["n_params_non_embedding"] / p["n_params"] for p in grid["points"]]
    palm = [p["flops_palm"] / p["flops"] for p in grid["points"]]
    emb_lo, emb_hi, palm_lo, palm_hi = min(emb), max(emb), min(palm), max(palm)
    depths = [p["shape"]["n_layers"] for p in grid["points"]]
    lines += ["", f"Runs train whole steps, so up to {over:.1%} past C / 6N; the parabolas use the nominal D "
              "(one C per budget), the parametric fit the tokens trained.", "",
              "## Per-budget parabolas (loss = c0 + c1·x + c2·x², x = log10 N)", "",
              f"| C | runs | c2 (curvature) | N_opt | {pct} interval | D_opt | tokens/param | min loss | rms resid | "
              "vertex inside sizes |", "|---|---|---|---|---|---|---|---|---|---|"]
    for b in law["budgets"]:
        lines.append(f"| {b['flops']:.3g} | {b['n_points']} | {b['parabola']['c2']:.4f} | {b['n_opt']:.4g} | "
                     f"{_ci(b['n_opt_interval'], '{:.3g}')} | {b['d_opt']:.4g} | {b['d_opt'] / b['n_opt']:.2f} | "
                     f"{b['loss_opt']:.4f} | {b['rms_residual']:.4f} | {'yes' if b['vertex_inside'] else 'NO'} |")
    for e in law["excluded_budgets"]:
        lines.append(f"| {e['flops']:.3g} | excluded: {e['reason']} | | | | | | | | |")
    a, b = law["n_opt"], law["d_opt"]
    outside = [x for x in law["budgets"] if not x["vertex_inside"]]
    lines += ["", "## Power laws", "",
              f"N_opt ∝ C^a with a = {a['a']:.3f}, {pct} bootstrap interval {_ci(a['a_interval'])}; "
              f"D_opt ∝ C^b with b = {b['b']:.3f} {_ci(b['b_interval'])} (b = 1 − a under C = 6ND). "
              f"Bootstrap: {boot['resamples']} resamples (seed {boot['seed']}) of the runs within each budget, "
              f"{boot['failed']} discarded for a non-convex parabola. For comparison: Chinchilla Approach 2 "
              f"a = {HOFFMANN_2022_APPROACH2.a:.2f} (Hoffmann et al. 2022, Table 2), Besiroglu et al. 2024 "
              f"a = {BESIROGLU_2024.a:.3f} (arXiv:2404.10102).", ""]
    if len(law["budgets"]) == 2:
        lines += ["Two budgets determine a line exactly: the exponent has no residual to judge it by, and its interval "
                  "comes only from the resampled parabolas.", ""]
    if outside:
        lines += [f"{len(outside)} budget(s) have their vertex outside the sizes sampled "
                  f"({', '.join(format(x['flops'], '.3g') for x in outside)}): that N_opt is an extrapolation of the "
                  "parabola; sample sizes on both sides of it before trusting it.", ""]
    par = law["parametric"]
    lines += ["## Parametric fit L(N, D) = E + A/N^α + B/D^β (Chinchilla App. D.2)", ""]
    if "skipped" in par:
        lines += [f"Not fitted: {par['skipped']}.", ""]
    else:
        lines += [f"E = {par['E']:.4g}, A = {par['A']:.4g}, B = {par['B']:.4g}, α = {par['alpha']:.4g}, "
                  f"β = {par['beta']:.4g} (so a = β/(α+β) = {par['a']:.3f}); Huber objective {par['objective']:.4g}, "
                  f"rms log residual {par['rms_residual']:.4f}, max {par['max_abs_residual']:.4f}, "
                  f"{'converged' if par['converged'] else 'NOT converged'}. Per-run residuals (log L̂ − log L):", "",
                  "| point | N | D | loss | predicted | residual |", "|---|---|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['n_params']:,} | {r['n_tokens']:,.0f} | {r['loss']:.4f} | "
                  f"{r['predicted']:.4f} | {r['log_residual']:+.4f} |" for r in par["residuals"]]
        lines += [""]
    max_epochs = max((p["tokens_trained"] / train_tokens for p in grid["points"]), default=0) if train_tokens else None
    lines += ["## Caveats", "",
              (f"Repetition: the most-trained point sees {max_epochs:.3f} epochs of the training split"
               + (" (no token repeated). " if max_epochs <= 1 else ". ") if max_epochs
               else "Repetition: the epochs per point are unknown. ")
              + "Muennighoff et al. 2023 (arXiv:2305.16264) find up to about 4 epochs of repeated data nearly as "
              "good as unique data, and the value of further repetition decaying towards zero beyond. Within a "
              "budget the smallest models train on the most tokens, so they repeat "
              "the most: past a few epochs their losses are higher than fresh data would give, which moves each "
              "parabola's minimum towards larger N and, as the repetition grows with C, steepens a (and flattens b). "
              "Fits of points beyond ~4 epochs describe this corpus' data-constrained regime, not the "
              "unlimited-data law of Chinchilla.",
              "Extrapolation: the law is fitted on "
              f"{min(grid['budgets']):.3g}–{max(grid['budgets']):.3g} FLOPs; plan.py --law says how far a plan "
              "extrapolates.",
              f"FLOP count: embeddings are {emb_lo:.0%}–{emb_hi:.0%} of N across the points; 6ND counts them as "
              "compute, though the input embedding is a lookup, and leaves attention out. PaLM App. B's count "
              f"(attention in, input embedding out; flops_palm in sweep.json) is {palm_lo:.2f}–{palm_hi:.2f}× 6ND "
              "here, so points of one budget differ in real compute by that much.",
              f"Shapes and noise: one shape per size and {'one seed' if seeds == 1 else f'{seeds} seeds'} per size; "
              "neighbouring sizes can differ in depth "
              f"({min(depths)}–{max(depths)} layers here) and width, which scatters the losses about each parabola "
              "on top of seed noise (the rms residuals above hold both; sweep.py --seeds measures the seed part); the "
              "bootstrap intervals include that scatter.", ""]
    path.write_text("\n".join(lines))
