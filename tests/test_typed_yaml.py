"""typed_yaml, the one YAML loader of run, data and alignment configs: repeated keys are refused by each."""
from pathlib import Path

import pytest

import typed_yaml
from typed_yaml import ConfigError

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

ROOT = Path(__file__).resolve().parents[1]


def test_repeated_key_at_any_depth_names_it_and_both_lines(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("a:\n  b: [{c: 1}, {c: 2, d: 3, c: 4}]\n")
    with pytest.raises(ConfigError, match=r"c.yaml: key 'a.b\[1\].c' is defined twice \(lines 2 and 2\)"):
        typed_yaml.read_yaml(p)


def test_merge_keys_may_be_overridden(tmp_path):
    # `<<: *anchor` then the same key is YAML's own override, not a repetition.
    p = tmp_path / "c.yaml"
    p.write_text("base: &b {x: 1, y: 2}\nderived:\n  <<: *b\n  y: 3\n")
    assert typed_yaml.read_yaml(p) == {"base": {"x": 1, "y": 2}, "derived": {"x": 1, "y": 3}}


def test_non_finite_numbers_are_refused():
    from llm.config import OptimConfig
    for text in (".nan", ".inf", "-.inf"):
        with pytest.raises(ConfigError, match="optim.lr must be a finite number"):
            typed_yaml.from_dict(OptimConfig, typed_yaml.apply_overrides({}, [f"lr={text}"]), "optim", "cli")


def test_data_config_refuses_repeated_keys(tmp_path):
    from data_pipeline.config import load_data_config
    p = tmp_path / "data.yaml"
    p.write_text((ROOT / "configs" / "data" / "default.yaml").read_text() + "\nreader:\n  format: jsonl\n")
    with pytest.raises(ConfigError, match=r"key 'reader' is defined twice \(lines \d+ and \d+\)"):
        load_data_config(p, validate=False)


def test_align_config_refuses_repeated_keys(tmp_path):
    from llm.align.config import load_align_config
    p = tmp_path / "align.yaml"
    recipe = (ROOT / "configs" / "align" / "default.yaml").read_text()
    first = 1 + recipe.splitlines().index(next(line for line in recipe.splitlines() if line.startswith("seed:")))
    p.write_text(recipe + "\nseed: 3\n")
    with pytest.raises(ConfigError, match=rf"key 'seed' is defined twice \(lines {first} and \d+\)"):
        load_align_config(p)


def test_renamed_keys_move_within_and_across_sections():
    """typed_yaml.Renamed: a config class's RENAMED table, dotted paths relative to that class, applied wherever
    the class is built (here nested under 'outer', which the notes and errors name)."""
    from dataclasses import dataclass, field
    from typing import ClassVar

    @dataclass
    class Inner:
        fresh: int = 0
        moved: int = 0

    @dataclass
    class Section:
        RENAMED: ClassVar = (typed_yaml.Renamed("inner.stale", "inner.fresh", since="v9"),
                             typed_yaml.Renamed("old_moved", "inner.moved", since="v9"))
        inner: Inner = field(default_factory=Inner)

    @dataclass
    class Outer:
        outer: Section = field(default_factory=Section)

    raw = {"outer": {"inner": {"stale": 1}, "old_moved": 2}}
    built = typed_yaml.from_dict(Outer, raw, "", "c.yaml")
    assert (built.outer.inner.fresh, built.outer.inner.moved) == (1, 2)
    assert raw == {"outer": {"inner": {"stale": 1}, "old_moved": 2}}
    assert built.outer.renamed_keys == (
        "c.yaml: outer.inner.stale was renamed outer.inner.fresh (v9); it still loads under the old name, but "
        "write outer.inner.fresh",
        "c.yaml: outer.old_moved was renamed outer.inner.moved (v9); it still loads under the old name, but "
        "write outer.inner.moved")
    assert typed_yaml.from_dict(Section, {}).renamed_keys == ()
    with pytest.raises(ConfigError, match=r"^c.yaml: outer.inner.stale and outer.inner.fresh are both set"):
        typed_yaml.from_dict(Outer, {"outer": {"inner": {"stale": 1, "fresh": 1}}}, "", "c.yaml")
