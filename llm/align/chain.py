"""The alignment chain: base → SFT → RM → PPO (or DPO, or the critic-free RL stage), each stage handing its
checkpoint to the next by path.

A stage whose directory is complete (stage.json written last, llm/align/handoff.py) is skipped and its
recorded metrics reused, so a re-run after a crash resumes at the first unfinished stage. Before anything runs,
every input a stage declares (llm/align/stages.py) must exist or be written by an earlier stage of the run, and the
pre-flight (`Preflight`, below) parses every data file each stage will read as that stage reads it and tries
its reward functions, so a chain that cannot finish fails at once, naming the stage, the key and the file (what
only exists once the base stage has run, its tokenizer and the bundled data, is checked as soon as it has). A
stage whose data is not configured (task.name: none) is not run, with a line saying so (`not_run` in the report).
The report, <out_dir>/chain_report.json, holds every stage's metrics and a summary: eval reward and checker
accuracy per stage on the same held-out prompts, the RM's held-out pairwise accuracy, the RL stages' KL to the
reference and mean response length, and the RM-vs-eval-reward gap of the policy (how much the RM rewards answers
the eval reward rejects).

The pre-flight (`Preflight`): before the first stage trains, every data file and reward function each stage will
read is opened and checked against what that stage needs, so a mistake in the input of the last stage is not found
after the first ones have trained.

For each stage to run and each data key it reads (llm/align/stages.py `Stage.data_read`), the whole file is parsed
as the kind the stage reads it as (llm/align/formats.py), under `bad_rows` as the stage would: a refused row, or a
file with no usable row, raises DataFileError in one line, "stage <name>: <key>: <file>:<line>: <reason>; expected
<format>". Rows the stage would skip are counted in a line of the log. Token lengths are checked with the tokenizer
and seq_len of the checkpoint the stage starts from (or of the checkpoint that one will be trained from); before the
base stage has written its tokenizer they cannot be, and `check` returns the stages left to check again once it
has. Reward functions are imported and called on the first SCORED_ROWS rows of the prompts they score, with an
empty completion (a policy can answer with EOS at once, so a reward must score it): a function that needs a field
the rows lack, raises, calls sys.exit, runs past reward_timeout_s or returns anything but one finite number per
completion fails here, as RewardError naming the stage, the reward key, the data key and the sample. Each complete
checkpoint a stage reads must carry its tokenizer and this config's chat template, and an RM key must hold a reward
model (HandoffError).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from llm.align import handoff
from llm.align.config import AlignConfig
from llm.align.formats import EXPECTED, DataFileError, Loaded, load
from llm.align.reward_functions import RewardError, RewardFunctions, function_specs
from llm.align.stages import REGISTRY, Stage
from llm.train.runtime import Runtime, SingleProcess
from llm.align.template import ChatTemplate
from typed_yaml import log

SCORED_ROWS = 8
"""Rows of each scored prompt file the reward functions are called on (a sample: a reward may be slow)."""


def scored_by(stage: str, key: str) -> str | None:
    """The reward key whose functions score `stage`'s rows of data key `key`, or None: eval.prompts by eval.reward in
    every stage (llm/align/rollout.py checker_eval); grpo_rloo.prompts by grpo_rloo.reward; the RM's policy samples
    of ppo.prompts and sft.eval_data by eval.reward (llm/align/reward_training.py). PPO's rollouts are scored by the RM
    only."""
    if key == "eval.prompts" or (stage == "rm" and key in ("ppo.prompts", "sft.eval_data")):
        return "eval.reward"
    if stage == "grpo_rloo" and key == "grpo_rloo.prompts":
        return "grpo_rloo.reward"
    return None


class Preflight:
    """One pre-flight over a run's stages; files read by several stages are parsed once per (kind, tokenizer)."""

    def __init__(self, cfg: AlignConfig):
        self.cfg = cfg
        self.template = ChatTemplate.from_config(cfg)
        self.loaded: dict[tuple, Loaded] = {}
        self.tokenizers: dict[Path, object] = {}
        self.rewards: dict[tuple, RewardFunctions] = {}
        self.files: set[str] = set()
        """The data files parsed so far."""

    def check(self, stages: list[Stage]) -> list[Stage]:
        """Check `stages` (raising DataFileError, RewardError or HandoffError, each one line naming the stage); returns
        those whose data is not written yet or whose token lengths cannot be checked before the base stage runs."""
        later = []
        for stage in stages:
            start = self.start_checkpoint(stage)
            tok, seq_len = self._tokenizer(start) if start is not None else (None, None)
            for key, path in stage.data_read(self.cfg).items():
                if not Path(path).exists():
                    continue  # written by an earlier stage of the run (chain.py check_inputs): checked then
                rows = self._data(stage, key, path, start, tok, seq_len)
                reward = scored_by(stage.name, key)
                if reward is not None:
                    self._score(stage, reward, key, rows)
            self._checkpoints(stage)
            paths = stage.data_read(self.cfg).values()
            if paths and (tok is None or any(not Path(p).exists() for p in paths)):
                later.append(stage)
        return later

    def start_checkpoint(self, stage: Stage) -> Path | None:
        """The complete checkpoint whose tokenizer and seq_len `stage` will use: the one it starts from, or, when that
        is an earlier stage's directory not written yet, the one that stage starts from, and so on; None when none is
        there yet (the base stage has not run)."""
        seen = set()
        while stage.checkpoints and stage.name not in seen:
            seen.add(stage.name)
            key = next(iter(stage.checkpoints))
            path = stage.checkpoint_path(self.cfg, key)
            if handoff.is_complete(path):
                return path
            parent = stage.checkpoints[key]
            if path != Path(self.cfg.stage_dir(parent)):
                return None
            stage = REGISTRY[parent]
        return None

    def _tokenizer(self, path: Path):
        from llm.align.handoff import checkpoint_tokenizer
        if path not in self.tokenizers:
            self.tokenizers[path] = (checkpoint_tokenizer(path), handoff.read_info(path).model_config.seq_len)
        return self.tokenizers[path]

    def _data(self, stage: Stage, key: str, path: str, start: Path | None, tok, seq_len) -> list:
        kind = stage.data_kind(key)
        cached = (path, kind, start)
        if cached not in self.loaded:
            try:
                self.loaded[cached] = load(path, kind, self.template, tok, seq_len, self.cfg.bad_rows)
            except DataFileError as e:
                raise DataFileError(f"stage {stage.name}: {key}: {e}; expected {EXPECTED[kind]}") from None
            self.files.add(path)
            got = self.loaded[cached]
            if got.skipped and tok is not None:  # with lengths: the stage's own count
                log.info(f"pre-flight: stage {stage.name}: {key}: {got.summary()} (bad_rows: skip)")
        return self.loaded[cached].rows

    def _score(self, stage: Stage, reward_key: str, key: str, rows: list) -> None:
        section, name = reward_key.split(".")
        specs = tuple(function_specs(getattr(getattr(self.cfg, section), name)))
        if not specs:
            return
        where = f"stage {stage.name}: {reward_key} scoring {key}={self.cfg.source(key)}"
        try:
            if specs not in self.rewards:
                self.rewards[specs] = RewardFunctions(list(specs), timeout_s=self.cfg.reward_timeout_s)
            sample = rows[:SCORED_ROWS]
            self.rewards[specs]([r["raw"] for r in sample], [""] * len(sample), [r["fields"] for r in sample])
        except RewardError as e:
            raise RewardError(f"{where}: {e}") from None

    def _checkpoints(self, stage: Stage) -> None:
        for key in stage.checkpoints:
            path = stage.checkpoint_path(self.cfg, key)
            if not stage.reads_key(self.cfg, key) or not handoff.is_complete(path):
                continue  # not read, or written by an earlier stage of the run (check_inputs)
            where = f"stage {stage.name}: {stage.name}.{key}={path}"
            try:
                info = handoff.read_info(path)
                if not handoff.tokenizer_path(path).is_file():
                    raise handoff.HandoffError(f"its tokenizer {handoff.tokenizer_path(path).name} is missing")
                handoff.check_template(info, path, self.template.to_dict())
            except handoff.HandoffError as e:
                raise handoff.HandoffError(f"{where}: {e}") from None
            if key == "reward_model":
                handoff.reward_stats(info, f"stage {stage.name}: {stage.name}.{key}", path)


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


