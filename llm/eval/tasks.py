"""The evaluation tasks a run can name: the bundled ones (llm/eval/tasks/*.yaml) and those of --include-path.

The bundled YAMLs name their data files relative to their own folder, which `datasets` would resolve against
the working directory; `bundled_task_config` reads the YAML and makes those paths absolute, and the config is
handed to lm_eval as a dict, so the tasks run from any directory with nothing downloaded.
"""
from __future__ import annotations

from pathlib import Path

import yaml

from llm.config import ConfigError

TASK_DIR = Path(__file__).resolve().parent / "tasks"


def bundled_tasks() -> dict[str, Path]:
    """{task name: its YAML} of the tasks shipped in llm/eval/tasks/."""
    out = {}
    for f in sorted(TASK_DIR.glob("*.yaml")):
        out[yaml.safe_load(f.read_text())["task"]] = f
    return out


def bundled_task_config(path: Path) -> dict:
    """The task config of bundled YAML `path` with its data_files made absolute."""
    cfg = yaml.safe_load(path.read_text())
    files = cfg.get("dataset_kwargs", {}).get("data_files", {})
    for split, name in files.items():
        files[split] = str(path.parent / name)
    return cfg


def resolve_tasks(names: list[str], include_paths: list[Path], include_defaults: bool = False):
    """(task specs for lm_eval's simple_evaluate, its TaskManager) for `names`.

    Bundled tasks come as configs, the others by name from a TaskManager over `include_paths` (and lm_eval's own
    task folder only with include_defaults: those download their data). Raises ConfigError for an unknown name,
    listing the local tasks.
    """
    from lm_eval.tasks import TaskManager

    for p in include_paths:
        if not Path(p).is_dir():
            raise ConfigError(f"--include-path {p} is not a directory")
    manager = TaskManager(include_path=[str(p) for p in include_paths] or None, include_defaults=include_defaults)
    ours = bundled_tasks()
    known = set(manager.all_tasks) | set(manager.all_groups) | set(manager.all_tags)
    unknown = [n for n in names if n not in ours and n not in known]
    if unknown:
        local = sorted(set(ours) | (known if not include_defaults else set()))
        raise ConfigError(f"unknown task {', '.join(unknown)}; local tasks: {', '.join(local)}"
                          + ("" if include_paths else " (add your own with --include-path DIR)"))
    return [bundled_task_config(ours[n]) if n in ours else n for n in names], manager
