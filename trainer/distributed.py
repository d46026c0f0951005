"""Process-group context for ``torchrun`` (DDP): who am I, which rows are mine, gather results.

One process is the world-size-1 case of the same code path. Evaluation gathers every rank's
per-case ranks back into case order before any metric is computed, so metrics are identical to
a single process; training splits each global batch across ranks, and DDP averages gradients.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This rank's share of ``rows`` (strided, so shares differ by at most one)."""
        return rows[self.rank::self.world] if self.active else rows

    def gather_ordered(self, values: torch.Tensor, rows: np.ndarray, n: int) -> torch.Tensor:
        """Inverse of :meth:`shard`: every rank's ``values`` for its ``rows``, placed by row."""
        if not self.active:
            out = torch.empty(n, dtype=values.dtype)
            out[torch.from_numpy(rows)] = values.cpu()
            return out
        size = (n + self.world - 1) // self.world
        pad_v = torch.zeros(size, dtype=values.dtype)
        pad_v[:len(values)] = values.cpu()
        pad_r = torch.full((size,), -1, dtype=torch.int64)
        pad_r[:len(rows)] = torch.from_numpy(rows)
        dev = _comm_device()
        all_v = [torch.empty_like(pad_v, device=dev) for _ in range(self.world)]
        all_r = [torch.empty_like(pad_r, device=dev) for _ in range(self.world)]
        dist.all_gather(all_v, pad_v.to(dev))
        dist.all_gather(all_r, pad_r.to(dev))
        v, r = torch.cat(all_v).cpu(), torch.cat(all_r).cpu()
        out = torch.empty(n, dtype=values.dtype)
        out[r[r >= 0]] = v[r >= 0]
        return out

    def broadcast_text(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (e.g. the run id), as bytes in a tensor."""
        if not self.active:
            return text
        dev = _comm_device()
        data = torch.zeros(512, dtype=torch.uint8, device=dev)
        if self.is_main:
            raw = text.encode()[:511]
            data[:len(raw)] = torch.tensor(list(raw), dtype=torch.uint8)
        dist.broadcast(data, src=0)
        raw = bytes(data.cpu().tolist())
        return raw[:raw.index(0)].decode() if 0 in raw else raw.decode()

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _comm_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) \
        if dist.get_backend() == "nccl" else torch.device("cpu")


def init_distributed() -> DistContext:
    """Join the process group that torchrun describes in the environment (else world size 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistContext(rank=dist.get_rank(), world=dist.get_world_size(), local_rank=local)


def close_distributed(ctx: DistContext) -> None:
    if ctx.active and dist.is_initialized():
        dist.destroy_process_group()
