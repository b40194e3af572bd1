"""isoflop.png of a sweep's law.json: the two figures of PaLM 2's scaling study (arXiv:2305.10403, Figs. 4 and 5).

Left: final loss against N per budget, log N axis, each budget's runs, its fitted parabola in log10 N and the
parabola's minimum (a star; hollow when the vertex lies outside the sizes sampled). Right: N_opt and D_opt
against C, log-log, the sweep's vertices with their bootstrap intervals, the fitted power laws, and the
Chinchilla Approach 2 (Hoffmann et al. 2022, Table 2) and Besiroglu et al. 2024 frontiers for comparison.

compare.png of a sweep's compare.json (`plot_compare`, launch/sweep.py --family): each family's loss frontier and the
compute multiplier at equal loss.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # after choosing the backend
import matplotlib.ticker
import numpy as np

from llm.scaling.laws import BESIROGLU_2024, HOFFMANN_2022_APPROACH2

FIGSIZE, DPI = (17, 6.5), 100


def _budget_label(c: float) -> str:
    mant, exp = f"{c:.2e}".split("e")
    return f"C = {float(mant):g}e{int(exp)}"


def plot_isoflop(law: dict, out: Path) -> None:
    """Draw law.json's fit (llm/scaling/law.py) into `out` (PNG)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI)
    points = law["points"]
    all_c = sorted({p["flops"] for p in points})
    color_of = dict(zip(all_c, plt.get_cmap("viridis")(np.linspace(0.0, 0.85, max(2, len(all_c))))))
    for b in law["budgets"]:
        color = color_of[b["flops"]]
        runs = [p for p in points if p["flops"] == b["flops"]]
        n = np.array([p["n_params"] for p in runs], dtype=float)
        loss = np.array([p["loss"] for p in runs])
        left.scatter(n, loss, color=color, s=30, zorder=3, label=f"{_budget_label(b['flops'])} ({len(runs)} runs)")
        par = b["parabola"]
        lo = min(np.log10(n).min(), np.log10(b["n_opt"])) - 0.1
        hi = max(np.log10(n).max(), np.log10(b["n_opt"])) + 0.1
        x = np.linspace(lo, hi, 200)
        left.plot(10 ** x, par["c0"] + par["c1"] * x + par["c2"] * x ** 2, color=color, lw=1.5)
        left.scatter([b["n_opt"]], [b["loss_opt"]], marker="*", s=220, zorder=4, edgecolor="black",
                     color=color if b["vertex_inside"] else "white")
    for e in law.get("excluded_budgets", []):  # runs joined by a thin line: no parabola was accepted for them
        runs = sorted((p for p in points if p["flops"] == e["flops"]), key=lambda p: p["n_params"])
        left.plot([p["n_params"] for p in runs], [p["loss"] for p in runs], "x-", color=color_of[e["flops"]],
                  lw=0.8, ms=7, label=f"{_budget_label(e['flops'])} ({len(runs)} runs): no minimum inside, not fitted")
    excluded = {e["flops"] for e in law.get("excluded_budgets", [])}
    for c in all_c:  # a budget with a minimum inside that no law came of (the other budgets had none)
        if c not in excluded and c not in {b["flops"] for b in law["budgets"]}:
            runs = sorted((p for p in points if p["flops"] == c), key=lambda p: p["n_params"])
            left.plot([p["n_params"] for p in runs], [p["loss"] for p in runs], "o-", color=color_of[c], lw=0.8,
                      label=f"{_budget_label(c)} ({len(runs)} runs): minimum inside, but no second budget")
    if law["budgets"]:
        left.scatter([], [], marker="*", s=150, color="white", edgecolor="black",
                     label="parabola minimum (hollow: outside the sizes run)")
    left.set_xscale("log")
    left.set_xlabel("parameters N (total, embeddings included)")
    left.set_ylabel("final eval loss (nats/token)")
    left.set_title("IsoFLOP profiles: parabola in log N per budget, star at its minimum")
    left.grid(True, which="both", alpha=0.3)
    if left.get_legend_handles_labels()[0]:
        left.legend(fontsize=8)

    if not law["budgets"]:
        right.text(0.5, 0.5, "no law fitted:\n" + law.get("fit_error", "").replace("; ", ";\n").replace(" (", "\n("),
                   ha="center", va="center", transform=right.transAxes, fontsize=8, wrap=True)
        right.set_axis_off()
        fig.tight_layout()
        fig.savefig(out)
        plt.close(fig)
        return
    c = np.array([b["flops"] for b in law["budgets"]])
    span = np.logspace(np.log10(c.min()) - 0.3, np.log10(c.max()) + 0.3, 50)
    n_opt = np.array([b["n_opt"] for b in law["budgets"]])
    d_opt = np.array([b["d_opt"] for b in law["budgets"]])
    ints = [b.get("n_opt_interval") for b in law["budgets"]]
    if all(ints):
        err = np.array([[n - i[0] for n, i in zip(n_opt, ints)], [i[1] - n for n, i in zip(n_opt, ints)]])
        right.errorbar(c, n_opt, yerr=np.clip(err, 0, None), fmt="none", ecolor="tab:blue", alpha=0.6, capsize=3)
    a, b = law["n_opt"], law["d_opt"]
    ci = lambda iv: "" if not iv else f" [{iv[0]:.2f}, {iv[1]:.2f}]"  # noqa: E731
    right.scatter(c, n_opt, color="tab:blue", zorder=3, label="N_opt (parabola minima)")
    right.plot(span, a["k"] * span ** a["a"], color="tab:blue", label=f"N_opt ∝ C^{a['a']:.2f}{ci(a['a_interval'])}")
    right.scatter(c, d_opt, color="tab:orange", marker="s", zorder=3, label="D_opt = C / 6 N_opt")
    right.plot(span, b["k"] * span ** b["b"], color="tab:orange",
               label=f"D_opt ∝ C^{b['b']:.2f}{ci(b['b_interval'])}")
    for ref, style in ((HOFFMANN_2022_APPROACH2, "--"), (BESIROGLU_2024, ":")):
        opt = np.array([ref.optimal(x) for x in span])
        right.plot(span, opt[:, 0], "k" + style, lw=1, label=f"{ref.name}: N_opt (a = {ref.a:.2f})")
        right.plot(span, opt[:, 1], style, color="grey", lw=1, label=f"{ref.name}: D_opt")
    right.set_xscale("log")
    right.set_yscale("log")
    right.set_xlabel("budget C (6ND FLOPs)")
    right.set_ylabel("N_opt (parameters), D_opt (tokens)")
    right.set_title("Compute-optimal N and D against C (bars: bootstrap interval)")
    right.grid(True, which="both", alpha=0.3)
    # Outside the axes: inside, it hides the smallest budget's points whatever the corner.
    right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


