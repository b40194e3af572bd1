"""The routing of an MoE run as one picture: for each MoE layer, every expert's share of the routed slots over the
steps (a heatmap: a balanced layer is one flat colour at 1/E, a collapsing one a bright band), and below them the
busiest expert's share × E and the router entropy against step, from RUN_DIR/metrics.jsonl's `moe_*` columns
(llm/train/routing.py). launch/plot.py --routing draws it."""
from __future__ import annotations

import math
from pathlib import Path

from llm.train.plots import DPI, UserError, plt, read_metrics


def plot_routing(run_dir: Path):
    rows = [r for r in read_metrics(run_dir) if isinstance(r.get("moe_load"), list)]
    if not rows:
        raise UserError(f"{run_dir / 'metrics.jsonl'} has no moe_load columns: is {run_dir} a mixture-of-experts run "
                        "(model.moe) that has logged a step?")
    steps = [r["step"] for r in rows]
    layers, experts = len(rows[0]["moe_load"]), len(rows[0]["moe_load"][0])
    cols = min(layers, 4)
    grid_rows = math.ceil(layers / cols)
    fig = plt.figure(figsize=(3.2 * cols + 1.5, 2.6 * grid_rows + 3), dpi=DPI, layout="constrained")
    sub = fig.subfigures(2, 1, height_ratios=[2.6 * grid_rows, 3])
    heat_axes = list(sub[0].subplots(grid_rows, cols, squeeze=False).flat)
    top = max(max(max(layer) for layer in r["moe_load"]) for r in rows)
    image = None
    for i, ax in enumerate(heat_axes):
        if i >= layers:
            ax.set_visible(False)
            continue
        share = [[r["moe_load"][i][e] for r in rows] for e in range(experts)]
        image = ax.imshow(share, aspect="auto", origin="lower", cmap="viridis", vmin=0, vmax=top,
                          extent=(steps[0], steps[-1], -0.5, experts - 0.5), interpolation="nearest")
        ax.set(title=f"MoE layer {i}", xlabel="step", ylabel="expert")
    sub[0].colorbar(image, ax=heat_axes[:layers], label=f"share of routed slots (uniform {1 / experts:.3f})")
    balance_ax, entropy_ax = sub[1].subplots(1, 2)
    balance_ax.plot(steps, [r["moe_load_max"] for r in rows], color="C3")
    balance_ax.axhline(1.0, color="grey", ls="--", lw=1, label="balanced")
    balance_ax.axhline(3.0, color="C1", ls=":", lw=1, label="collapse warning")
    balance_ax.set(title="Busiest expert (all layers)", xlabel="step", ylabel="its share × E")
    balance_ax.legend(fontsize="small")
    entropy_ax.plot(steps, [r["moe_router_entropy"] for r in rows], color="C0")
    entropy_ax.axhline(math.log(experts), color="grey", ls="--", lw=1, label=f"uniform (ln {experts})")
    entropy_ax.set(title="Router entropy (mean over layers)", xlabel="step", ylabel="nats")
    entropy_ax.legend(fontsize="small")
    for ax in (balance_ax, entropy_ax):
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"{run_dir.resolve().name}: expert routing")
    return fig
