"""launch/slurm/ against a real SLURM: a two-node cluster on this machine (launch/slurm/local_cluster.sh).

One slurmctld and two slurmd (`slurmd -N llmf-n1`, `-N llmf-n2`) on their own ports act as two nodes. The
tests submit launch/slurm/pretrain.sbatch with sbatch, wait for the job by polling squeue (bounded), and
read its output and metrics:

- a 2-node job (one task per node) in both launch modes: srun one task per rank, and one deepspeed launcher
  per node with a hostfile from the allocation; both rank 0 and rank 1 ran, on different nodes;
- their losses against the single-node run of the same world size (a 1-node, 2-task job): equal, bitwise.
  The ranks compute the same samples in the same order and gloo all-reduces the same two gradients
  whether they live on one node or two, so any difference would be a bug, not round-off;
- requeue: a job signalled with SIGUSR1 mid-run saves a checkpoint, exits 75, requeues itself
  (scontrol requeue) and the requeued job resumes and finishes with the uninterrupted job's losses, bitwise
  (resume restores model, optimizer, RNG and data position; CPU fp32 is deterministic).

CPU mode: no --gpus-per-node, DeepSpeed's CPU accelerator and gloo. Skipped, with the reason, without
Debian's slurm-wlm and munge (.ci/run installs them) or without root (jobs run as root, node names go into
/etc/hosts). The cluster is stopped even when a test fails. About 2 minutes on 2 cores.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.parallel.launcher_utils import (ROOT, launch_env, launcher_config_dict, prepare_tiny_data, train_losses,
                                           write_config)

CLUSTER = ROOT / "launch" / "slurm" / "local_cluster.sh"
SBATCH = ROOT / "launch" / "slurm" / "pretrain.sbatch"
NODES = ("llmf-n1", "llmf-n2")
STEPS = 40          # long enough (a few seconds) that a signal sent at step 3 lands mid-run
SIGNAL_AT_STEP = 3
JOB_TIMEOUT_S = 150
EXIT_PREEMPTED = 75


def _missing() -> str | None:
    tools = [t for t in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol") if not shutil.which(t)]
    if tools:
        return f"SLURM not installed (missing {', '.join(tools)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM cluster runs jobs as root (SlurmUser=root) and edits /etc/hosts: run as root"
    if not shutil.which("deepspeed"):
        return "the deepspeed launcher is not on PATH"
    return None


pytestmark = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))


def _clean_env(extra: dict) -> dict:
    """launcher_utils' launch environment with no SLURM_* left over from an enclosing job."""
    env = {k: v for k, v in launch_env().items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def cluster():
    # A short path: munged's socket lives under it and unix socket paths are limited to 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="llmf-slurm-"))
    env = _clean_env({"SLURM_CONF": str(directory / "slurm.conf"), "PYTHON": os.environ.get("PYTHON", "python3")})
    try:
        proc = subprocess.run(["bash", str(CLUSTER), "start", str(directory), str(len(NODES)), "2"], env=env,
                              capture_output=True, text=True, timeout=90)
        if proc.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((directory / "log").glob("*")))
            pytest.fail(f"local cluster did not start:\n{proc.stdout}{proc.stderr}\n{logs}")
        yield Cluster(directory, env)
    finally:
        subprocess.run(["bash", str(CLUSTER), "stop", str(directory)], env=env, capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


class Cluster:
    def __init__(self, directory: Path, env: dict):
        self.dir, self.env = directory, env

    def cmd(self, *args: str, timeout: float = 30) -> str:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def submit(self, sbatch_options: list[str], script_args: list[str], log: Path) -> str:
        out = self.cmd("sbatch", "--parsable", f"--output={log}", *sbatch_options, str(SBATCH), *script_args)
        return out.strip().split(";")[0]

    def job(self, job_id: str) -> dict:
        """`scontrol show job -o` as a dict (JobState, ExitCode, Restarts, NodeList, ...)."""
        line = self.cmd("scontrol", "show", "job", "-o", job_id)
        return dict(re.findall(r"(\w+)=(\S*)", line))

    def wait(self, job_id: str, log: Path, timeout: float = JOB_TIMEOUT_S) -> dict:
        """Poll until the job has left the queue (requeues included); the job's final record."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.cmd("squeue", "-h", "-j", job_id, "-o", "%T").strip():
                return self.job(job_id)
            time.sleep(0.5)
        subprocess.run(["scancel", job_id], env=self.env, capture_output=True, timeout=30)
        pytest.fail(f"job {job_id} still queued or running after {timeout:.0f} s: {self.job(job_id)}\n{tail(log)}")


def last_step(metrics: Path) -> int:
    """The last training step in a metrics.jsonl being written (0 if none yet; a partial line is skipped)."""
    step = 0
    for line in metrics.read_text().splitlines() if metrics.exists() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        step = max(step, row["step"] if "loss" in row else 0)
    return step


def tail(log: Path, n: int = 6000) -> str:
    return log.read_text()[-n:] if log.exists() else f"(no output file {log})"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tokenized corpus and a 2-rank-friendly config: 4 layers, d_model 64, global batch 8, STEPS steps."""
    base = tmp_path_factory.mktemp("slurm_runs")
    data = prepare_tiny_data(base / "data")
    config = write_config(base / "tiny.yaml", launcher_config_dict(data, base / "unused",
                                                                     train={"max_steps": STEPS}))
    return base, config


def run_job(cluster: Cluster, tiny, name: str, sbatch_options: list[str], script_args: list[str] = ()):
    base, config = tiny
    out_dir, log = base / name, base / f"{name}.out"
    job_id = cluster.submit(sbatch_options, [*script_args, str(config), f"out_dir={out_dir}"], log)
    record = cluster.wait(job_id, log)
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", f"{record}\n{tail(log)}"
    return out_dir, log.read_text(), record


@pytest.fixture(scope="module")
def single_node(cluster, tiny):
    """The reference: one node, two ranks (srun, 2 tasks)."""
    return run_job(cluster, tiny, "single_node", ["-N", "1", "--ntasks-per-node", "2"])


@pytest.fixture(scope="module")
def two_nodes(cluster, tiny):
    """Two nodes, one rank each, srun mode: the uninterrupted run the requeue test compares against."""
    return run_job(cluster, tiny, "two_nodes_srun", ["-N", "2", "--ntasks-per-node", "1"])


def tasks_by_node(output: str) -> dict[int, str]:
    """{SLURM_PROCID: node} from the per-task line common.sh prints before each rank starts."""
    return {int(rank): node for rank, node in re.findall(r"slurm task (\d+)/\d+ on (\S+),", output)}


def test_two_node_srun_job_matches_single_node(single_node, two_nodes):
    out_dir, output, record = two_nodes
    assert record["NumNodes"] == "2", record
    assert tasks_by_node(output) == {0: NODES[0], 1: NODES[1]}, output[-4000:]
    assert "distributed: srun, backend gloo, world size 2" in output
    for rank in (0, 1):  # the start-up line each rank prints: host, rank, local rank, device, coordinates
        assert re.search(rf"rank {rank} on \S+: local rank 0, device cpu, tp=0/1 pp=0/1 dp={rank}/2", output), output
    reference = train_losses(single_node[0])
    assert len(reference) == STEPS
    assert train_losses(out_dir) == reference


def test_two_node_deepspeed_launcher_job_matches_single_node(cluster, tiny, single_node):
    out_dir, output, record = run_job(cluster, tiny, "two_nodes_deepspeed", ["-N", "2", "--ntasks-per-node", "1"],
                                      ["--launcher", "deepspeed"])
    assert record["NumNodes"] == "2", record
    launchers = dict(re.findall(r"slurm task \d+ on (\S+): deepspeed launcher, node rank (\d+)", output))
    assert launchers == {NODES[0]: "0", NODES[1]: "1"}, output[-4000:]
    assert "distributed: deepspeed, backend gloo, world size 2" in output
    assert train_losses(out_dir) == train_losses(single_node[0])


def test_preempted_job_requeues_and_resumes_with_the_same_losses(cluster, tiny, two_nodes):
    base, config = tiny
    out_dir, log = base / "requeued", base / "requeued.out"
    job_id = cluster.submit(["-N", "2", "--ntasks-per-node", "1"], [str(config), f"out_dir={out_dir}"], log)
    deadline = time.monotonic() + JOB_TIMEOUT_S
    while last_step(out_dir / "metrics.jsonl") < SIGNAL_AT_STEP:
        assert time.monotonic() < deadline, f"no step {SIGNAL_AT_STEP} within {JOB_TIMEOUT_S} s\n{tail(log)}"
        assert cluster.cmd("squeue", "-h", "-j", job_id, "-o", "%T").strip(), f"job ended early\n{tail(log)}"
        time.sleep(0.2)
    # What SLURM does before a time limit with --signal=USR1@T: SIGUSR1 to every task of the job's steps.
    cluster.cmd("scancel", "--signal=USR1", job_id)
    record = cluster.wait(job_id, log)
    output = tail(log, 100_000)
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", f"{record}\n{output[-6000:]}"
    assert record["Restarts"] == "1", f"{record}\n{output[-6000:]}"
    saved = re.search(r"SIGUSR1 received: saved \S+ at step (\d+)", output)
    assert saved, f"the job was not preempted (did it finish before the signal?)\n{output[-6000:]}"
    step = int(saved.group(1))
    assert SIGNAL_AT_STEP <= step < STEPS
    assert f"exited with exit code {EXIT_PREEMPTED}" in output and "requeueing job" in output
    assert re.search(rf"resumed from \S+step_{step:08d} at step {step}", output), output[-6000:]
    assert train_losses(out_dir) == train_losses(two_nodes[0])
