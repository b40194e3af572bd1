"""The alignment chain: base → SFT → RM → PPO (or DPO), each stage handing its checkpoint to the next by path.

A stage whose directory is complete (stage.json written last, llm/align/handoff.py) is skipped and its
recorded metrics reused, so a re-run after a crash resumes at the first unfinished stage. The report,
<out_dir>/chain_report.json, holds every stage's metrics and a summary: checker accuracy per stage on the
same held-out prompts, the RM's held-out pairwise accuracy, the final KL to the reference, and the RM-vs-
checker gap of the final policy (how much the RM rewards answers the checker rejects).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from llm.align import handoff
from llm.align.config import AlignConfig
from llm.align.engine import Dist

SUMMARY_KEYS = {"base": ["checker_accuracy"], "sft": ["checker_accuracy", "eval_loss"],
                "rm": ["pairwise_accuracy"],
                "ppo": ["checker_accuracy", "kl", "rm_reward", "rm_reward_correct", "rm_reward_wrong",
                        "rm_checker_agreement"],
                "dpo": ["checker_accuracy", "kl"]}


def _runner(stage: str):
    if stage == "base":
        from llm.align.base import run_base
        return lambda cfg, dist, log: run_base(cfg, log=log) if dist.is_main else {}
    if stage == "sft":
        from llm.align.sft import run_sft
        return run_sft
    if stage == "rm":
        from llm.align.rm import run_rm
        return run_rm
    if stage == "ppo":
        from llm.align.ppo import run_ppo
        return run_ppo
    from llm.align.dpo import run_dpo
    return run_dpo


def run_chain(cfg: AlignConfig, dist: Dist | None = None, log=print) -> dict:
    """Run cfg.stages in order (skipping complete ones) and write chain_report.json; returns the report."""
    dist = dist or Dist()
    out = Path(cfg.out_dir)
    report: dict = {"stages": {}, "skipped": []}
    for stage in cfg.stages:
        path = cfg.stage_dir(stage)
        if handoff.is_complete(path):
            report["skipped"].append(stage)
            if dist.is_main:
                log(f"== {stage}: {path} exists, skipped")
        else:
            if dist.is_main:
                log(f"== {stage} → {path}")
            t0 = time.perf_counter()
            _runner(stage)(cfg, dist, log)
            dist.barrier()
            if dist.is_main:
                log(f"== {stage} done in {time.perf_counter() - t0:.1f} s")
        dist.barrier()
        report["stages"][stage] = handoff.read_info(path).metrics
    summary = {f"{s}.{k}": report["stages"][s].get(k) for s in cfg.stages for k in SUMMARY_KEYS[s]
               if s in report["stages"]}
    summary.update({f"{s}.wall_s": report["stages"][s].get("wall_s") for s in cfg.stages})
    acc = {s: report["stages"][s].get("checker_accuracy") for s in cfg.stages}
    if acc.get("base") is not None and acc.get("sft") is not None:
        summary["sft_gain_over_base"] = acc["sft"] - acc["base"]
    for s in ("ppo", "dpo"):
        if acc.get(s) is not None and acc.get("sft") is not None:
            summary[f"{s}_gain_over_sft"] = acc[s] - acc["sft"]
    report["summary"] = summary
    if dist.is_main:
        (out / "chain_report.json").write_text(json.dumps(report, indent=1))
        log(json.dumps(summary, indent=1))
    return report
