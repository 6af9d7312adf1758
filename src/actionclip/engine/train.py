"""The training loop: one process or many under torchrun (DDP), CPU or GPU, resumable at any saved step.

Determinism: every epoch draws one seeded permutation of the data and one seed per sample; a sample's
augmentation and its prompt template come from its own seed, and dropout is re-seeded at each step. So a
run resumed from a checkpoint sees the same batches as an uninterrupted one, and a DDP run with
``gather_features`` sees the same global batches as one process with the same global batch size.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from actionclip.data.bad_samples import BadSample, SeededSamples, collate_skip_bad, fail_if_too_many
from actionclip.engine import distributed
from actionclip.engine.config import Config
from actionclip.engine.distributed import DistInfo
from actionclip.engine.evaluate import predict_dataset, summarize, write_report
from actionclip.engine.objectives import create_objective
from actionclip.engine.optim import build_optimizer, build_scheduler
from actionclip.engine.run_dir import (
    RunDirError,
    RunLock,
    newest_intact_checkpoint,
    record_config,
    remove_partial_files,
    resume_changes,
    save_checkpoint,
)
from actionclip.engine.signals import StopSignals, TrainingInterrupted, ignore_stop_signals
from actionclip.models import checkpoints
from actionclip.models.precision import cuda_has_native_bf16

RESUMABLE_KEYS = ("model", "optimizer", "scheduler", "scaler", "state")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the checkpoints written before are intact."""


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -math.inf
    steps_per_epoch: int = 0  # of the run that saved this state: a resume with other data or batches would differ


class EpochSampler(Sampler):
    """This rank's ``(index, sample_seed)`` pairs for one epoch: a seeded permutation cut to whole global
    batches (drop_last), dealt to ranks in turn, starting after ``skip`` of this rank's samples."""

    def __init__(self, size: int, global_batch: int, seed: int, epoch: int, info: DistInfo, skip: int = 0):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(size, generator=generator)
        seeds = torch.randint(2**62, (size,), generator=generator)
        usable = size // global_batch * global_batch
        mine = order[:usable][info.rank :: info.world_size]
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