def run_chain(cfg: AlignConfig, runtime: Runtime | None = None) -> dict:
    """Run cfg.stages in order (skipping complete ones) and write chain_report.json; returns the report."""
    d = runtime or SingleProcess()
    out = Path(cfg.out_dir)
    report: dict = {"stages": {}, "skipped": [], "not_run": {}}
    stages = []
    for s in cfg.stages:
        why = REGISTRY[s].unconfigured(cfg)
        if why is None:
            stages.append(REGISTRY[s])
        else:
            report["not_run"][s] = why
            log.info(f"== {s}: {why}, skipped")
    to_run = [s for s in stages if not handoff.is_complete(cfg.stage_dir(s.name))]
    check_inputs(cfg, to_run)
    preflight = Preflight(cfg)
    later = preflight.check(to_run)
    names = ", ".join(s.name for s in to_run) or "no stage"
    log.info(f"== pre-flight: {len(preflight.files)} data file(s) read by {names} checked"
             + (f"; {', '.join(s.name for s in later)} again once the base stage has written its tokenizer and the "
                "task data" if later else ""))
    for stage in stages:
        path = cfg.stage_dir(stage.name)
        if handoff.is_complete(path):
            report["skipped"].append(stage.name)
            log.info(f"== {stage.name}: {path} exists, skipped")
        else:
            log.info(f"== {stage.name} → {path}")
            t0 = time.perf_counter()
            stage.run(cfg, d)
            d.barrier()
            log.info(f"== {stage.name} done in {time.perf_counter() - t0:.1f} s")
            if later:
                later = preflight.check([s for s in later if s is not stage])
                if not later:
                    log.info(f"== pre-flight: {len(preflight.files)} data file(s) checked, token lengths included")
        d.barrier()
        report["stages"][stage.name] = handoff.read_info(path).metrics
    summary = {f"{s.name}.{k}": report["stages"][s.name].get(k) for s in stages for k in s.summary_keys}
    summary.update({f"{s}.wall_s": report["stages"][s].get("wall_s") for s in report["stages"]})
    # Every stage that generates is scored by eval.reward; the RL stages also report how long their answers are.
    summary.update({f"{s}.eval_reward": m["eval_reward"] for s, m in report["stages"].items() if "eval_reward" in m})
    summary.update({f"{s}.response_length": report["stages"][s].get("response_length")
                    for s in ("ppo", "grpo_rloo") if s in report["stages"]})
    acc = {s: report["stages"][s].get("checker_accuracy") for s in report["stages"]}
    if acc.get("base") is not None and acc.get("sft") is not None:
        summary["sft_gain_over_base"] = acc["sft"] - acc["base"]
    for s in ("ppo", "dpo", "grpo_rloo"):
        if acc.get(s) is not None and acc.get("sft") is not None:
            summary[f"{s}_gain_over_sft"] = acc[s] - acc["sft"]
    report["summary"] = summary
    if d.is_main:
        out.mkdir(parents=True, exist_ok=True)  # stages: [] (or only skipped ones) writes no stage directory first
        (out / "chain_report.json").write_text(json.dumps(report, indent=1))
    log.info(json.dumps(summary, indent=1))
    return report
