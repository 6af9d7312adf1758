"""PNG plots from run directories: training curves, and accuracy against shots for few-shot runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def read_metrics(run: str | Path) -> list[dict]:
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise FileNotFoundError(f"{run}: no metrics.jsonl (not a training run directory)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_training(run: str | Path, output: str | Path | None = None) -> Path:
    """Loss, learning rate and validation accuracy against the step, as ``<run>/training.png``."""
    records = read_metrics(run)
    steps = [r for r in records if "loss" in r]
    evals = [r for r in records if "val_top1" in r or "val_mAP" in r]
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in steps], [r["loss"] for r in steps])
    axes[0].set(title="training loss", xlabel="step")
    axes[1].plot([r["step"] for r in steps], [r["lr"] for r in steps])
    axes[1].set(title="learning rate (first group)", xlabel="step")
    for key in ("val_top1", "val_top5", "val_mean_class_acc", "val_mAP"):
        points = [(r["step"], r[key]) for r in evals if key in r]
        if points:
            axes[2].plot(*zip(*points), marker="o", label=key[4:])
    axes[2].set(title="validation", xlabel="step", ylabel="%")
    if evals:
        axes[2].legend()
    fig.tight_layout()
    path = Path(output or Path(run) / "training.png")
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def shots_of(run: str | Path) -> int:
    """K of a few-shot run: ``data.options.shots``, else the ``few_shot_K`` in its training list's name."""
    config = yaml.safe_load((Path(run) / "config.yaml").read_text())
    data = config.get("data", {})
    if data.get("options", {}).get("shots"):
        return int(data["options"]["shots"])
    match = re.search(r"few_shot_(\d+)", str(data.get("train", "")))
    if not match:
        raise ValueError(f"{run}: cannot tell K (no data.options.shots and no few_shot_K training list)")
    return int(match.group(1))


def plot_few_shot(runs: list[str | Path], output: str | Path, metric: str = "top1") -> Path:
    """Final ``metric`` of each run against its K, one line per dataset (the runs' ``data.format``/root)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for run in runs:
        summary = json.loads((Path(run) / "eval.json").read_text())
        config = yaml.safe_load((Path(run) / "config.yaml").read_text())
        label = Path(config["data"].get("root", "")).parent.name or config["data"].get("format", "data")
        curves.setdefault(label, []).append((shots_of(run), summary[metric]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(curves.items()):
        points.sort()
        ax.plot([k for k, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set(xlabel="videos per class (K)", ylabel=f"{metric} (%)", title="few-shot accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return Path(output)
