"""Each stage's progress bar has a total known before it starts (files, buckets, shards, documents), and the bars show
only on a terminal. The tokenize and merge totals come from counts already on disk: they must equal what the
stages then write."""
import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading

from data_pipeline.config import load_data_config
from data_pipeline.dedup.cluster import edge_units, load_removals
from data_pipeline.final_stages import kept_documents, substring_edits
from data_pipeline.pipeline import _all_shards
from data_pipeline.prepared_dir import PreparedDir
from tests.data_pipeline.test_pipeline import ROOT, SMALL, make_inputs

ARGS = [a for a in SMALL if a != "progress=false"] + ["reader.on_error=skip", "dedup.substring.enabled=true",
                                                     "dedup.substring.min_words=20"]


def prepare_on_a_terminal(inputs, out) -> str:
    """Run launch/prepare_data.py with stderr on a pseudo-terminal (as in an interactive shell); its stderr."""
    master, slave = pty.openpty()
    # A fresh pty is 0 columns wide, and tqdm draws nothing in no width: give it a terminal's 120.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, str(ROOT / "launch" / "prepare_data.py"), "--input", *inputs,
                             "--output", str(out), *ARGS], stdout=subprocess.DEVNULL, stderr=slave,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    os.close(slave)
    chunks = []

    def drain():  # the pty's buffer is small: read while the child writes, or it blocks
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO once the child has closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=drain)
    reader.start()
    assert proc.wait(timeout=600) == 0, b"".join(chunks).decode(errors="replace")
    reader.join(timeout=10)
    os.close(master)
    return b"".join(chunks).decode(errors="replace")


def test_every_stage_bar_has_its_total(tmp_path):
    inputs, _ = make_inputs(tmp_path)
    out = tmp_path / "out"
    err = prepare_on_a_terminal(inputs, out)
    report = json.loads((out / "report.json").read_text())
    cfg = load_data_config(None, ARGS + [f"inputs={json.dumps(inputs)}", f"output={json.dumps(str(out))}"])
    docs = report["documents"]
    layout = PreparedDir(out)
    removed = load_removals(layout)
    assert removed  # the inputs hold duplicates, so the lookup bar has shards to read
    for stage, total in (("ingest", len(inputs)), ("dedup", len(edge_units(cfg))), ("cluster", len(edge_units(cfg))),
                         ("tokenize", docs), ("merge", docs)):
        assert re.search(rf"{stage}:\s+0%.*\b0/{total}\b", err), (stage, total, err)
    assert re.search(r"lookup:\s+0%.*\b0/[1-9]\d*\b", err), err  # shards holding a removed or kept document
    # The tokenize total from disk counts (kept after ingest, less dedup removals and emptied documents).
    assert kept_documents(cfg, layout, _all_shards(cfg, layout), removed, substring_edits(layout)) == docs


def test_no_bar_when_stderr_is_not_a_terminal(tmp_path):
    inputs, _ = make_inputs(tmp_path)
    r = subprocess.run([sys.executable, str(ROOT / "launch" / "prepare_data.py"), "--input", *inputs, "--output",
                        str(tmp_path / "out"), *ARGS], capture_output=True, text=True, timeout=600,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr
    assert "%|" not in r.stderr and "tokenize:" not in r.stderr, r.stderr
