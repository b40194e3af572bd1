"""The alignment chain: base → SFT → RM → PPO (or DPO, or the critic-free RL stage), each stage handing its
checkpoint to the next by path.

A stage whose directory is complete (stage.json written last, llm/align/handoff.py) is skipped and its
recorded metrics reused, so a re-run after a crash resumes at the first unfinished stage. Before anything runs,
every input a stage declares (llm/align/stages.py) must exist or be written by an earlier stage of the run, and the
pre-flight (llm/align/preflight.py) parses every data file each stage will read as that stage reads it and tries
its reward functions, so a chain that cannot finish fails at once, naming the stage, the key and the file (what
only exists once the base stage has run, its tokenizer and the bundled data, is checked as soon as it has). A
stage whose data is not configured (task.name: none) is not run, with a line saying so (`not_run` in the report).
The report, <out_dir>/chain_report.json, holds every stage's metrics and a summary: eval reward and checker
accuracy per stage on the same held-out prompts, the RM's held-out pairwise accuracy, the RL stages' KL to the
reference and mean response length, and the RM-vs-eval-reward gap of the policy (how much the RM rewards answers
the eval reward rejects).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from llm.align import handoff
from llm.align.config import AlignConfig
from llm.align.preflight import Preflight
from llm.align.stages import REGISTRY, Stage
from llm.align.strategy import LocalStrategy, Strategy


def check_inputs(cfg: AlignConfig, to_run: list[Stage], alone: bool = False) -> None:
    """Raise HandoffError naming the first input of a stage in `to_run` (in order) that neither exists (a complete
    stage directory, a data file) nor is written by an earlier stage of `to_run` (alone: one stage run by itself)."""
    written: set[Path] = set()
    for stage in to_run:
        for key, path in stage.missing_inputs_by_key(cfg).items():
            if path not in written:
                what = "a complete stage checkpoint" if key.split(".", 1)[1] in stage.checkpoints else "a file"
                later = (f"no earlier stage of stages={cfg.stages} writes it" if not alone
                         else f"run the stage that writes it first, or set {key} to {what} that exists")
                raise handoff.HandoffError(f"stage {stage.name} reads {path} ({key}), which does not exist; {later}")
        written.update(stage.outputs(cfg))


def run_chain(cfg: AlignConfig, strategy: Strategy | None = None, log=print) -> dict:
    """Run cfg.stages in order (skipping complete ones) and write chain_report.json; returns the report."""
    d = strategy or LocalStrategy()
    out = Path(cfg.out_dir)
    report: dict = {"stages": {}, "skipped": [], "not_run": {}}
    stages = []
    for s in cfg.stages:
        why = REGISTRY[s].unconfigured(cfg)
        if why is None:
            stages.append(REGISTRY[s])
        else:
            report["not_run"][s] = why
            if d.is_main:
                log(f"== {s}: {why}, skipped")
    to_run = [s for s in stages if not handoff.is_complete(cfg.stage_dir(s.name))]
    check_inputs(cfg, to_run)
    preflight = Preflight(cfg, log if d.is_main else None)
    later = preflight.check(to_run)
    if d.is_main:
        names = ", ".join(s.name for s in to_run) or "no stage"
        log(f"== pre-flight: {len(preflight.files)} data file(s) read by {names} checked"
            + (f"; {', '.join(s.name for s in later)} again once the base stage has written its tokenizer and the "
               "task data" if later else ""))
    for stage in stages:
        path = cfg.stage_dir(stage.name)
        if handoff.is_complete(path):
            report["skipped"].append(stage.name)
            if d.is_main:
                log(f"== {stage.name}: {path} exists, skipped")
        else:
            if d.is_main:
                log(f"== {stage.name} → {path}")
            t0 = time.perf_counter()
            stage.run(cfg, d, log)
            d.barrier()
            if d.is_main:
                log(f"== {stage.name} done in {time.perf_counter() - t0:.1f} s")
            if later:
                later = preflight.check([s for s in later if s is not stage])
                if d.is_main and not later:
                    log(f"== pre-flight: {len(preflight.files)} data file(s) checked, token lengths included")
        d.barrier()
        report["stages"][stage.name] = handoff.read_info(path).metrics
    summary = {f"{s.name}.{k}": report["stages"][s.name].get(k) for s in stages for k in s.summary_keys}
    summary.update({f"{s}.wall_s": report["stages"][s].get("wall_s") for s in report["stages"]})
    # Every stage that generates is scored by eval.reward; the RL stages also report how long their answers are.
    summary.update({f"{s}.eval_reward": m["eval_reward"] for s, m in report["stages"].items() if "eval_reward" in m})
    summary.update({f"{s}.response_length": report["stages"][s].get("response_length")
                    for s in ("ppo", "rl") if s in report["stages"]})
    acc = {s: report["stages"][s].get("checker_accuracy") for s in report["stages"]}
    if acc.get("base") is not None and acc.get("sft") is not None:
        summary["sft_gain_over_base"] = acc["sft"] - acc["base"]
    for s in ("ppo", "dpo", "rl"):
        if acc.get(s) is not None and acc.get("sft") is not None:
            summary[f"{s}_gain_over_sft"] = acc[s] - acc["sft"]
    report["summary"] = summary
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)  # stages: [] (or only skipped ones) writes no stage directory first
        (out / "chain_report.json").write_text(json.dumps(report, indent=1))
        log(json.dumps(summary, indent=1))
    return report
