"""The training loop: one process or many under torchrun (DDP), CPU or GPU, resumable at any saved step.

Determinism: every epoch draws one seeded permutation of the data and one seed per sample; a sample's
augmentation and its prompt template come from its own seed, and dropout is re-seeded at each step (differently on
each rank). So a run resumed from a checkpoint sees the same batches as an uninterrupted one, and a DDP run (whose
``gather_features`` is on by default) sees the same global batches as one process with the same global batch size,
so a run may also be resumed with another number of processes that keeps its global batch.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from actionclip.checkpoints import ours as checkpoints
from actionclip.data.bad_samples import BadSample, SeededSamples
from actionclip.data.transforms import frames_to_device
from actionclip.engine.config import Config
from actionclip.engine.evaluate import evaluation_loader, predict_dataset, summarize, write_report
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
from actionclip.engine.run_log import RunLog, check_files_exist, report_bad_videos
from actionclip.engine.signals import StopSignals, TrainingInterrupted
from actionclip.engine.steps import Agreed, EpochSampler, StepAgreement, autocast_dtype, step_seed, train_loader
from actionclip.host import distributed
from actionclip.host.distributed import DistInfo

RESUMABLE_KEYS = ("model", "optimizer", "scheduler", "scaler", "state")
# fp16: GradScaler skips a step whose loss overflowed; this many in a row is divergence, not an overflow.
FP16_SKIPS_IN_A_ROW = 10


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the checkpoints written before are intact."""


