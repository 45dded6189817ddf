"""Several processes (``torchrun`` / ``accelerate launch``): DDP with one rank that writes.

``python -m distill run`` started by a launcher gets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``
from the environment. transformers' ``Trainer`` then trains with DDP; this module adds what
the rest of the pipeline needs so that ranks never race on files:

* :func:`init` starts the process group early (gloo on the CPU, NCCL on CUDA, each rank on
  ``cuda:LOCAL_RANK``), before the teacher is materialized, so the pipeline can wait on it;
  ``Trainer``/accelerate find it initialized and use it.
* :func:`main_first`: rank 0 runs a block (materialize the teacher, write the layer-dropped
  init, generate and cache the teacher's targets), the other ranks wait at a barrier and
  then run the same block, which finds rank 0's files and only reads them.
* :func:`is_main`: only rank 0 writes the final model dir, ``distill_card.json``, the
  checkpoints (Trainer's ``should_save``) and deletes the checkpoints.

With ``WORLD_SIZE`` unset (a plain ``python -m distill run``) everything here is a no-op.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from datetime import timedelta


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def enabled() -> bool:
    return world_size() > 1


def is_main() -> bool:
    return rank() == 0


def backend() -> str | None:
    """The backend the process group uses: gloo without CUDA, NCCL with it; None alone."""
    if not enabled():
        return None
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def init(timeout_s: int = 7200) -> None:
    """Start the default process group (idempotent; no-op for a single process).

    ``timeout_s`` bounds every wait, so it must cover the longest thing rank 0 does while
    the others wait at a barrier: generating the teacher's targets for the whole train set.
    """
    if not enabled():
        return
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank())
    td.init_process_group(backend=backend(), timeout=timedelta(seconds=timeout_s))


def barrier() -> None:
    if not enabled():
        return
    import torch.distributed as td

    if td.is_initialized():
        if td.get_backend() == "nccl":
            import torch

            td.barrier(device_ids=[torch.cuda.current_device()])
        else:
            td.barrier()


@contextlib.contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first; the others wait, then run it (reading rank 0's files)."""
    if not is_main():
        barrier()
    yield  # an exception on rank 0 skips its barrier: it exits, and the launcher stops the rest
    if is_main():
        barrier()


def shutdown() -> None:
    """Destroy the process group (end of a launched run; no-op otherwise)."""
    if enabled():
        import torch.distributed as td

        if td.is_initialized():
            td.destroy_process_group()


def gather_object(obj) -> list:
    """``obj`` from every rank, in rank order (``[obj]`` for a single process)."""
    if not enabled():
        return [obj]
    import torch.distributed as td

    out: list = [None] * world_size()
    td.all_gather_object(out, obj)
    return out


def tag() -> str:
    """``rank 1/2 (gloo)`` for log lines; empty for a single process."""
    return f"rank {rank()}/{world_size()} ({backend()})" if enabled() else ""


# -- what a run reports about its data split across ranks --------------------------------
class SeenDataset:
    """Wraps a dataset and records the indices this process read (proof of the DDP split).

    Read, not necessarily trained on: a data loader may fetch one batch ahead of the last step.
    """

    def __init__(self, ds):
        self.ds = ds
        self.seen: list[int] = []

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        self.seen.append(int(i))
        return self.ds[i]


def trainable_digest(model) -> str:
    h = hashlib.sha256()
    for name, prm in model.named_parameters():
        if prm.requires_grad:
            h.update(name.encode())
            h.update(prm.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def split_stats(read_per_rank: list[list[int]], n_examples: int) -> dict:
    sets = [set(s) for s in read_per_rank]
    shared = set.intersection(*sets) if len(sets) > 1 else set()
    return {
        "examples": n_examples,
        "read_per_rank": [len(s) for s in read_per_rank],
        "distinct_per_rank": [len(s) for s in sets],
        "distinct_union": len(set().union(*sets)),
        "read_by_every_rank": len(shared),
        "first_read_per_rank": [s[:32] for s in read_per_rank],
    }
