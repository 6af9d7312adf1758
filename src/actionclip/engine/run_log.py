"""What a training run writes down about itself: ``metrics.jsonl`` (and TensorBoard where it is installed), and the
training videos it could not find or read, failing the run past ``data.max_bad_fraction``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from torch.utils.data import Dataset
from tqdm import tqdm

from actionclip.data.bad_samples import BadSample, fail_if_too_many
from actionclip.host import distributed
from actionclip.host.distributed import DistInfo


class RunLog:
    """``metrics.jsonl`` always, TensorBoard when installed; written by rank 0 alone."""

    def __init__(self, output: Path, is_main: bool):
        self.output = output
        self.metrics_file = output / "metrics.jsonl"
        self.is_main = is_main
        self.tensorboard = None

    def open_tensorboard(self) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional; metrics.jsonl always has everything
            return
        self.tensorboard = SummaryWriter(str(self.output / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.is_main:
            return
        with open(self.metrics_file, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tensorboard.add_scalar(key, value, record.get("step", 0))

    def truncate_after(self, step: int) -> None:
        """Drop what an interrupted run logged after the checkpoint it resumes from, so the log reads as one run."""
        if self.is_main and self.metrics_file.exists():
            kept = [line for line in self.metrics_file.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
            self.metrics_file.write_text("".join(line + "\n" for line in kept))

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def check_files_exist(train_set: Dataset, max_bad_fraction: float, info: DistInfo) -> None:
    """Fail before the first step if more training videos are missing than ``data.max_bad_fraction`` allows
    (datasets that are not lists of files have nothing to check)."""
    samples = getattr(train_set, "samples", [])
    # Rank 0 alone walks the files (240k on a shared file system), as it alone built the datasets.
    missing = distributed.made_on_main(
        lambda: [BadSample(i, s.path, "no such file or folder") for i, s in enumerate(samples) if not os.path.exists(s.path)], info
    )
    fail_if_too_many(missing, len(samples), max_bad_fraction, "training videos", "data.max_bad_fraction")
    if missing and info.is_main:
        tqdm.write(f"warning: {len(missing)} training video(s) are missing and will be skipped, e.g. {missing[0].path}", file=sys.stderr)


def report_bad_videos(
    bad_videos: list[BadSample], run_log: RunLog, step: int, epoch: int, dataset_size: int, max_bad_fraction: float, info: DistInfo
) -> None:
    """Log an epoch's unreadable videos (all ranks'); fail if more than ``data.max_bad_fraction`` of the data."""
    gathered = distributed.gather_objects(bad_videos, info)
    bad = sorted({(b.path, b.reason): b for part in gathered for b in part}.values(), key=lambda b: (b.path, b.reason))
    if not bad:
        return
    if info.is_main:
        run_log.write({"step": step, "epoch": epoch, "bad_videos": len(bad)})
        listed = "\n".join(f"  {b.path}: {b.reason}" for b in bad)
        tqdm.write(f"epoch {epoch}: skipped {len(bad)} unreadable video(s):\n{listed}", file=sys.stderr)
    fail_if_too_many(bad, dataset_size, max_bad_fraction, "training videos", "data.max_bad_fraction")
