"""TensorBoard and W&B (offline) carry the same scalars as metrics.jsonl; rows are timestamped; the console has
an ETA."""
import io
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from wandb.proto import wandb_internal_pb2

from llm.config import ConfigError, LoggingConfig, load_config
from llm.train.debug import run_debug
from llm.train.loggers import scalars
from llm.train.metrics import MetricsLogger, format_duration

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`


def rows_of(out_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(out_dir) / "metrics.jsonl").read_text().splitlines()]


def expected_series(rows) -> dict[str, list[tuple[int, float]]]:
    series = {}
    for row in rows:
        for key, value in scalars(row).items():
            series.setdefault(key, []).append((row["step"], value))
    return series


def tensorboard_series(log_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})  # 0: keep every event
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def wandb_records(run_file: Path):
    """The protobuf Records of an offline run's .wandb file: a ':W&B' header (7 bytes) then LevelDB-log
    records (32 KiB blocks, 7-byte record headers: crc, length, type)."""
    data, block = run_file.read_bytes(), 32768
    assert data[:4] == b":W&B"
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record is assembled
            yield wandb_internal_pb2.Record.FromString(pending)
            pending = b""


def wandb_history(run_file: Path) -> dict[int, dict]:
    """History rows of an offline run, by step."""
    history = {}
    for record in wandb_records(run_file):
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            history.setdefault(items["_step"], {}).update(items)
    return history


def wandb_config(run_file: Path) -> dict:
    """The run config an offline run filed (in its run record, and any later config records), key -> value."""
    config = {}
    for record in wandb_records(run_file):
        kind = record.WhichOneof("record_type")
        if kind in ("run", "config"):
            items = record.run.config.update if kind == "run" else record.config.update
            config.update({i.key: json.loads(i.value_json) for i in items if i.key})
    return config


def run(path, *overrides):
    cfg = load_config(path, list(overrides))
    run_debug(cfg, device=torch.device("cpu"))
    return cfg


def test_tensorboard_scalars_equal_metrics_jsonl(tiny_config):
    before = time.time()
    cfg = run(tiny_config(logging={"tensorboard": True}))
    rows = rows_of(cfg.out_dir)
    want = expected_series(rows)
    assert {"loss", "eval_loss", "lr", "tokens_per_s", "mfu", "grad_norm"} <= set(want)
    got = tensorboard_series(Path(cfg.out_dir) / "tensorboard")
    assert set(got) == set(want)
    for tag, points in want.items():  # TensorBoard stores float32
        assert [s for s, _ in got[tag]] == [s for s, _ in points], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in points], rel=1e-6), tag
    times = [r["time"] for r in rows]
    assert before <= times[0] and times == sorted(times) and times[-1] <= time.time()


def test_wandb_offline_history_equals_metrics_jsonl(tiny_config):
    cfg = run(tiny_config(logging={"wandb": "offline", "wandb_name": "tiny"}))
    rows = rows_of(cfg.out_dir)
    (run_dir,) = (Path(cfg.out_dir) / "wandb").glob("offline-run-*")
    (run_file,) = run_dir.glob("run-*.wandb")
    history = wandb_history(run_file)
    assert sorted(history) == sorted({r["step"] for r in rows})
    for step, points in history.items():
        want = {}
        for row in rows:
            if row["step"] == step:
                want.update(scalars(row))
        assert {k: v for k, v in points.items() if not k.startswith("_")} == want, step  # float64: exact
    # the whole run config is filed with the run, so W&B can compare and filter runs by any setting
    filed = {k: v for k, v in wandb_config(run_file).items() if not k.startswith("_")}
    assert filed["model"]["d_model"] == cfg.model.d_model and filed["train"]["max_steps"] == cfg.train.max_steps
    assert filed["logging"]["wandb_name"] == "tiny" and set(filed) == set(asdict(cfg))


def test_tensorboard_resume_hides_the_crashed_tail(tmp_path):
    """As metrics.jsonl drops rows past the resumed step, TensorBoard purges their events."""
    path, logging = tmp_path / "metrics.jsonl", LoggingConfig(tensorboard=True)
    first = MetricsLogger(path, logging=logging, stream=io.StringIO())
    for step in range(1, 5):
        first.log({"step": step, "loss": 10.0 + step})
    first.close()
    second = MetricsLogger(path, resume_step=2, logging=logging, stream=io.StringIO())
    for step in (3, 4):
        second.log({"step": step, "loss": 20.0 + step})
    second.close()
    assert tensorboard_series(tmp_path / "tensorboard")["loss"] == [(1, 11.0), (2, 12.0), (3, 23.0), (4, 24.0)]
    assert [r["loss"] for r in rows_of(tmp_path)] == [11.0, 12.0, 23.0, 24.0]


def test_console_eta_counts_from_the_resumed_step(tmp_path):
    out = io.StringIO()
    logger = MetricsLogger(tmp_path / "metrics.jsonl", resume_step=4, total_steps=10, stream=out)
    logger.start = time.time() - 6.0  # 2 steps in 6 s since the resume: 3 s a step, 4 steps left
    logger.log({"step": 6, "loss": 1.0}, console="step 6/10")
    logger.close()
    assert out.getvalue().rstrip().endswith("| eta 0:00:12"), out.getvalue()
    assert format_duration(3 * 86400 + 61) == "72:01:01" and format_duration(59.6) == "0:01:00"


def test_wandb_setting_is_checked_on_load(tiny_config, monkeypatch):
    with pytest.raises(ConfigError, match=r"logging.wandb='sometimes' must be null \(off\), 'offline' or 'online'"):
        load_config(tiny_config(), ["logging.wandb=sometimes"])
    # YAML 1.1 reads an unquoted `off` as False: the error says so instead of a bare "got False"
    with pytest.raises(ConfigError, match=r"logging.wandb must be a string, got False \(YAML reads an unquoted off"):
        load_config(tiny_config(), ["logging.wandb=off"])
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the wandb package: pip install -e \.\[wandb\]"):
        load_config(tiny_config(logging={"wandb": "offline"}))
