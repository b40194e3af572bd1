"""Shared command line of the alignment entry points (launch/{chain,sft,rm,ppo,dpo,grpo_rloo}.py).

Each takes `--config RECIPE.yaml` plus dotted overrides, runs in debug mode under plain `python` and
data-parallel under the `deepspeed` launcher (detected from the environment, parallel/launch_env.py): this is
where the runtime the stages train through is chosen (llm/train/runtime.py's SingleProcess, or
parallel/runtime.py's DistributedRuntime). A stage run alone first passes the pre-flight the chain runs
(llm/align/chain.py): its data files and reward functions are checked before its models are loaded.
Exit codes: 0 done, 2 config error (a bad parameter, data file or row, or a reward function that raised, exited,
hung or returned no finite number), 4 hand-off error (a checkpoint that does not fit the stage, or a damaged
stage.json, tokenizer or in-stage trainer_state.json), 75 preempted
(SIGTERM/SIGUSR1: the running stage saved its in-stage checkpoint; the same command resumes it).
"""
from __future__ import annotations

import argparse

from typed_yaml import log


def make_runtime():
    """Debug mode under plain `python`; under a launcher, a rank of the job's process group."""
    from parallel.launch_env import detect_launch
    launch = detect_launch()
    if launch.mode == "python":
        from llm.train.runtime import SingleProcess
        return SingleProcess()
    from parallel.runtime import DistributedRuntime
    return DistributedRuntime.join(launch)


def main_for(name: str, doc: str, argv=None) -> int:
    """Run the chain (name 'chain') or one registered stage (llm/align/stages.py) from the command line."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True, help="alignment recipe, e.g. configs/align/default.yaml")
    ap.add_argument("overrides", nargs="*", help="dotted overrides, e.g. ppo.beta=0.1 sft.steps=100")
    ap.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    from llm.train.loop import PreemptionFlag
    PreemptionFlag.install(startup=True)  # as launch/pretrain.py: an early SIGUSR1 is remembered, not fatal
    from llm.align.chain import run_chain
    from llm.align.config import load_align_config
    from llm.align.stages import REGISTRY
    run = run_chain if name == "chain" else REGISTRY[name].run
    # A config or data mistake (2), a hand-off mismatch (4) and a preemption (75) leave as UserErrors, printed by
    # launch/cli.py (typed_yaml/errors.py).
    cfg = load_align_config(args.config, args.overrides)
    for note in cfg.renamed_keys:  # an old stage name or section (llm/align/config.py RENAMED_STAGES): one line each
        log.warning(note)
    runtime = make_runtime()
    if name != "chain":  # the chain runs its own pre-flight; a stage alone checks its inputs before training too
        from llm.align.chain import check_inputs
        from llm.align.chain import Preflight
        Preflight(cfg).check([REGISTRY[name]])
        check_inputs(cfg, [REGISTRY[name]], alone=True)  # what the pre-flight left for an earlier stage to write
    run(cfg, runtime)
    runtime.close()
    return 0
