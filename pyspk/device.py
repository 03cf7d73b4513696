"""Device choice and distributed (torchrun/DDP) set-up."""

import os

import torch
import torch.distributed as dist


def pick_device(requested: str | None = None) -> torch.device:
    """``--device`` value or, when absent/'auto', CUDA if available else CPU."""
    if requested and requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"--device {requested} asked for, but CUDA is not available")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DistInfo:
    """Rank/world size from torchrun's environment; a single process otherwise."""

    def __init__(self) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def process_cuda_device(local_rank: int, device_count: int) -> torch.device:
    """The GPU of DDP process ``local_rank`` on this node: one device each.

    The launcher (run.pl --gpu N, Slurm's --gres) restricts CUDA_VISIBLE_DEVICES
    to this job's GPUs, so local ranks index the visible devices.
    """
    if local_rank >= device_count:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        raise RuntimeError(f"DDP process {local_rank} needs a GPU of its own, but only {device_count} are visible "
                           f"(CUDA_VISIBLE_DEVICES={visible}); ask the launcher for as many GPUs as --nj-gpus, "
                           f"e.g. --cmd \"run.pl --gpu N\"")
    return torch.device("cuda", local_rank)


def init_distributed(requested_device: str | None = None) -> tuple["DistInfo", torch.device]:
    """Initialise the process group under torchrun; return (DistInfo, device).

    NCCL on CUDA, gloo on CPU, so DDP is testable on a CPU-only machine.
    """
    info = DistInfo()
    device = pick_device(requested_device)
    if info.distributed:
        if device.type == "cuda":
            device = process_cuda_device(info.local_rank, torch.cuda.device_count())
            torch.cuda.set_device(device)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return info, device


def distributed_active() -> bool:
    """True inside an initialised process group (torchrun/DDP), False in a single process."""
    return dist.is_available() and dist.is_initialized()


def distributed_rank() -> int:
    """This process's rank in the process group; 0 in a single process."""
    return dist.get_rank() if distributed_active() else 0


def average_buffers(module: torch.nn.Module) -> None:
    """Average ``module``'s floating-point buffers (e.g. BatchNorm running statistics) over the processes.

    Each process updates them from its own data; averaging makes the saved model the same on every rank.
    A no-op in a single process.
    """
    if not distributed_active():
        return
    world = dist.get_world_size()
    for buffer in module.buffers():
        if buffer.is_floating_point():
            dist.all_reduce(buffer)
            buffer.div_(world)


def cleanup_distributed() -> None:
    if distributed_active():
        dist.destroy_process_group()
