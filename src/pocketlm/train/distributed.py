"""Distributed training: join torchrun's process group, wrap a model for DDP or FSDP2, and gather
full (unsharded) model and optimizer state dicts so a checkpoint from N ranks resumes on M."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pocketlm.errors import UserError


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def default_device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes in the environment (no-op for one process).

    NCCL on CUDA, gloo on CPU; each rank takes the GPU matching LOCAL_RANK.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device) if device else default_device()
    if dev.type == "cuda":
        dev = torch.device("cuda", local if world > 1 else (dev.index or 0))
        torch.cuda.set_device(dev)
    if world > 1:
        import torch.distributed as dist

        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev)


def teardown_distributed() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(values: list[float], dist_info: DistInfo) -> list[float]:
    if not dist_info.enabled:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=dist_info.device)
    dist.all_reduce(t)
    return t.tolist()


def barrier(dist_info: DistInfo) -> None:
    if dist_info.enabled:
        import torch.distributed as dist

        dist.barrier()


def wrap_model(model: nn.Module, parallel: str, dist_info: DistInfo,
               param_dtype: torch.dtype | None = None) -> nn.Module:
    """DDP (default) or FSDP2 (`fully_shard` each block, then the root). One process: unchanged."""
    if parallel not in ("ddp", "fsdp"):
        raise UserError(f"unknown parallel mode '{parallel}'; choose ddp or fsdp")
    if not dist_info.enabled:
        return model
    if parallel == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [dist_info.device.index] if dist_info.device.type == "cuda" else None
        return DDP(model, device_ids=ids)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) \
        if param_dtype is not None else MixedPrecisionPolicy()
    blocks = getattr(getattr(model, "model", None), "layers", None)
    for block in (blocks if blocks is not None else []):
        fully_shard(block, mp_policy=mp)
    fully_shard(model, mp_policy=mp)
    return model


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _state_dict_options(**kw):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(**kw)


def full_model_state_dict(model: nn.Module, dist_info: DistInfo) -> dict[str, torch.Tensor]:
    """The unsharded state dict on rank 0 (other ranks get {}); collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    if not dist_info.enabled:
        return {k: v.detach().cpu() for k, v in unwrap_model(model).state_dict().items()}
    return get_model_state_dict(model, options=_state_dict_options(full_state_dict=True, cpu_offload=True))


def full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer,
                              dist_info: DistInfo) -> dict[str, Any]:
    """Optimizer state keyed by parameter name (not index), unsharded, on rank 0; any world size
    can load it back with `load_full_optimizer_state_dict`."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    opts = _state_dict_options(full_state_dict=True, cpu_offload=dist_info.enabled)
    return get_optimizer_state_dict(model, optimizer, options=opts)


def load_full_optimizer_state_dict(model: nn.Module, optimizer: torch.optim.Optimizer,
                                   state: dict[str, Any], dist_info: DistInfo) -> None:
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=_state_dict_options(full_state_dict=True))


def load_full_model_state_dict(model: nn.Module, state: dict[str, torch.Tensor], dist_info: DistInfo) -> None:
    """Load a full state dict into a (possibly DDP/FSDP-wrapped) model on every rank."""
    if not dist_info.enabled:
        unwrap_model(model).load_state_dict(state, strict=True)
        return
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    set_model_state_dict(model, state, options=_state_dict_options(full_state_dict=True))
