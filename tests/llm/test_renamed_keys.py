"""Renamed run-config keys (llm.config.RENAMED_KEYS, through typed_yaml's Renamed): an old key still loads, as the new
one, with one line naming the new key; a config setting both is one ConfigError naming both."""
import dataclasses

import pytest
import yaml

from llm.config import RENAMED_KEYS, ConfigError, RunConfig, config_from_dict, load_config, read_saved_config
from llm.train.resume import check_same_run
from llm.train.setup import prepare_out_dir

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

BASE = {"data": {"paths": ["x"]}, "train": {"max_steps": 20}}


def write(tmp_path, raw, name="c.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(raw))
    return p


def with_parallel(**parallel):
    return {**BASE, "parallel": {"activation_checkpointing": "every_k", **parallel}}


def test_the_old_name_loads_as_the_new_one_with_one_line(tmp_path):
    path = write(tmp_path, with_parallel(checkpoint_every_k=3))
    cfg = load_config(path)
    assert cfg.parallel.recompute_every_k == 3 and cfg.parallel.recompute_interval == 3
    (note,) = cfg.renamed_keys
    assert "\n" not in note and str(path) in note
    assert "parallel.checkpoint_every_k was renamed parallel.recompute_every_k (2026-12-07)" in note
    assert cfg.warnings() == [f"warning: {note}"]
    assert "checkpoint_every_k" not in cfg.to_yaml()  # what the run saves uses the new name


def test_the_new_name_loads_without_a_note(tmp_path):
    cfg = load_config(write(tmp_path, with_parallel(recompute_every_k=2)))
    assert cfg.parallel.recompute_every_k == 2 and cfg.renamed_keys == () and cfg.warnings() == []


def test_the_old_name_as_an_override(tmp_path):
    cfg = load_config(write(tmp_path, with_parallel()), ["parallel.checkpoint_every_k=4"])
    assert cfg.parallel.recompute_every_k == 4
    assert "(with command-line overrides): parallel.checkpoint_every_k was renamed" in cfg.renamed_keys[0]


def test_both_names_are_one_error_naming_both(tmp_path):
    path = write(tmp_path, with_parallel(checkpoint_every_k=3, recompute_every_k=2))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    assert "parallel.checkpoint_every_k and parallel.recompute_every_k are both set" in msg
    assert "keep only parallel.recompute_every_k" in msg
    with pytest.raises(ConfigError, match="both set"):  # the new name in the file, the old one on the command line
        load_config(write(tmp_path, with_parallel(recompute_every_k=2), "d.yaml"), ["parallel.checkpoint_every_k=3"])


def test_the_old_name_is_still_checked(tmp_path):
    with pytest.raises(ConfigError, match="parallel.recompute_every_k=0 must be >= 1"):
        load_config(write(tmp_path, with_parallel(checkpoint_every_k=0)))


def test_the_callers_dict_is_left_as_it_was():
    raw = with_parallel(checkpoint_every_k=3)
    before = yaml.safe_dump(raw)
    assert config_from_dict(raw, "sweep point").parallel.recompute_every_k == 3
    assert yaml.safe_dump(raw) == before


def test_every_rename_leads_to_a_field_and_no_old_name_is_one():
    for r in RENAMED_KEYS:
        *sections, new = r.new.split(".")
        node = RunConfig()
        for s in sections:
            node = getattr(node, s)
        assert new in {f.name for f in dataclasses.fields(node)}, r
        *sections, old = r.old.split(".")
        node = RunConfig()
        for s in sections:
            node = getattr(node, s, None)
        assert node is None or not hasattr(node, old), r  # a field by that name would never be reached


def test_a_run_saved_under_the_old_name_resumes(tmp_path, capsys):
    """A run directory written before the rename: its config.yaml (the resolved config, passed back as --config to
    resume) loads, the start-up prints the note once on the main rank, and the checkpoint's copy compares clean."""
    old_out = tmp_path / "run"
    saved = load_config(write(tmp_path, {**with_parallel(recompute_every_k=2), "out_dir": str(old_out)})).to_dict()
    saved["parallel"]["checkpoint_every_k"] = saved["parallel"].pop("recompute_every_k")
    ckpt = old_out / "checkpoints" / "step_00000020"
    ckpt.mkdir(parents=True)
    (ckpt / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    (old_out / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))

    cfg = load_config(old_out / "config.yaml")
    assert cfg.parallel.recompute_every_k == 2
    check_same_run(ckpt, cfg)
    # Readers of single sections (resume, export, audit) see today's names too.
    parallel = read_saved_config(ckpt / "config.yaml")["parallel"]
    assert parallel["recompute_every_k"] == 2 and "checkpoint_every_k" not in parallel
    prepare_out_dir(cfg, is_main=True)
    prepare_out_dir(cfg, is_main=False)  # the other ranks stay quiet
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and "parallel.recompute_every_k" in lines[0] and lines[0].startswith("warning: ")
    assert yaml.safe_load((old_out / "config.yaml").read_text())["parallel"]["recompute_every_k"] == 2
