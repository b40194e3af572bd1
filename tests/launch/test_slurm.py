"""launch/slurm/ against a real SLURM: a two-node cluster on this machine (launch/slurm/local_cluster.sh).

One slurmctld and two slurmd (`slurmd -N llmf-n1`, `-N llmf-n2`) on their own ports act as two nodes. The
jobs are submitted with sbatch all at once (they overlap their start-up; the nodes claim 8 CPUs each so
everything fits) and each test waits for its own by polling squeue, with a bound:

- pretrain.sbatch on two nodes, one rank per node, in both launch modes: srun one task per rank, and one
  deepspeed launcher per node with a hostfile generated from the allocation. Rank 0 ran on llmf-n1 and
  rank 1 on llmf-n2, and the losses equal the single-node run's (one node, two ranks) bitwise: the ranks
  compute the same samples in the same order and gloo all-reduces the same two gradients whether they
  live on one node or two, so any difference would be a bug, not round-off;
- requeue: a two-node job signalled with SIGUSR1 mid-run (what --signal=USR1@T does before the time limit)
  saves a checkpoint, exits 75, requeues itself (scontrol requeue), and the requeued job resumes and
  finishes with the uninterrupted two-node job's losses, bitwise (resume restores model, optimizer, RNG and
  data position; CPU fp32 is deterministic);
- prepare_data.sbatch as a 2-task job array over 4 shards (that the split output equals one task's is
  tests/data_pipeline/test_pipeline.py's business; here: the array runs under SLURM and finishes).

CPU mode (no --gpus-per-node): DeepSpeed's CPU accelerator and gloo. Skipped, with the reason, without
Debian's slurm-wlm and munge (.ci/run installs them) or without root (jobs run as root; the node names go
into /etc/hosts). The cluster is stopped even when a test fails. About a minute on 2 cores.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from launch.slurm import hostfile
from tests.parallel.launcher_utils import (CORPUS, ROOT, free_port, launch_env, launcher_config_dict, train_losses,
                                           write_config)


SLURM = ROOT / "launch" / "slurm"
NODES = ("llmf-n1", "llmf-n2")
STEPS = 40              # long enough (seconds) that a signal sent at step 3 lands mid-run
SIGNAL_AT_STEP = 3
JOB_TIMEOUT_S = 480     # generous: every job of the module shares 2 cores
EXIT_PREEMPTED = 75     # launch/pretrain.py's EXIT_PREEMPTED


def _missing() -> str | None:
    tools = [t for t in ("slurmctld", "slurmd", "munged", "sbatch", "squeue", "scontrol") if not shutil.which(t)]
    if tools:
        return f"SLURM not installed (missing {', '.join(tools)}): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "the local SLURM cluster runs jobs as root (SlurmUser=root) and edits /etc/hosts: run as root"
    if not shutil.which("deepspeed"):
        return "the deepspeed launcher is not on PATH"
    return None


needs_cluster = pytest.mark.skipif(_missing() is not None, reason=str(_missing()))
needs_scontrol = pytest.mark.skipif(shutil.which("scontrol") is None,
                                    reason="scontrol not installed (apt-get install slurm-client)")


class Cluster:
    """Client side of the local cluster: every command runs with its SLURM_CONF, from the repository root."""

    def __init__(self, directory: Path, env: dict):
        self.dir, self.env = directory, env

    def cmd(self, *args: str, timeout: float = 30) -> str:
        proc = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
        assert proc.returncode == 0, f"{' '.join(args)}: {proc.stdout}{proc.stderr}"
        return proc.stdout

    def submit(self, script: str, sbatch_options: list[str], script_args: list[str], log: Path,
               env: dict | None = None) -> str:
        argv = ["sbatch", "--parsable", f"--output={log}", *sbatch_options, str(SLURM / script), *script_args]
        proc = subprocess.run(argv, env={**self.env, **(env or {})}, capture_output=True, text=True, timeout=30,
                              cwd=ROOT)
        assert proc.returncode == 0, f"{' '.join(argv)}: {proc.stdout}{proc.stderr}"
        return proc.stdout.strip().split(";")[0]

    def queued(self, job_id: str) -> bool:
        return bool(self.cmd("squeue", "-h", "-j", job_id, "-o", "%T").strip())

    def record(self, job_id: str) -> list[dict]:
        """`scontrol show job -o` as dicts (one per array task): JobState, ExitCode, Restarts, NodeList, ..."""
        return [dict(re.findall(r"(\w+)=(\S*)", line))
                for line in self.cmd("scontrol", "show", "job", "-o", job_id).splitlines() if line.strip()]

    def wait(self, job: "Job", timeout: float = JOB_TIMEOUT_S) -> list[dict]:
        """Poll until the job has left the queue (requeues included); its final records."""
        deadline = job.submitted + timeout
        while time.monotonic() < deadline:
            if not self.queued(job.id):
                return self.record(job.id)
            time.sleep(0.5)
        subprocess.run(["scancel", job.id], env=self.env, capture_output=True, timeout=30)
        pytest.fail(f"job {job.id} still queued or running {timeout:.0f} s after submission: "
                    f"{self.record(job.id)}\n{job.output()[-6000:]}")


class Job:
    def __init__(self, job_id: str, out_dir: Path, logs: list[Path]):
        self.id, self.out_dir, self.logs, self.submitted = job_id, out_dir, logs, time.monotonic()

    def output(self) -> str:
        return "".join(p.read_text() if p.exists() else f"(no output file {p})\n" for p in self.logs)


@pytest.fixture(scope="module")
def cluster():
    # A short path: munged's socket lives under it, and unix socket paths are limited to 108 bytes.
    directory = Path(tempfile.mkdtemp(prefix="llmf-slurm-"))
    env = {k: v for k, v in launch_env().items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env.update(SLURM_CONF=str(directory / "slurm.conf"), PYTHON=sys.executable)
    try:
        proc = subprocess.run(["bash", str(SLURM / "local_cluster.sh"), "start", str(directory), str(len(NODES)), "8"],
                              env=env, capture_output=True, text=True, timeout=90)
        if proc.returncode != 0:
            logs = "\n".join(f"--- {p.name}\n{p.read_text()[-2000:]}" for p in sorted((directory / "log").glob("*")))
            pytest.fail(f"local cluster did not start:\n{proc.stdout}{proc.stderr}\n{logs}")
        yield Cluster(directory, env)
    finally:
        subprocess.run(["bash", str(SLURM / "local_cluster.sh"), "stop", str(directory)], env=env,
                       capture_output=True, timeout=120)
        shutil.rmtree(directory, ignore_errors=True)


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


@pytest.fixture(scope="module")
def jobs(cluster, tiny_data, tmp_path_factory) -> dict[str, Job]:
    """Every job of the module, submitted together; the requeue job already signalled at step SIGNAL_AT_STEP."""
    base = tmp_path_factory.mktemp("slurm_runs")
    # 4 layers, d_model 64, global batch 8 of micro-batches 2, fp32, STEPS steps.
    config = write_config(base / "tiny.yaml", launcher_config_dict(tiny_data, base / "unused",
                                                                     train={"max_steps": STEPS}))

    def pretrain(name, options, launcher="srun"):
        out_dir = base / name
        # An explicit free port: the default (20000 + job id) would collide with a second cluster's job of the
        # same id, e.g. another checkout's tests running on this machine at the same time.
        job_id = cluster.submit("pretrain.sbatch", options, ["--launcher", launcher, str(config), f"out_dir={out_dir}"],
                                base / f"{name}.out", env={"MASTER_PORT": str(free_port())})
        return Job(job_id, out_dir, [base / f"{name}.out"])

    submitted = {
        "requeued": pretrain("requeued", ["-N", "2", "--ntasks-per-node", "1"]),
        "single_node": pretrain("single_node", ["-N", "1", "--ntasks-per-node", "2"]),
        "two_nodes": pretrain("two_nodes", ["-N", "2", "--ntasks-per-node", "1"]),
        "two_nodes_deepspeed": pretrain("two_nodes_deepspeed", ["-N", "2", "--ntasks-per-node", "1"], "deepspeed"),
    }
    # As if the nodes had 4 GPUs each (the variable sbatch --gpus-per-node=4 sets) but 2 tasks per node.
    submitted["gpu_mismatch"] = Job(cluster.submit("pretrain.sbatch", ["-N", "1", "--ntasks-per-node", "2"],
                                                   [str(config)], base / "gpu_mismatch.out",
                                                   env={"SLURM_GPUS_PER_NODE": "4"}),
                                    base / "unused", [base / "gpu_mismatch.out"])
    data_out = base / "prepared"
    array_id = cluster.submit("prepare_data.sbatch", ["--array=0-1", "-c", "1"],
                              ["--input", str(CORPUS), "--output", str(data_out), "shards.docs_per_shard=100",
                               "tokenize.vocab_size=512", "tokenize.workers=1"], base / "prepare-%A_%a.out")
    submitted["prepare_data"] = Job(array_id, data_out, [base / f"prepare-{array_id}_{i}.out" for i in (0, 1)])

    requeued = submitted["requeued"]
    while last_step(requeued.out_dir / "metrics.jsonl") < SIGNAL_AT_STEP:
        assert time.monotonic() < requeued.submitted + JOB_TIMEOUT_S, \
            f"no step {SIGNAL_AT_STEP} within {JOB_TIMEOUT_S} s\n{requeued.output()[-6000:]}"
        assert cluster.queued(requeued.id), f"job ended before step {SIGNAL_AT_STEP}\n{requeued.output()[-6000:]}"
        time.sleep(0.2)
    # What SLURM does before a time limit with --signal=USR1@T: SIGUSR1 to every task of the job's steps.
    cluster.cmd("scancel", "--signal=USR1", requeued.id)
    return submitted


def finished(cluster: Cluster, job: Job) -> tuple[dict, str]:
    (record,) = cluster.wait(job)
    output = job.output()
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", f"{record}\n{output[-6000:]}"
    return record, output


@needs_cluster
def test_two_node_srun_job_matches_single_node(cluster, jobs):
    record, output = finished(cluster, jobs["two_nodes"])
    assert record["NumNodes"] == "2" and record["NodeList"] == "llmf-n[1-2]", record
    # The line common.sh prints per task (rank -> node), then each rank's own start-up line.
    assert dict(re.findall(r"slurm task (\d)/2 on (\S+),", output)) == {"0": NODES[0], "1": NODES[1]}, output
    assert "distributed: srun, backend gloo, world size 2" in output
    for rank in (0, 1):
        assert re.search(rf"rank {rank}: host \S+, local rank 0, device cpu, tp=0/1 pp=0/1 dp={rank}/2", output), output
    _, single_output = finished(cluster, jobs["single_node"])
    assert dict(re.findall(r"slurm task (\d)/2 on (\S+),", single_output)) == {"0": NODES[0], "1": NODES[0]}
    reference = train_losses(jobs["single_node"].out_dir)
    assert len(reference) == STEPS
    assert train_losses(jobs["two_nodes"].out_dir) == reference


@needs_cluster
def test_two_node_deepspeed_launcher_job_matches_single_node(cluster, jobs):
    record, output = finished(cluster, jobs["two_nodes_deepspeed"])
    assert record["NumNodes"] == "2", record
    launchers = dict(re.findall(r"slurm task \d+ on (\S+): deepspeed launcher, node rank (\d+)", output))
    assert launchers == {NODES[0]: "0", NODES[1]: "1"}, output[-4000:]
    assert "distributed: deepspeed, backend gloo, world size 2" in output
    finished(cluster, jobs["single_node"])
    assert train_losses(jobs["two_nodes_deepspeed"].out_dir) == train_losses(jobs["single_node"].out_dir)


@needs_cluster
def test_preempted_job_requeues_and_resumes_with_the_same_losses(cluster, jobs):
    record, output = finished(cluster, jobs["requeued"])
    assert record["Restarts"] == "1", f"{record}\n{output[-6000:]}"
    saved = re.search(r"SIGUSR1 received: saved \S+ at step (\d+)", output)
    assert saved, f"the job was not preempted (did it finish before the signal?)\n{output[-6000:]}"
    step = int(saved.group(1))
    assert SIGNAL_AT_STEP <= step < STEPS
    assert f"exit code {EXIT_PREEMPTED}" in output and "requeueing job" in output
    assert re.search(rf"resumed from \S+step_{step:08d} at step {step}", output), output[-6000:]
    finished(cluster, jobs["two_nodes"])
    assert train_losses(jobs["requeued"].out_dir) == train_losses(jobs["two_nodes"].out_dir)


@needs_cluster
def test_tasks_per_node_must_match_gpus(cluster, jobs):
    (record,) = cluster.wait(jobs["gpu_mismatch"])
    output = jobs["gpu_mismatch"].output()
    assert record["JobState"] == "FAILED" and record["ExitCode"] == "2:0", f"{record}\n{output}"
    assert "error: 2 tasks per node but 4 GPUs per node: submit with --ntasks-per-node equal to" in output, output
    assert "slurm task" not in output  # refused before any rank started


@needs_cluster
def test_prepare_data_job_array(cluster, jobs):
    job = jobs["prepare_data"]
    records = cluster.wait(job)
    output = job.output()
    assert len(records) == 2 and all(r["JobState"] == "COMPLETED" and r["ExitCode"] == "0:0" for r in records), \
        f"{records}\n{output[-6000:]}"
    assert "prepare_data task 0 of 2" in output and "prepare_data task 1 of 2" in output, output
    report = json.loads((job.out_dir / "report.json").read_text())
    assert report["documents"] > 0 and (job.out_dir / "data.bin").stat().st_size > 0
    assert report["shards"] == 4, report  # 396 documents at 100 per shard, split over the 2 tasks


# launch/slurm/hostfile.py: the deepspeed launcher mode's hostfile, from a real `scontrol show hostnames`.

@pytest.fixture
def slurm_conf(tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"  # scontrol show hostnames reads a config, it needs no running cluster
    conf.write_text("ClusterName=test\nSlurmctldHost=localhost\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))


def test_tasks_per_node_expansion():
    assert hostfile.tasks_per_node("8(x2),4") == [8, 8, 4]
    assert hostfile.tasks_per_node("1") == [1]
    with pytest.raises(hostfile.AllocationError, match="cannot parse"):
        hostfile.tasks_per_node("8(xx)")


@needs_scontrol
def test_hostfile_from_the_allocation(slurm_conf):
    env = {"SLURM_JOB_NODELIST": "gpu[01-02],cpu7", "SLURM_TASKS_PER_NODE": "8(x2),4"}
    assert hostfile.hostfile_lines(env) == ["gpu01 slots=8", "gpu02 slots=8", "cpu7 slots=4"]
    assert hostfile.hostfile_lines(env, slots=2) == ["gpu01 slots=2", "gpu02 slots=2", "cpu7 slots=2"]
    with pytest.raises(hostfile.AllocationError, match="names 2 nodes but"):
        hostfile.hostfile_lines({**env, "SLURM_TASKS_PER_NODE": "8(x2)"})
    with pytest.raises(hostfile.AllocationError, match="SLURM_JOB_NODELIST is not set"):
        hostfile.hostfile_lines({})


@needs_scontrol
def test_master_must_resolve(slurm_conf):
    assert hostfile.master_host({"SLURM_JOB_NODELIST": "localhost,gpu01"}) == "localhost"
    with pytest.raises(hostfile.AllocationError, match="master host 'gpu01' .* does not resolve"):
        hostfile.master_host({"SLURM_JOB_NODELIST": "gpu[01-02]"})