def _single_labels(targets: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """Class indices; for multi-hot targets one positive class per sample, drawn from its seed."""
    if targets.ndim == 1:
        return targets.long()
    labels = []
    for target, seed in zip(targets, seeds.tolist()):
        positives = target.nonzero().flatten()
        labels.append(positives[seed % len(positives)] if len(positives) else torch.tensor(0))
    return torch.stack(labels).long()


class Trainer:
    def __init__(self, config: Config, model: torch.nn.Module, train_set: Dataset, val_set: Dataset | None, info: DistInfo):
        self.config, self.info = config, info
        self.output = Path(config.train.output)
        self.model = model.to(info.device)
        self.train_set, self.val_set = train_set, val_set
        self.class_names = list(train_set.classes)
        data, optim = config.data, config.optim
        self.global_batch = data.batch_size * info.world_size * optim.accumulation_steps
        self.steps_per_epoch = len(train_set) // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(train_set)} training videos are fewer than one global batch of {self.global_batch}")
        self.optimizer = build_optimizer(self.model, optim)
        self.scheduler = build_scheduler(self.optimizer, optim, self.steps_per_epoch)
        self.amp_dtype = autocast_dtype(config.train.precision, info.device)
        self.scaler = torch.amp.GradScaler(info.device.type, enabled=self.amp_dtype == torch.float16)
        train = config.train
        self.objective = create_objective(
            self.model, self.class_names, config.prompts.templates, train.objective, label_smoothing=train.label_smoothing,
            mixup_alpha=train.mixup_alpha, cutmix_alpha=train.cutmix_alpha, mixup_switch_prob=train.mixup_switch_prob,
            gather_features=train.gather_features, info=info,
        )
        self.ddp = DistributedDataParallel(self.model, device_ids=[info.device.index] if info.device.type == "cuda" else None) if info.enabled else self.model
        self.state = TrainState(steps_per_epoch=self.steps_per_epoch)
        self.metrics_file = self.output / "metrics.jsonl"
        self.tensorboard = None

    # ---- checkpoints -------------------------------------------------------------------------------
    def _checkpoint_dir(self) -> Path:
        return self.output / "checkpoints"

    def save_state(self) -> None:
        """A resumable checkpoint (model, optimizer, scheduler, scaler, position), written atomically."""
        if not self.info.is_main:
            return
        directory = self._checkpoint_dir()
        directory.mkdir(parents=True, exist_ok=True)
        state = self.state
        path = directory / f"epoch{state.epoch:03d}_step{state.global_step:08d}.pt"
        payload = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "state": vars(state).copy(),
        }
        save_checkpoint(payload, path)
        for old in sorted(directory.glob("*.pt"))[: -self.config.train.keep_last]:
            old.unlink()

    def checkpoints(self) -> list[Path]:
        """Resumable checkpoints, oldest first."""
        return sorted(self._checkpoint_dir().glob("*.pt"))

    def latest_checkpoint(self) -> Path | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def resume(self) -> None:
        """Continue from the newest checkpoint that loads and matches its digest (saying so if a newer one did not)."""
        _, payload = newest_intact_checkpoint(self.checkpoints(), self.info.device, RESUMABLE_KEYS,
                                              lambda line: tqdm.write(line, file=sys.stderr) if self.info.is_main else None)
        saved_steps = payload["state"].get("steps_per_epoch", 0)
        if saved_steps and saved_steps != self.steps_per_epoch:
            raise RunDirError(f"--resume: the run had {saved_steps} steps per epoch, this config and data give "
                              f"{self.steps_per_epoch}: the schedule would not continue; keep the data and batch sizes")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**{**payload["state"], "steps_per_epoch": self.steps_per_epoch})
        if self.info.is_main and self.metrics_file.exists():
            # Drop what the interrupted run logged after this checkpoint, so the log reads as one run.
            kept = [line for line in self.metrics_file.read_text().splitlines() if json.loads(line).get("step", 0) <= self.state.global_step]
            self.metrics_file.write_text("".join(line + "\n" for line in kept))

    # ---- logging -----------------------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if not self.info.is_main:
            return
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(key, value, record.get("step", 0))

    def _open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; metrics.jsonl always has everything
            return
        self.tensorboard = SummaryWriter(str(self.output / "tensorboard"))

    def train(self, resume: bool = False) -> dict:
        """Train from scratch, or with ``resume`` from the newest intact checkpoint in the output directory.

        The run directory is locked for the whole run. On SIGTERM, SIGINT or SIGUSR1 the step in progress is
        finished and saved, then ``TrainingInterrupted`` is raised (see engine/signals.py).
        """
        with contextlib.ExitStack() as stack:
            self._take_run_dir(stack, resume)
            stop = stack.enter_context(StopSignals())
            stack.callback(lambda: self.tensorboard.close() if self.tensorboard is not None else None)
            return self._train(stop)

    def _take_run_dir(self, stack: contextlib.ExitStack, resume: bool) -> None:
        """Lock the output directory (rank 0, telling the others the outcome), check that what was asked for
        (a new run, or a resume with an unchanged config) is possible, record the config, and resume."""
        config, info = self.config, self.info
        problem = None
        if info.is_main:
            try:
                stack.enter_context(RunLock(self.output))
            except (RunDirError, OSError) as error:
                problem = error
        problem = distributed.broadcast_object(problem, info)
        if problem is not None:
            raise problem
        latest = self.latest_checkpoint()
        if latest is not None and not resume:
            raise FileExistsError(f"{self.output} already has checkpoints ({latest.name}): pass --resume to continue that run, or choose another output")
        if resume and latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self._checkpoint_dir()}")
        saved_config = self.output / "config.yaml"
        if resume and saved_config.is_file():
            changes = resume_changes(saved_config, config)
            if changes:
                raise RunDirError(f"--resume: these settings differ from {saved_config} and would change the model or "
                                  f"the schedule: {'; '.join(changes)}. Put them back, or start a new run in another output")
        self._check_files_exist()
        distributed.barrier(info)
        if info.is_main:
            record_config(config, self.output, "resume" if resume else "start")
            remove_partial_files(self._checkpoint_dir())
            self._open_tensorboard()
        if latest is not None:
            self.resume()

    def _check_files_exist(self) -> None:
        """Fail before the first step if more training videos are missing than ``data.max_bad_fraction`` allows
        (datasets that are not lists of files have nothing to check)."""
        samples = getattr(self.train_set, "samples", [])
        missing = [BadSample(i, s.path, "no such file or folder") for i, s in enumerate(samples) if not os.path.exists(s.path)]
        fail_if_too_many(missing, len(samples), self.config.data.max_bad_fraction, "training videos", "data.max_bad_fraction")
        if missing and self.info.is_main:
            tqdm.write(f"warning: {len(missing)} training video(s) are missing and will be skipped, e.g. {missing[0].path}", file=sys.stderr)

    def _agree(self, stop: StopSignals, bad_count: int) -> tuple[bool, int]:
        """Whether any rank was asked to stop, and the bad videos of this epoch on all ranks together."""
        flags = torch.tensor([float(stop.received is not None), float(bad_count)], device=self.info.device)
        flags = distributed.all_reduce_mean(flags, self.info) * self.info.world_size
        return bool(flags[0] > 0), round(flags[1].item())

    def _stop(self, stop: StopSignals, saved: bool) -> None:
        if not saved:
            self.save_state()
            distributed.barrier(self.info)
        raise TrainingInterrupted(stop.received or "a signal to another rank", self.latest_checkpoint())

    def _train(self, stop: StopSignals) -> dict:
        config, info = self.config, self.info
        accumulation = config.optim.accumulation_steps
        last_eval: dict = {}
        dataset = SeededSamples(self.train_set)
        while self.state.epoch < config.optim.epochs:
            epoch = self.state.epoch
            sampler = EpochSampler(len(dataset), self.global_batch, config.train.seed, epoch, info,
                                   skip=self.state.step_in_epoch * config.data.batch_size * accumulation)
            loader = DataLoader(dataset, batch_size=config.data.batch_size, sampler=sampler, num_workers=config.data.workers,
                                drop_last=True, collate_fn=collate_skip_bad, worker_init_fn=ignore_stop_signals)
            bad_videos: list[BadSample] = []
            self.model.train()
            progress = tqdm(total=self.steps_per_epoch, initial=self.state.step_in_epoch, desc=f"epoch {epoch}", disable=not info.is_main)
            started, seen = time.perf_counter(), 0
            try:
                for micro_step, batch in enumerate(loader):
                    bad_videos.extend(batch.bad)
                    # Dropout draws depend on the step only, never on what ran before in this process.
                    torch.manual_seed(config.train.seed * 1_000_003 + self.state.global_step * accumulation + micro_step % accumulation)
                    with torch.autocast(info.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                        labels = _single_labels(batch.labels, batch.seeds).to(info.device)
                        loss = self.objective(self.ddp, batch.frames.to(info.device, non_blocking=True), labels, seeds=batch.seeds)
                    if not torch.isfinite(loss):
                        raise TrainingDiverged(
                            f"loss is {loss.item()} at epoch {epoch}, step {self.state.global_step}; "
                            f"the last good checkpoint is {self.latest_checkpoint()}"
                        )
                    self.scaler.scale(loss / accumulation).backward()
                    seen += len(labels)
                    if (micro_step + 1) % accumulation:
                        continue
                    if config.optim.grad_clip:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    self.state.global_step += 1
                    self.state.step_in_epoch += 1
                    progress.update()
                    loss_value = distributed.all_reduce_mean(loss.detach(), info).item()
                    lr = self.optimizer.param_groups[0]["lr"]
                    rate = seen * info.world_size / (time.perf_counter() - started)
                    progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr:.2e}", videos_per_s=f"{rate:.1f}")
                    if self.state.global_step % config.train.log_every == 0 or self.state.step_in_epoch == self.steps_per_epoch:
                        self.log({"step": self.state.global_step, "epoch": epoch, "loss": loss_value, "lr": lr, "videos_per_s": rate})
                    stopping, bad_count = self._agree(stop, len(bad_videos))
                    if bad_count > config.data.max_bad_fraction * len(self.train_set):
                        self.save_state()  # what was learnt so far is kept; the list of bad videos follows
                        self.report_bad_videos(epoch, bad_videos)
                    if stopping:
                        self._stop(stop, saved=False)
                    every = config.train.save_every_steps
                    if every and self.state.global_step % every == 0 and self.state.step_in_epoch < self.steps_per_epoch:
                        self.save_state()
                    if config.train.max_steps and self.state.global_step >= config.train.max_steps:
                        break
            finally:  # also when stopping: the bar is closed before the last message
                progress.close()
            self.report_bad_videos(epoch, bad_videos)
            stopped_early = self.state.step_in_epoch < self.steps_per_epoch
            if not stopped_early:
                self.state.epoch += 1
                self.state.step_in_epoch = 0
            last_eval = self.end_of_epoch(epoch, final=stopped_early or self.state.epoch == config.optim.epochs)
            if stopped_early:
                break
            if self._agree(stop, 0)[0]:
                self._stop(stop, saved=True)
        return last_eval

    def report_bad_videos(self, epoch: int, bad_videos: list[BadSample]) -> None:
        """Log this epoch's unreadable videos (all ranks); fail if more than ``data.max_bad_fraction`` of the data."""
        gathered = distributed.gather_objects(bad_videos, self.info)
        bad = sorted({(b.path, b.reason): b for part in gathered for b in part}.values(), key=lambda b: (b.path, b.reason))
        if not bad:
            return
        if self.info.is_main:
            self.log({"step": self.state.global_step, "epoch": epoch, "bad_videos": len(bad)})
            listed = "\n".join(f"  {b.path}: {b.reason}" for b in bad)
            tqdm.write(f"epoch {epoch}: skipped {len(bad)} unreadable video(s):\n{listed}", file=sys.stderr)
        fail_if_too_many(bad, len(self.train_set), self.config.data.max_bad_fraction, "training videos", "data.max_bad_fraction")

    def end_of_epoch(self, epoch: int, final: bool) -> dict:
        config = self.config
        summary: dict = {}
        if self.val_set is not None and (final or (epoch + 1) % config.train.eval_every == 0):
            result = predict_dataset(
                self.model, self.val_set, self.class_names, templates=config.prompts.templates, ensemble=config.prompts.ensemble,
                batch_size=config.eval.batch_size, workers=config.data.workers, info=self.info, autocast_dtype=self.amp_dtype,
            )
            summary = summarize(result)
            if self.info.is_main:
                write_report(self.output, summary, result, self.class_names)
                scores = {f"val_{k}": v for k, v in summary.items() if k != "unreadable"}
                self.log({"step": self.state.global_step, "epoch": epoch, **scores, "val_unreadable": len(result.unreadable)})
            metric = summary.get("top1", summary.get("mAP"))
            if self.info.is_main and metric > self.state.best:
                self.state.best = metric
                checkpoints.save(self.model, self.output / "best")
        if self.info.is_main:
            checkpoints.save(self.model, self.output / "last")
        self.save_state()
        distributed.barrier(self.info)
        return summary
