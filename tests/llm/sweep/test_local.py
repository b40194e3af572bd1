"""llm/sweep/local.py in-process: the watcher of a running point (its trainer's death with the sweep, and the wait
for one left by a killed sweep, are tests/launch/test_no_data_loss.py's)."""
from __future__ import annotations

import json
import subprocess
import sys

from llm.sweep.local import watch


def test_a_running_point_shows_its_progress(tmp_path, capsys):
    """While a point trains, the sweep reads its metrics.jsonl: not a terminal here, so a line per quarter of the
    run with step, loss and the point's ETA, and the run's exit status at the end."""
    metrics = tmp_path / "metrics.jsonl"
    writer = ("import json, sys, time\n"
              "for step in (10, 20, 30, 40):\n"
              "    time.sleep(0.4)\n"
              "    open(sys.argv[1], 'a').write(json.dumps({'step': step, 'loss': 5.0 - step / 100, "
              "'tokens_per_s': 2000.0}) + '\\n')\n"
              "time.sleep(0.4)\nsys.exit(3)\n")
    proc = subprocess.Popen([sys.executable, "-c", writer, str(metrics)])
    assert watch(proc, metrics, 40, "[1/1] p", poll_s=0.05) == 3
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("[1/1] p: step ") and "/40 loss " in line and "ETA" in line
                         for line in lines)
    assert len(lines) <= 3 and "step 40/40" not in " ".join(lines)  # quarters only; the end is the sweep's line


def test_the_watcher_skips_a_torn_row_and_eval_rows(tmp_path, capsys):
    """The last training row is shown, whatever follows it: an eval row, or a line the trainer is still writing."""
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text(json.dumps({"step": 20, "loss": 4.5, "tokens_per_s": 1000.0}) + "\n"
                       + json.dumps({"step": 20, "eval_loss": 4.4}) + '\n{"step": 30, "lo')
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    assert watch(proc, metrics, 40, "p", poll_s=0.05) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and all(line.startswith("p: step 20/40 loss 4.5000 1.0k tok/s") for line in lines)
