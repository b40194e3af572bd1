"""Context parallelism (parallel.context, DeepSpeed Ulysses) and document masking under the DeepSpeed launcher,
against the single-process debug run of the same config.

A tiny model (2 blocks, 8 query / 4 key-value heads) at seq_len 1024 on short documents (the bundled corpus's
paragraphs, so every sample packs many), document masking on, 3 steps of 2 samples:
  * context=2 with ZeRO-1, context=2 × data=2 with ZeRO-3 and tiled MLPs, context=2 × tensor=2 give the debug
    run's per-step training losses, gradient norms and final evaluation loss within 1e-5 relative (fp32; only the
    order of sums differs; measured ≤ 8e-8);
  * a context=2 run resumed from its step-2 checkpoint is bitwise the uninterrupted one.
"""
import json
import os
import shutil

import pytest

from tests.parallel.launcher_utils import (CORPUS, eval_losses, launcher_config_dict, loss_table, max_rel_diff,
                                           read_metrics, run_deepspeed, run_single, train_losses, write_config)

TOL = 1e-5
SEQ = int(os.environ.get("CONTEXT_TEST_SEQ", 1024))
"""1024 in the suite; CONTEXT_TEST_SEQ=2048 (or 8192) runs the same comparisons at longer sequences (measured in the
issue-24 note)."""


def paragraphs(out):
    """The bundled corpus split at blank lines: short documents (tens to hundreds of tokens)."""
    with open(CORPUS) as src, open(out, "w") as dst:
        for line in src:
            for part in json.loads(line)["text"].split("\n\n"):
                if len(part.strip()) > 40:
                    dst.write(json.dumps({"text": part.strip()}) + "\n")
    return out


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from tests.data_pipeline.tiny_data import tokenize_jsonl
    root = tmp_path_factory.mktemp("context")
    data = tokenize_jsonl([paragraphs(root / "paragraphs.jsonl")], root / "data", vocab_size=512)
    assert data["tokens"] / data["documents"] < SEQ / 8  # several documents per sample
    cfg = launcher_config_dict(data, root / "unused", model={"n_layers": 2, "n_heads": 8, "n_kv_heads": 4,
                                                             "seq_len": SEQ},
                               train={"max_steps": 3, "global_batch_size": 2, "micro_batch_size": 1},
                               checkpoint={"every": 2, "keep": 2})
    cfg["data"]["document_mask"] = True
    config = write_config(root / "cfg.yaml", cfg)
    run_single(config, root / "single")
    return root, config


def norms(out_dir) -> dict[int, float]:
    return {r["step"]: r["grad_norm"] for r in read_metrics(out_dir) if "grad_norm" in r}


@pytest.mark.parametrize("name,world,overrides", [
    ("cp2-zero1", 2, ["parallel.context=2", "parallel.zero_stage=1"]),
    ("cp2-dp2-zero3-tiled", 4, ["parallel.context=2", "parallel.zero_stage=3", "parallel.tiled_mlp=4",
                                "checkpoint.every=0"]),
    ("cp2-tp2", 4, ["parallel.context=2", "parallel.tensor=2", "checkpoint.every=0"]),
])
def test_layout_matches_single_process(setup, name, world, overrides):
    root, config = setup
    run_deepspeed(config, root / name, world, overrides)
    ref, losses = train_losses(root / "single"), train_losses(root / name)
    assert len(losses) == 3
    assert max_rel_diff(ref, losses) < TOL, loss_table(ref, {name: losses})
    assert max_rel_diff(norms(root / "single"), norms(root / name)) < TOL
    assert max_rel_diff(eval_losses(root / "single"), eval_losses(root / name)) < TOL


def test_resume_is_bitwise(setup, tmp_path):
    root, config = setup
    full = train_losses(root / "cp2-zero1")
    out = tmp_path / "resumed"
    shutil.copytree(root / "cp2-zero1", out)
    shutil.rmtree(out / "checkpoints" / "step_00000003")  # as if killed after step 2's checkpoint
    run_deepspeed(config, out, 2, ["parallel.context=2", "parallel.zero_stage=1"])
    assert train_losses(out) == full, loss_table(full, {"resumed": train_losses(out)})
