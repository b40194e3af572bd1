"""parallel/launch_env.py: how launch/pretrain.py tells the deepspeed launcher, torchrun, srun and plain python
apart, and the errors for an inconsistent SLURM environment.

The srun cases expand SLURM_JOB_NODELIST with the real `scontrol show hostnames` (it needs a slurm.conf to
read, not a running cluster: a two-line one is written here); they are skipped where SLURM is not installed.
"""
from __future__ import annotations

import os
import shutil

import pytest

from llm.config import ConfigError
from parallel.launch_env import LaunchEnv, detect_launch, first_slurm_host

pytestmark = pytest.mark.unit  # no subprocess, no launcher: `pytest -m unit`

needs_scontrol = pytest.mark.skipif(shutil.which("scontrol") is None,
                                    reason="scontrol not installed (apt-get install slurm-client)")

EXPORTED = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch, tmp_path):
    """detect_launch exports the torch.distributed variables into os.environ: start without them, restore after."""
    saved = dict(os.environ)
    for key in EXPORTED:
        os.environ.pop(key, None)
    conf = tmp_path / "slurm.conf"
    conf.write_text("ClusterName=test\nSlurmctldHost=localhost\n")
    os.environ["SLURM_CONF"] = str(conf)
    yield
    os.environ.clear()
    os.environ.update(saved)


def srun_env(**overrides) -> dict:
    """The variables srun sets for task 3 of 4 (two per node) on a two-node job."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "0", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
           "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "2", "SLURM_JOB_NODELIST": "localhost,gpu[01-02]"}
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


def test_plain_python_is_debug_mode():
    assert detect_launch({}) == LaunchEnv("python")


def test_deepspeed_launcher_and_torchrun():
    env = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    assert detect_launch(env) == LaunchEnv("deepspeed", 5, 8, 1)
    assert detect_launch({**env, "TORCHELASTIC_RUN_ID": "x"}) == LaunchEnv("torchrun", 5, 8, 1)
    # Under srun, the deepspeed launcher's RANK wins over SLURM_PROCID (one launcher task per node).
    assert detect_launch({**srun_env(), **env}).mode == "deepspeed"


def test_batch_shell_and_single_task_stay_in_debug_mode():
    assert detect_launch(srun_env(SLURM_STEP_ID=None)).mode == "python"  # the sbatch script itself
    assert detect_launch(srun_env(SLURM_NTASKS="1", SLURM_PROCID="0")).mode == "python"  # srun -n 1


@needs_scontrol
def test_srun_ranks_and_master_from_the_first_host():
    launch = detect_launch(srun_env())
    assert launch == LaunchEnv("srun", rank=3, world_size=4, local_rank=1)
    assert (os.environ["RANK"], os.environ["WORLD_SIZE"], os.environ["LOCAL_RANK"]) == ("3", "4", "1")
    assert os.environ["MASTER_ADDR"] == "localhost"
    assert os.environ["MASTER_PORT"] == str(20000 + 4242 % 20000)


@needs_scontrol
def test_srun_keeps_an_explicit_master():
    os.environ.update(MASTER_ADDR="10.0.0.7", MASTER_PORT="29500")
    detect_launch(srun_env(SLURM_JOB_NODELIST="gpu[01-02]"))  # not looked up: MASTER_ADDR is set
    assert (os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"]) == ("10.0.0.7", "29500")


@needs_scontrol
def test_first_host_follows_scontrol_expansion():
    assert first_slurm_host("localhost,gpu[01-02]") == "localhost"
    with pytest.raises(ConfigError, match=r"master host 'gpu01' .*does not resolve"):
        first_slurm_host("gpu[01-02],localhost")  # expanded by scontrol: gpu01 first


@needs_scontrol
def test_empty_nodelist_has_no_master():
    with pytest.raises(ConfigError, match="expands to no host"):
        detect_launch(srun_env(SLURM_JOB_NODELIST=""))


def test_no_scontrol_is_a_clear_error(tmp_path):
    os.environ["PATH"] = str(tmp_path)  # no scontrol on it
    with pytest.raises(ConfigError, match="cannot resolve the master host: cannot expand SLURM_JOB_NODELIST"):
        detect_launch(srun_env())


@pytest.mark.parametrize("overrides, message", [
    ({"SLURM_PROCID": "4"}, "SLURM_PROCID=4 is outside SLURM_NTASKS=4"),
    ({"SLURM_PROCID": "x"}, "inconsistent SLURM environment"),
    ({"SLURM_GPUS_ON_NODE": "8"}, r"SLURM_NTASKS_PER_NODE=2 but SLURM_GPUS_ON_NODE=8: start one task per GPU"),
    ({"SLURM_NTASKS_PER_NODE": "4(x2)", "SLURM_GPUS_ON_NODE": "2"}, "SLURM_NTASKS_PER_NODE=4 but"),
])
def test_inconsistent_slurm_environment(overrides, message):
    with pytest.raises(ConfigError, match=message):
        detect_launch(srun_env(**overrides))
    assert "RANK" not in os.environ  # refused before anything was exported


@needs_scontrol
def test_tasks_matching_gpus_is_accepted():
    assert detect_launch(srun_env(SLURM_GPUS_ON_NODE="2")).world_size == 4
