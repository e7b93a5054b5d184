"""Collective operations the engine and strategies need; a no-op in one process.

Under Ray Train (``train.workers > 1``) torch.distributed is initialised by
``TorchTrainer`` and :class:`Dist` all-reduces gradients and statistics, so all
workers hold identical weights and draw identical subnets.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.distributed as torch_dist


class Dist:
    def __init__(self) -> None:
        self.enabled = torch_dist.is_available() and torch_dist.is_initialized()
        self.world_size = torch_dist.get_world_size() if self.enabled else 1
        self.rank = torch_dist.get_rank() if self.enabled else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_mean(self, t: torch.Tensor) -> torch.Tensor:
        """In-place mean over workers (returns ``t``)."""
        if self.world_size > 1:
            torch_dist.all_reduce(t)
            t.div_(self.world_size)
        return t

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size > 1:
            torch_dist.all_reduce(t)
        return t

    def average_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average gradients of all workers in one flat all-reduce. Parameters without
        a gradient are skipped; all workers train the same subnets so the set agrees."""
        if self.world_size == 1:
            return
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.all_reduce_mean(flat)
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def broadcast(self, t: torch.Tensor, src: int = 0) -> torch.Tensor:
        if self.world_size > 1:
            torch_dist.broadcast(t, src)
        return t

    def broadcast_buffers(self, module: torch.nn.Module, src: int = 0) -> None:
        """Give every worker rank ``src``'s buffers (BN running stats, which each worker
        otherwise accumulates from its own shard), as DDP's ``broadcast_buffers`` does,
        so replicas stay identical and a checkpoint of rank 0 is the state of all."""
        if self.world_size == 1:
            return
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for b in module.buffers():
            by_dtype.setdefault(b.dtype, []).append(b)
        for bufs in by_dtype.values():
            flat = torch.cat([b.reshape(-1) for b in bufs])
            torch_dist.broadcast(flat, src)
            offset = 0
            for b in bufs:
                n = b.numel()
                b.copy_(flat[offset : offset + n].view_as(b))
                offset += n

    def barrier(self) -> None:
        if self.world_size > 1:
            torch_dist.barrier()
