"""One-line start-up warnings for settings that validate but waste the run: a warmup as long as the run, and bf16
on a CPU that has no bf16 instructions."""
from __future__ import annotations

import pytest
import torch

from llm.config import ConfigError, load_config
from llm.train.debug import cpu_has_fast_bf16, precision_warning, run_debug
from llm.train.setup import prepare_out_dir

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def test_a_warmup_as_long_as_the_run_is_named_once_at_start(tiny_config, capsys):
    cfg = load_config(tiny_config(), ["optim.warmup_steps=6", "train.max_steps=6"])
    prepare_out_dir(cfg, is_main=True)
    lines = capsys.readouterr().out.splitlines()
    assert lines == ["warning: optim.warmup_steps=6 covers the whole run (train.max_steps=6): the LR only rises and "
                     "never decays; lower the warmup (a few percent of the run is usual) or train longer"]
    prepare_out_dir(cfg, is_main=False)  # the other ranks stay quiet
    lines += capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    assert load_config(tiny_config(), ["optim.warmup_steps=5", "train.max_steps=6"]).warnings() == []
    by_tokens = load_config(tiny_config(), ["optim.warmup_steps=6", "train.max_steps=null", "train.tokens=1536"])
    assert "(train.tokens=1536 is 6 steps)" in by_tokens.warnings()[0]


def test_cpu_bf16_flags_are_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n\nprocessor\t: 1\nflags\t\t: fpu avx2\n")
    assert cpu_has_fast_bf16(info) is False
    info.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 amx_tile\n")
    assert cpu_has_fast_bf16(info) is True
    info.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")  # aarch64
    assert cpu_has_fast_bf16(info) is True
    assert cpu_has_fast_bf16(tmp_path / "absent") is None  # not Linux: no warning either way
    cpu = torch.device("cpu")
    assert "use precision=fp32" in precision_warning("bf16", cpu, False)
    assert precision_warning("bf16", cpu, None) is None and precision_warning("fp32", cpu, False) is None


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_debug_mode_warns_of_slow_bf16_exactly_when_the_cpu_lacks_it(tiny_config, tmp_path, precision, capsys):
    """The warning comes before anything slow: here the run then stops at its missing dataset, before a step."""
    cfg = load_config(tiny_config(), [f"precision={precision}", f"data.paths=[{tmp_path / 'absent'}]"])
    with pytest.raises(ConfigError, match="absent.bin/.idx not found"):
        run_debug(cfg, device=torch.device("cpu"))
    lines = capsys.readouterr().out.splitlines()
    warned = any("precision=bf16 on a CPU without bf16 instructions" in s for s in lines)
    assert warned == (precision == "bf16" and cpu_has_fast_bf16() is False)