def plot_compare(doc: dict, out: Path) -> None:
    """Draw compare.json (llm/sweep/compare.py) into `out` (PNG). Left: each family's compute-optimal loss per
    budget and its fitted frontier, log-log, with the compute each family needs at the compared losses joined by
    an arrow. Right: the multiplier over the reference against the loss, its bootstrap intervals as bars."""
    from llm.sweep.compare import compute_for_loss
    fig, (left, right) = plt.subplots(1, 2, figsize=FIGSIZE, dpi=DPI)
    names = list(doc["families"])
    colors = dict(zip(names, plt.get_cmap("tab10")(np.arange(len(names)))))
    for name, f in doc["families"].items():
        c = np.array([o["flops"] for o in f["optima"]])
        loss = np.array([o["loss_opt"] for o in f["optima"]])
        fr = f["frontier"]
        span = np.logspace(np.log10(c.min()) - 0.3, np.log10(c.max()) + 0.3, 50)
        left.scatter(c, loss, color=colors[name], s=45, zorder=3, label=f"{name}: L*(C), parabola minima")
        floor = f" + {fr['floor']:g}" if fr["floor"] else ""
        left.plot(span, fr["k"] * span ** -fr["slope"] + fr["floor"], color=colors[name], lw=1.5,
                  label=f"{name}: L* = {fr['k']:.3g}·C^-{fr['slope']:.3f}{floor}")
    for cmp in doc["comparisons"]:
        for row in cmp["at"]:
            left.annotate("", xy=(row["flops_family"], row["loss"]), xytext=(row["flops_reference"], row["loss"]),
                          arrowprops={"arrowstyle": "->", "color": colors[cmp["family"]], "lw": 1})
            left.text(np.sqrt(row["flops_family"] * row["flops_reference"]), row["loss"], f"{row['multiplier']:.3g}×",
                      ha="center", va="bottom", fontsize=8, color=colors[cmp["family"]])
    arrows = [x for cmp in doc["comparisons"] for row in cmp["at"] for x in (row["flops_family"],
                                                                              row["flops_reference"])]
    left.set_xscale("log")
    if arrows:  # an extrapolated comparison's arrow may reach past the budgets: keep it in view
        lo, hi = left.get_xlim()
        left.set_xlim(min(lo, min(arrows) / 2), max(hi, max(arrows) * 2))
    left.set_yscale("log")
    left.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # losses as 3.0, not 3×10^0
    left.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%.2g"))
    left.set_xlabel("budget C (6ND FLOPs, N active parameters)")
    left.set_ylabel("compute-optimal final eval loss L* (nats/token)")
    left.set_title(f"Frontiers; arrows: compute to the same loss, {doc['reference']} → family")
    left.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=8)

    ref = doc["families"][doc["reference"]]["frontier"]
    conf = doc["bootstrap"]["confidence"]
    for cmp in doc["comparisons"]:
        fam = doc["families"][cmp["family"]]["frontier"]
        color = colors[cmp["family"]]
        losses = np.array([row["loss"] for row in cmp["at"]])
        mult = np.array([row["multiplier"] for row in cmp["at"]])
        lo, hi = losses.min(), losses.max()
        grid = np.linspace(lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo), 50) if hi > lo else losses
        right.plot(grid, compute_for_loss(ref, grid) / compute_for_loss(fam, grid), color=color, lw=1.5,
                   label=f"{cmp['family']} over {cmp['reference']}: frontiers' ratio")
        ivs = [row["interval"] for row in cmp["at"]]
        if all(ivs):
            err = np.clip(np.array([[m - iv[0] for m, iv in zip(mult, ivs)], [iv[1] - m for m, iv in zip(mult, ivs)]]),
                          0, None)
            right.errorbar(losses, mult, yerr=err, fmt="o", color=color, capsize=4, zorder=3,
                           label=f"at the compared losses, {100 * (1 - conf) / 2:.0f}–{100 * (1 + conf) / 2:.0f}% "
                                 "bootstrap interval"
                           + (" (extrapolated: no common loss)" if cmp["extrapolated"] else ""))
        else:
            right.scatter(losses, mult, color=color, zorder=3)
    right.axhline(1.0, color="grey", ls="--", lw=1, label="1×: no saving")
    right.set_yscale("log")  # a ratio: 2× and 0.5× equally far from 1×
    right.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g×"))
    lo, hi = right.get_ylim()  # label the minor ticks only within a decade or so, where there are few of them
    right.yaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g×") if hi / lo < 20
                                    else matplotlib.ticker.NullFormatter())
    right.invert_xaxis()  # lower loss, more compute: to the right, as on the left panel
    right.set_xlabel("loss L (nats/token)")
    right.set_ylabel("compute multiplier C_reference(L) / C_family(L)")
    right.set_title("Compute multiplier at equal loss")
    right.grid(True, alpha=0.3)
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
