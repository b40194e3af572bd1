"""Install with `pip install -e .` (add `[test]` for the test suite).

torch is left unpinned above a floor so that the CUDA build a user already has is kept; on a CPU-only
machine install the CPU wheel first (`pip install torch==2.13.0`), or pip will fetch a multi-GB CUDA build.
"""
from setuptools import find_packages, setup

setup(
    name="llm-forge",
    version="0.1.0",
    description="Compute-optimal LLM pretraining, 3D parallelism on DeepSpeed, data pipeline and alignment",
    python_requires=">=3.10",
    packages=find_packages(include=["typed_yaml*", "llm*", "parallel*", "data_pipeline*", "launch*"]),
    # The bundled evaluation tasks: lm_eval YAMLs and their held-out data (llm/eval/make_tasks.py rebuilds them).
    package_data={"llm.eval": ["tasks/*.yaml", "tasks/*.jsonl"]},
    # `llm-forge plan|prepare-data|pretrain|...`: the entry points of launch/ behind one command (launch/cli.py).
    entry_points={"console_scripts": ["llm-forge=launch.cli:console_main"]},
    install_requires=[
        # weights-only unpickling with allow-lists (torch.serialization.safe_globals), the checkpoint loads
        "torch>=2.6",
        "deepspeed>=0.15",
        "accelerate>=0.30",  # init_empty_weights: the HF model of an export is built on the meta device
        "sentencepiece>=0.2",
        # Hugging Face export/import at run time (llm/hf/, data_pipeline/hf_tokenizer.py): LlamaConfig's
        # rope_parameters and save_pretrained without safe_serialization are transformers 5; tokenizer.json is read
        # and written with tokenizers, weights tensor by tensor with safetensors' safe_open.
        "transformers>=5.0",
        "tokenizers>=0.22",
        "safetensors>=0.4",
        "datasets>=2.19",
        "pyyaml>=6.0",
        "numpy>=1.24",
        "scipy>=1.10",  # L-BFGS for the Chinchilla parametric fit (llm/scaling/fit.py)
        "tqdm>=4.60",
        "zstandard>=0.22",  # .jsonl.zst inputs of the data pipeline (the usual compression of web-scale dumps)
        # torch.utils.tensorboard's SummaryWriter needs it (logging.tensorboard, llm/train/loggers.py); small
        # next to torch, and TensorBoard is the one viewer that works on a cluster without an account.
        "tensorboard>=2.14",
        "matplotlib>=3.7",  # llm/train/plots.py: loss/LR/throughput curves and the alignment chain report as PNGs
    ],
    extras_require={
        # logging.wandb (llm/train/loggers.py); optional, as it pulls in a service binary and a web client.
        "wandb": ["wandb>=0.17"],
        # launch/evaluate.py (llm/eval/): lm-evaluation-harness; its TemplateLM and rolling windows are 0.4's API.
        "eval": ["lm_eval>=0.4.5,<0.5"],
        "test": [
            "pytest>=7.4",
            # The README's test command runs two workers (-n 2): most tests are one busy Python process, so the second
            # core idles in a serial run; tests/conftest.py keeps each file (and the SLURM files) on one worker.
            "pytest-xdist>=3.5",
            # Megatron's own .bin/.idx reader and writer as the oracle of tests/data_pipeline/test_indexed.py
            # (its base requirements are torch, numpy and packaging only).
            "megatron-core==0.16.1",
            "lm_eval>=0.4.5,<0.5",  # tests/llm/eval: the harness against our own log-likelihoods
            "wandb>=0.17",  # the offline-mode test of tests/llm/train/test_loggers.py (no network needed)
            "trl>=1.16,<1.17",  # tests/align/test_trl_oracle.py: TRL's DPO/GRPO/RLOO losses (private methods) as oracle
            "ruff>=0.6",  # the linter .ci/run runs before the tests (ruff.toml)
        ],
    },
)
