"""The passkey heat map: retrieval accuracy per (context length, needle depth), llm/eval/passkey.py's results."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt  # after choosing the backend

DPI = 100


def passkey_figure(results: dict, title: str):
    """A matplotlib Figure: depth down the rows (0 = the needle right after the intro), length across the columns,
    each cell's accuracy written in it; the model's seq_len (and its scaling) in the subtitle when given."""
    lengths, depths = results["lengths"], results["depths"]
    acc = {(c["length"], c["depth"]): c["accuracy"] for c in results["cells"]}
    grid = [[acc[(n, d)] for n in lengths] for d in depths]
    size = (max(6.0, 1.2 * len(lengths) + 3), max(3.5, 0.6 * len(depths) + 2))  # inches; room for the titles
    fig, ax = plt.subplots(figsize=size, dpi=DPI, layout="constrained")
    image = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            ax.text(j, i, f"{value:.0%}", ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
    ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth (0: start, 1: end)")
    fig.colorbar(image, ax=ax, label="retrieval accuracy")
    note = results.get("model_note")
    ax.set_title(f"{title}\n{note}" if note else title, fontsize=10)
    return fig


def write_passkey_figure(results: dict, path, title: str = "passkey retrieval") -> None:
    fig = passkey_figure(results, title)
    fig.savefig(path)
    plt.close(fig)