@dataclass
class TrainState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float = -math.inf
    steps_per_epoch: int = 0  # of the run that saved this state: a resume with other data or batches would differ
    global_batch: int = 0  # batch size x processes x accumulation steps; a resume may change the factors, not this


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
            self.model,
            self.class_names,
            config.prompts.templates,
            train.objective,
            label_smoothing=train.label_smoothing,
            mixup_alpha=train.mixup_alpha,
            cutmix_alpha=train.cutmix_alpha,
            mixup_switch_prob=train.mixup_switch_prob,
            gather_features=train.gather_features,
            info=info,
        )
        self.ddp = (
            DistributedDataParallel(self.model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
            if info.enabled
            else self.model
        )
        self.state = TrainState(steps_per_epoch=self.steps_per_epoch, global_batch=self.global_batch)
        self.agreement = StepAgreement(info)
        self.skipped_in_a_row = 0
        self.run_log = RunLog(self.output, info.is_main)
        self.val_loader: DataLoader | None = None

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
        _, payload = newest_intact_checkpoint(
            self.checkpoints(),
            self.info.device,
            RESUMABLE_KEYS,
            lambda line: tqdm.write(line, file=sys.stderr) if self.info.is_main else None,
        )
        saved_batch = payload["state"].get("global_batch", 0)
        if saved_batch and saved_batch != self.global_batch:
            data, optim = self.config.data, self.config.optim
            raise RunDirError(
                f"--resume: the run's global batch was {saved_batch} videos, this one's is {self.global_batch} "
                f"(data.batch_size {data.batch_size} x {self.info.world_size} processes x optim.accumulation_steps "
                f"{optim.accumulation_steps}): another number of processes must keep the global batch"
            )
        saved_steps = payload["state"].get("steps_per_epoch", 0)
        if saved_steps and saved_steps != self.steps_per_epoch:
            raise RunDirError(
                f"--resume: the run had {saved_steps} steps per epoch, this config and data give "
                f"{self.steps_per_epoch}: the schedule would not continue; keep the data and batch sizes"
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.scheduler.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        self.state = TrainState(**{**payload["state"], "steps_per_epoch": self.steps_per_epoch, "global_batch": self.global_batch})
        self.run_log.truncate_after(self.state.global_step)

    # ---- logging -----------------------------------------------------------------------------------
    def train(self, resume: bool = False) -> dict:
        """Train from scratch, or with ``resume`` from the newest intact checkpoint in the output directory.

        The run directory is locked for the whole run. On SIGTERM, SIGINT or SIGUSR1 the step in progress is
        finished and saved, then ``TrainingInterrupted`` is raised (see engine/signals.py).
        """
        with contextlib.ExitStack() as stack:
            self._take_run_dir(stack, resume)
            stop = stack.enter_context(StopSignals())
            stack.callback(self.run_log.close)
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
            raise FileExistsError(
                f"{self.output} already has checkpoints ({latest.name}): pass --resume to continue that run, or choose another output"
            )
        if resume and latest is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {self._checkpoint_dir()}")
        saved_config = self.output / "config.yaml"
        if resume and saved_config.is_file():
            changes = resume_changes(saved_config, config)
            if changes:
                raise RunDirError(
                    f"--resume: these settings differ from {saved_config} and would change the model or "
                    f"the schedule: {'; '.join(changes)}. Put them back, or start a new run in another output"
                )
        check_files_exist(self.train_set, self.config.data.max_bad_fraction, self.info)
        distributed.barrier(info)
        if info.is_main:
            record_config(config, self.output, "resume" if resume else "start")
            remove_partial_files(self._checkpoint_dir())
            self.run_log.open_tensorboard()
        if latest is not None:
            self.resume()

    def _agree_now(self, stop: StopSignals) -> bool:
        """Whether any rank was asked to stop (between steps, where nothing is pending)."""
        self.agreement.exchange(
            self.state.epoch,
            self.state.global_step,
            {},
            stop.received is not None,
            0,
            torch.zeros((), device=self.info.device),
            (torch.zeros((), dtype=torch.bool, device=self.info.device),) * 2,
        )
        return self.agreement.settle().stop

    def _record(self, agreed: Agreed | None, progress: tqdm) -> None:
        """Log an agreed step, or raise ``TrainingDiverged`` on every rank alike if its loss was not finite on any."""
        if agreed is None:
            return
        skipped = not agreed.finite and self.scaler.is_enabled()  # GradScaler skipped it
        self.skipped_in_a_row = self.skipped_in_a_row + 1 if skipped else 0
        if not agreed.finite and (not skipped or self.skipped_in_a_row >= FP16_SKIPS_IN_A_ROW):
            what = "nan" if agreed.nan else "inf"
            repeated = f" for {self.skipped_in_a_row} steps in a row" if skipped else ""
            raise TrainingDiverged(
                f"loss is {what}{repeated} at epoch {agreed.epoch}, step {agreed.step}; "
                f"the last good checkpoint is {self.latest_checkpoint()}"
            )
        progress.set_postfix(
            loss=f"{agreed.loss:.4f}", lr=f"{agreed.record['lr']:.2e}", videos_per_s=f"{agreed.record['videos_per_s']:.1f}"
        )
        if agreed.record.pop("log"):
            self.run_log.write({"step": agreed.step + 1, "epoch": agreed.epoch, "loss": agreed.loss, **agreed.record})

    def _save_checked(self, progress: tqdm) -> None:
        """Save the state once the newest step is known to be finite on every rank."""
        self._record(self.agreement.settle(), progress)
        self.save_state()

    def _stop(self, stop: StopSignals, progress: tqdm | None = None) -> None:
        if progress is not None:
            self._save_checked(progress)
            distributed.barrier(self.info)
        raise TrainingInterrupted(stop.received or "a signal to another rank", self.latest_checkpoint())

    def _train(self, stop: StopSignals) -> dict:
        config, info = self.config, self.info
        accumulation = config.optim.accumulation_steps
        last_eval: dict = {}
        sampler = EpochSampler(len(self.train_set), self.global_batch, config.train.seed, self.state.epoch, info)
        loader = train_loader(SeededSamples(self.train_set), sampler, config.data.batch_size, config.data.workers, info.device)
        while self.state.epoch < config.optim.epochs:
            epoch = self.state.epoch
            sampler.set_epoch(epoch, skip=self.state.step_in_epoch * config.data.batch_size * accumulation)
            bad_videos: list[BadSample] = []
            self.model.train()
            progress = tqdm(total=self.steps_per_epoch, initial=self.state.step_in_epoch, desc=f"epoch {epoch}", disable=not info.is_main)
            started, seen = time.perf_counter(), 0
            nan = inf = torch.zeros((), dtype=torch.bool, device=info.device)
            try:
                for micro_step, batch in enumerate(loader):
                    bad_videos.extend(batch.bad)
                    last_micro = (micro_step + 1) % accumulation == 0
                    # Dropout and mixing draws depend on the step and the rank only, never on what ran before here.
                    torch.manual_seed(
                        step_seed(config.train.seed, self.state.global_step * accumulation + micro_step % accumulation, info.rank)
                    )
                    # DDP all-reduces the gradients only at the last micro-step of an optimizer step.
                    with self.ddp.no_sync() if info.enabled and not last_micro else contextlib.nullcontext():
                        with torch.autocast(info.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                            labels = _single_labels(batch.labels, batch.seeds)  # on the CPU: the objective moves them
                            frames = frames_to_device(batch.frames, info.device, getattr(self.train_set, "normalization", "clip"))
                            loss = self.objective(self.ddp, frames, labels, seeds=batch.seeds)
                        # Flags on the device, read with the step's agreement: no wait for the GPU here.
                        nan, inf = nan | loss.isnan(), inf | loss.isinf()
                        self.scaler.scale(loss / accumulation).backward()
                    seen += len(labels)
                    if not last_micro:
                        continue
                    if config.optim.grad_clip:
                        self.scaler.unscale_(self.optimizer)
                        torch.nn.utils.clip_grad_norm_(self.model.parameters(), config.optim.grad_clip)
                    self.scaler.step(self.optimizer)
                    self.scaler.update()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.scheduler.step()
                    step = self.state.global_step
                    self.state.global_step += 1
                    self.state.step_in_epoch += 1
                    progress.update()
                    record = {
                        "lr": self.optimizer.param_groups[0]["lr"],
                        "videos_per_s": seen * info.world_size / (time.perf_counter() - started),
                        "log": self.state.global_step % config.train.log_every == 0 or self.state.step_in_epoch == self.steps_per_epoch,
                    }
                    agreed = self.agreement.exchange(epoch, step, record, stop.received is not None, len(bad_videos), loss, (nan, inf))
                    nan = inf = torch.zeros((), dtype=torch.bool, device=info.device)
                    self._record(agreed, progress)
                    if agreed is not None and agreed.bad_videos > config.data.max_bad_fraction * len(self.train_set):
                        self._save_checked(progress)  # what was learnt so far is kept; the list of bad videos follows
                        self._report_bad_videos(epoch, bad_videos)
                    if agreed is not None and agreed.stop:
                        self._stop(stop, progress)
                    every = config.train.save_every_steps
                    if every and self.state.global_step % every == 0 and self.state.step_in_epoch < self.steps_per_epoch:
                        self._save_checked(progress)
                    if config.train.max_steps and self.state.global_step >= config.train.max_steps:
                        break
                agreed = self.agreement.settle()
                self._record(agreed, progress)
                if agreed is not None and agreed.stop:
                    self._stop(stop, progress)
            finally:  # also when stopping: the bar is closed before the last message
                progress.close()
            self._report_bad_videos(epoch, bad_videos)
            stopped_early = self.state.step_in_epoch < self.steps_per_epoch
            if not stopped_early:
                self.state.epoch += 1
                self.state.step_in_epoch = 0
            last_eval = self.end_of_epoch(epoch, final=stopped_early or self.state.epoch == config.optim.epochs)
            if stopped_early:
                break
            if self._agree_now(stop):
                self._stop(stop)
        return last_eval

    def _report_bad_videos(self, epoch: int, bad_videos: list[BadSample]) -> None:
        report_bad_videos(
            bad_videos, self.run_log, self.state.global_step, epoch, len(self.train_set), self.config.data.max_bad_fraction, self.info
        )

    def _val_loader(self) -> DataLoader:
        """The validation loader, made at the first evaluation; its workers serve every later one."""
        if self.val_loader is None:
            self.val_loader = evaluation_loader(
                self.val_set, self.config.eval.batch_size, self.config.data.workers, self.info, persistent=True
            )
        return self.val_loader

    def end_of_epoch(self, epoch: int, final: bool) -> dict:
        config = self.config
        summary: dict = {}
        if self.val_set is not None and (final or (epoch + 1) % config.train.eval_every == 0):
            result = predict_dataset(
                self.model,
                self.val_set,
                self.class_names,
                templates=config.prompts.templates,
                ensemble=config.prompts.ensemble,
                info=self.info,
                autocast_dtype=self.amp_dtype,
                loader=self._val_loader(),
            )
            summary = summarize(result)
            metric = summary.get("top1", summary.get("mAP"))
            if self.info.is_main and metric > self.state.best:
                self.state.best = metric
                checkpoints.save(self.model, self.output / "best")
        if self.info.is_main:
            checkpoints.save(self.model, self.output / "last")
        # The epoch is saved before anything else can fail (a report's plot, a full disk): hours of training are kept.
        self.save_state()
        if summary and self.info.is_main:
            write_report(self.output, summary, result, self.class_names)
            scores = {f"val_{k}": v for k, v in summary.items() if k != "unreadable"}
            self.run_log.write({"step": self.state.global_step, "epoch": epoch, **scores, "val_unreadable": len(result.unreadable)})
        distributed.barrier(self.info)
        return summary
