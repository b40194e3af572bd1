"""Run lm-evaluation-harness tasks on one of our checkpoints and write the results (JSON and a table)."""
from __future__ import annotations

import json
from pathlib import Path

from llm.config import ConfigError

# Offline by default: `datasets` and `huggingface_hub` read these when first imported, so they are set before.
OFFLINE_ENV = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}


def check_out_path(out: str | Path | None) -> None:
    """ConfigError unless `out` can be written as a file: its folder exists and it is not a directory."""
    if out is None:
        return
    p = Path(out)
    if p.is_dir():
        raise ConfigError(f"--out {out} is a directory; give a file name (e.g. {p / 'results.json'})")
    if not p.parent.is_dir():
        raise ConfigError(f"--out {out}: the directory {p.parent} does not exist")


def evaluate(checkpoint: str | Path, tasks: list[str], include_paths: list[Path] | None = None,
             limit: int | None = None, batch_size: int = 16, include_defaults: bool = False,
             device: str | None = None, progress_log: str | Path | None = None) -> dict:
    """lm_eval's results dict (results, configs, n-samples, ...) for `tasks` on `checkpoint`. Progress lines (done,
    rate, ETA) are appended to `progress_log` and, when stderr is not a terminal, printed there.

    Raises ConfigError for an unknown task or an unusable checkpoint, before any model is built or data read.
    """
    import torch
    from lm_eval import simple_evaluate

    from llm.eval.checkpoint import load_eval_model
    from llm.eval.lm import ForgeLM
    from llm.eval.tasks import resolve_tasks

    specs, manager = resolve_tasks(tasks, list(include_paths or []), include_defaults)
    loaded = load_eval_model(checkpoint, device or ("cuda" if torch.cuda.is_available() else "cpu"))
    results = simple_evaluate(model=ForgeLM(loaded, batch_size, progress_log), tasks=specs, task_manager=manager,
                              limit=limit, log_samples=False)
    results["checkpoint"] = str(Path(checkpoint).resolve())
    return results


def results_table(results: dict) -> str:
    from lm_eval.utils import make_table
    return make_table(results)


def write_results(results: dict, out: str | Path) -> tuple[Path, Path]:
    """Write `results` as JSON to `out` and as a markdown table next to it (same name, .md); return both."""
    from lm_eval.utils import handle_non_serializable

    out = Path(out)
    table = out.with_suffix(".md") if out.suffix != ".md" else out.with_suffix(".table.md")
    body = {k: v for k, v in results.items() if k != "samples"}
    out.write_text(json.dumps(body, indent=2, default=handle_non_serializable, ensure_ascii=False) + "\n")
    table.write_text(results_table(results) + "\n")
    return out, table


def progress_log_path(out: str | Path | None) -> Path | None:
    """Where an evaluation writing `out` logs its progress lines: beside it, <name>.progress.log."""
    return None if out is None else Path(out).with_suffix(".progress.log")
