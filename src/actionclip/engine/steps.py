"""What the training loop needs around its steps: the order of the samples, the loader, the precision, per-rank
seeds, and the ranks' agreement after each optimizer step.

``StepAgreement`` puts everything the ranks must agree on (a stop signal, unreadable videos so far, a loss that was
not finite, the loss for the log) into ONE all_reduce per optimizer step. It is started after step k and read after
step k+1, so the host never waits for the GPU to finish the step it just queued: step k's values are ready by then.
What is decided on them (stop, give up) therefore happens one step late; ``settle`` reads the pending one at once,
and the loop calls it before writing any checkpoint, so no checkpoint holds the step of a non-finite loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Sampler

from actionclip.data.bad_samples import collate_skip_bad
from actionclip.engine.workers import init_worker
from actionclip.host.devices import cuda_has_native_bf16
from actionclip.host.distributed import DistInfo


class EpochSampler(Sampler):
    """This rank's ``(index, sample_seed)`` pairs for one epoch: a seeded permutation cut to whole global
    batches (drop_last), dealt to ranks in turn, starting after ``skip`` of this rank's samples. ``set_epoch``
    changes it in place, so one DataLoader (and its workers) serves the whole run."""

    def __init__(self, size: int, global_batch: int, seed: int, epoch: int, info: DistInfo, skip: int = 0):
        self.size, self.global_batch, self.seed, self.info = size, global_batch, seed, info
        self.set_epoch(epoch, skip)

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(self.size, generator=generator)
        seeds = torch.randint(2**62, (self.size,), generator=generator)
        usable = self.size // self.global_batch * self.global_batch
        mine = order[:usable][self.info.rank :: self.info.world_size]
        self.items = [(int(i), int(seeds[i])) for i in mine[skip:]]

    def __iter__(self):
        return iter(self.items)

    def __len__(self):
        return len(self.items)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """None for fp32; bf16/fp16 autocast keeps fp32 master weights. ``auto``: bf16 (or fp16) on GPU, fp32 on CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if cuda_has_native_bf16(device) else torch.float16
    if precision in ("bf16", "fp16"):
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("fp16 autocast needs a GPU; use bf16 or fp32 on CPU")
        return torch.bfloat16 if precision == "bf16" else torch.float16
    raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")


def step_seed(seed: int, micro_step: int, rank: int) -> int:
    """The seed of dropout and mixup/cutmix at one micro-step (counted over the whole run) of one rank: the same
    on a resumed run, different on every rank (each rank's samples need draws of their own)."""
    return (seed * 1_000_003 + micro_step) * 1_009 + rank


def train_loader(dataset: Dataset, sampler: Sampler, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    """One loader for the whole run: its workers persist across epochs and evaluations (the sampler changes its
    epoch in place), and on a GPU batches come in pinned memory, so their copy to the GPU can overlap compute."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=True,
        collate_fn=collate_skip_bad,
        worker_init_fn=init_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )


@dataclass
class Agreed:
    """The ranks' agreement on one optimizer step."""

    epoch: int
    step: int  # the step's number before it ran, as in "step 2" of an error message
    record: dict  # what the log says of the step, without the loss
    stop: bool
    bad_videos: int
    nan: bool
    inf: bool
    loss: float

    @property
    def finite(self) -> bool:
        return not (self.nan or self.inf)


class StepAgreement:
    def __init__(self, info: DistInfo):
        self.info = info
        self.pending = None

    def exchange(
        self,
        epoch: int,
        step: int,
        record: dict,
        stop: bool,
        bad_videos: int,
        loss: torch.Tensor,
        nonfinite: tuple[torch.Tensor, torch.Tensor],
    ) -> Agreed | None:
        """Start the all_reduce of this step's values; return the agreement on the previous step (None at first)."""
        previous = self.settle()
        device = self.info.device
        host = torch.tensor([float(stop), float(bad_videos)])
        values = torch.cat(
            [
                host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host,
                torch.stack([nonfinite[0].float(), nonfinite[1].float(), loss.detach().float()]),
            ]
        )
        work = dist.all_reduce(values, async_op=True) if self.info.enabled else None
        ready = None
        if device.type == "cuda":
            if work is not None:
                work.wait()  # on a GPU this only orders the streams; the host goes on
            values = values.to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        self.pending = (epoch, step, record, values, work, ready)
        return previous

    def settle(self) -> Agreed | None:
        """The agreement on the newest step not read yet, waiting for it (None if there is none)."""
        if self.pending is None:
            return None
        epoch, step, record, values, work, ready = self.pending
        self.pending = None
        if ready is not None:
            ready.synchronize()
        elif work is not None:
            work.wait()
        stop, bad, nan, inf, loss = values.tolist()
        return Agreed(epoch, step, record, stop > 0, round(bad), nan > 0, inf > 0, loss / self.info.world_size)
