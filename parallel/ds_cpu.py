"""DeepSpeed on a machine without CUDA: what we switch off before its communication layer starts."""
from __future__ import annotations


def skip_shm_allreduce() -> None:
    """Keep DeepSpeed's CPU shared-memory all-reduce op from being built.

    DeepSpeed 0.19.8 builds it (a JIT-compiled C++ op) when deepspeed.comm initialises on the CPU
    accelerator, and each rank then creates a 69 MB `/dev/shm/deepspeed_allreduce_buffer_*` file that is
    never unlinked, not even on a clean exit: after a day of test runs here /dev/shm held 21 GB and the
    machine ran out of memory. The op only serves `inference_all_reduce`, which training never calls (our
    collectives go through torch.distributed/gloo), so marking it incompatible costs nothing.
    """
    import deepspeed.ops
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
