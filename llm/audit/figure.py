"""The audit's model-card figure: exposure and extraction rate of the canaries against their repetitions
(inserted vs never-inserted controls), and training-document memorization against copies in the corpus."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # after choosing the backend

from data_pipeline.canaries import KINDS

FIGSIZE, DPI = (15, 4.8), 100  # inches, and pixels per inch: 1500×480
KIND_LABELS = {"random": "random tokens", "secret": "secret sentence"}


def audit_figure(results: dict, title: str):
    """A matplotlib Figure of ``results`` (llm/audit/run.py's layout); panels without data say so."""
    fig, axes = plt.subplots(1, 3, figsize=FIGSIZE, dpi=DPI, layout="constrained")
    draw_audit(axes, results)
    fig.suptitle(title)
    return fig


def draw_audit(axes, results: dict) -> None:
    """The three audit panels (canary exposure, canary extraction, document memorization) on ``axes``."""
    exp_ax, ext_ax, mem_ax = axes
    buckets = results.get("buckets", {})
    inserted = sorted((b for k, b in buckets.items() if k != "held_out"), key=lambda b: b["repeats"])
    held = buckets.get("held_out")
    for i, kind in enumerate(KINDS):
        rows = [(b["repeats"], b["kinds"][kind]) for b in inserted if kind in b["kinds"]]
        if not rows:
            continue
        reps = [r for r, _ in rows]
        exp_ax.plot(reps, [s["exposure_mean"] for _, s in rows], "o-", color=f"C{i}",
                    label=f"{KIND_LABELS[kind]}, inserted")
        points = [(c["repeats"], c["exposure"]) for c in results["canaries"] if c["kind"] == kind and c["repeats"]]
        exp_ax.scatter(*zip(*points), s=8, color=f"C{i}", alpha=0.3)
        ext_ax.plot(reps, [100 * s["extraction_rate"] for _, s in rows], "o-", color=f"C{i}",
                    label=f"{KIND_LABELS[kind]}, inserted")
        if held and kind in held["kinds"]:
            h = held["kinds"][kind]
            exp_ax.axhline(h["exposure_mean"], color=f"C{i}", ls="--", lw=1,
                           label=f"{KIND_LABELS[kind]}, held out (never inserted)")
            ext_ax.axhline(100 * h["extraction_rate"], color=f"C{i}", ls="--", lw=1,
                           label=f"{KIND_LABELS[kind]}, held out")
    if inserted:
        exp_ax.axhline(results["exposure"]["chance_bits"], color="gray", ls=":", lw=1, label="chance (1/ln 2 bits)")
    exp_ax.set(title="Canary exposure (Carlini et al. 2019)", xlabel="copies in the training data",
               ylabel="exposure (bits, skew-normal extrapolation)", xscale="log")
    # Random-token canaries reach hundreds of bits, secret sentences tens: linear to 2 bits (chance is 1.44,
    # and exposure can be 0), logarithmic above, so both are readable.
    exp_ax.set_yscale("symlog", linthresh=2.0)
    exp_ax.set_ylim(bottom=0.0)
    ext_ax.set(title="Canary extraction (greedy suffix from prefix)", xlabel="copies in the training data",
               ylabel="canaries extracted verbatim (%)", xscale="log", ylim=(-3, 103))
    if inserted:  # label the buckets themselves (1, 4, 16, 64), not powers of ten
        for ax in (exp_ax, ext_ax):
            ax.set_xticks([b["repeats"] for b in inserted], [str(b["repeats"]) for b in inserted])
            ax.minorticks_off()
    mem = results.get("memorization", {})
    by = mem.get("train", {}).get("by_repetitions", {})
    labels = [k for k, v in by.items() if v["documents"]]
    if labels:
        bars = mem_ax.bar(labels, [100 * by[k]["rate"] for k in labels], color="C2", label="training documents")
        mem_ax.bar_label(bars, labels=[f"{100 * by[k]['rate']:.1f}%\nn={by[k]['documents']}" for k in labels],
                         fontsize="small", padding=2)
    baseline = mem.get("held_out", {})
    if baseline.get("documents"):
        mem_ax.axhline(100 * baseline["rate"], color="black", ls="--", lw=1,
                       label=f"held-out documents ({100 * baseline['rate']:.1f}%, n={baseline['documents']})")
    mem_ax.set(title=f"Document memorization (k = {mem.get('k', '?')})",
               xlabel="identical copies of the document in the corpus",
               ylabel="next k tokens after a k-token prompt exact (%)")
    mem_ax.set_ylim(0, max(10, max((100 * by[k]["rate"] for k in labels), default=0) * 1.3))
    for ax in (exp_ax, ext_ax, mem_ax):
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize="small")
        else:
            ax.text(0.5, 0.5, "no canaries in this data folder", ha="center", va="center", transform=ax.transAxes)
