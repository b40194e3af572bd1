"""The alignment recipe's renamed stage (llm/align/config.py RENAMED_STAGES, through typed_yaml's Renamed): the stage
once called `rl` is `grpo_rloo`; its old name in `stages:` and its old section still load, as the new ones, with one
line each naming the new name, and a recipe giving both sections is one ConfigError naming both."""
import pytest
import yaml

from llm.align.config import RENAMED_STAGES, STAGES, AlignConfig, load_align_config
from llm.config import ConfigError

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def write(tmp_path, raw, name="recipe.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def test_the_old_stage_name_and_section_load_as_the_new_ones_with_one_line_each(tmp_path):
    path = write(tmp_path, {"stages": ["base", "sft", "rl"], "rl": {"algorithm": "rloo", "iterations": 3}})
    cfg = load_align_config(path)
    assert cfg.stages == ["base", "sft", "grpo_rloo"]
    assert cfg.grpo_rloo.algorithm == "rloo" and cfg.grpo_rloo.iterations == 3
    section, stage = cfg.renamed_keys
    assert "\n" not in section and "\n" not in stage and str(path) in section and str(path) in stage
    assert "rl was renamed grpo_rloo (2026-12-07)" in section and "write grpo_rloo" in section
    assert "stage 'rl' was renamed 'grpo_rloo' (2026-12-07)" in stage and "stages: [..., grpo_rloo]" in stage
    assert "rl:" not in cfg.to_yaml().splitlines()  # what a stage saves uses the new name


def test_the_new_names_load_without_a_note(tmp_path):
    cfg = load_align_config(write(tmp_path, {"stages": ["base", "sft", "grpo_rloo"], "grpo_rloo": {"iterations": 2}}))
    assert cfg.grpo_rloo.iterations == 2 and cfg.renamed_keys == ()
    assert load_align_config(None).renamed_keys == ()


def test_the_old_section_as_an_override(tmp_path):
    cfg = load_align_config(None, ["stages=[base,sft,rl]", "rl.group_size=8"])
    assert cfg.stages == ["base", "sft", "grpo_rloo"] and cfg.grpo_rloo.group_size == 8
    assert len(cfg.renamed_keys) == 2 and all("(with command-line overrides)" in n for n in cfg.renamed_keys)


def test_both_sections_are_one_error_naming_both(tmp_path):
    path = write(tmp_path, {"rl": {"iterations": 3}, "grpo_rloo": {"iterations": 2}})
    with pytest.raises(ConfigError, match="rl and grpo_rloo are both set: .*keep only grpo_rloo") as e:
        load_align_config(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_the_old_section_is_still_checked(tmp_path):
    with pytest.raises(ConfigError, match=r"grpo_rloo.group_size=1 must be in \[2"):
        load_align_config(write(tmp_path, {"rl": {"group_size": 1}}))


def test_every_renamed_stage_leads_to_a_stage_and_no_old_name_is_one():
    for old, new in RENAMED_STAGES.items():
        assert new in STAGES and old not in STAGES
        assert hasattr(AlignConfig(), new) and not hasattr(AlignConfig(), old)
    assert {(r.old, r.new) for r in AlignConfig.RENAMED} == set(RENAMED_STAGES.items())
