"""``actionclip demo``: pre-train, prompt, fine-tune, end to end on generated data, offline on a CPU in minutes.

The world of shapes is ``world.py``, how each model is trained ``recipes.py``, what is measured ``report.py``; this
module runs it: the two tiny CLIPs pre-train side by side in worker processes, and each tower's variants fine-tune
and evaluate as soon as it is ready. Results go to ``results.json`` and ``results.png``.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import platform
import resource
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from actionclip.data.synthetic import class_text
from actionclip.demo.recipes import MODEL_NAMES, VARIANTS, DemoConfig, build_variant, finetune, model_config, pretrain_tower
from actionclip.demo.report import bf16_agreement, check_pretrained, class_probabilities, format_table, plot_results, pretrain_key, scores
from actionclip.demo.world import HELD_OUT, all_classes, render_videos, splits
from actionclip.engine.pretrain import check_captions_fit, save_clip
from actionclip.models.backbone import register_model_config
from actionclip.models.build import ARCHITECTURES
from actionclip.models.precision import prepare_for_inference
from actionclip.prompts import ACTIONCLIP_TEMPLATES, fill_templates


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def _since(start: tuple[float, float]) -> dict:
    wall, cpu = _clock()
    return {"wall_s": round(wall - start[0], 2), "cpu_s": round(cpu - start[1], 2)}


def _loadavg() -> str | None:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:  # not Linux
        return None


def pretrain_step(config: DemoConfig, output: Path, context_length: int, tower: str, log) -> tuple[Path, dict]:
    """Pre-train the tiny CLIP with the image tower ``tower`` into ``output/pretrain`` (ResNet) or
    ``output/pretrain_vit``; returns its ``clip.pt`` and the check's figures."""
    start = _clock()
    clip, losses = pretrain_tower(config, context_length, tower, log)
    clip_config = model_config(context_length, tower)
    summary = {
        "image_tower": tower,
        **check_pretrained(clip, clip_config, config.check_images, config.seed),
        "final_loss": float(np.mean(losses[-20:])),
        **_since(start),
    }
    path = save_clip(clip, clip_config, output / pretrain_key(tower), {"losses": losses, **summary})
    log(
        f"pre-trained tiny CLIP ({tower}): single-image zero-shot colour x shape {summary['single_image_zero_shot_top1']:.1%} "
        f"(chance {summary['single_image_chance']:.1%}), motion-trail images over all {len(all_classes())} classes "
        f"{summary['motion_trail_zero_shot_top1']:.1%} ({summary['wall_s']:.0f} s)"
    )
    return path, summary


def run_variant(key: str, clip_path: Path, config: DemoConfig, log: Callable[[str], None] = print) -> dict:
    """Fine-tune and evaluate one variant. Its videos are rendered here (a second or so) from the seed, so a
    worker process needs nothing but the pre-trained file."""
    variant, start = VARIANTS[key], _clock()
    train_classes, unseen_classes = splits()
    train = render_videos(train_classes, config.train_draws, config.seed, stream=3)
    test_seen = render_videos(train_classes, config.test_draws, config.seed, stream=4)
    model = build_variant(variant, clip_path, len(train_classes), config.seed)
    losses = finetune(model, variant, train, config, config.seed)
    test_sets = {"supervised": test_seen}
    if not ARCHITECTURES[variant.arch].has_class_head:  # a linear head has no output for classes it was not trained on
        test_sets["zero_shot"] = render_videos(unseen_classes, config.test_draws, config.seed, stream=4)
        classes = all_classes()
        # Generalised zero-shot: the unseen videos scored against all 72 classes, seen ones included.
        test_sets["generalized_zero_shot"] = replace(
            test_sets["zero_shot"],
            classes=classes,
            labels=torch.tensor([classes.index(unseen_classes[i]) for i in test_sets["zero_shot"].labels]),
        )
    probabilities = {name: class_probabilities(model, variant, videos) for name, videos in test_sets.items()}
    predicted = {name: p.argmax(dim=1) for name, p in probabilities.items()}
    # The same model with bf16 weights (actionclip.models.precision, as predict --precision bf16): same top-1?
    low = prepare_for_inference(copy.deepcopy(model), "bf16")
    agreement, flipped_margin = bf16_agreement(
        [(probabilities[name], class_probabilities(low, variant, videos)) for name, videos in test_sets.items()]
    )
    seen = scores(predicted["supervised"], test_seen)
    row = {
        "supervised_top1": seen["top1"],
        "zero_shot_top1": None,
        "chance": {"supervised_top1": 1 / len(train_classes), "zero_shot_top1": 1 / len(unseen_classes)},
        "supervised_appearance": seen["appearance"],
        "supervised_motion": seen["motion"],
        "final_loss": float(np.mean(losses[-20:])),
        "paper": variant.paper,
        "bf16_top1_agreement": agreement,
        "bf16_largest_flipped_margin": flipped_margin,
    }
    if "zero_shot" in test_sets:
        unseen = scores(predicted["zero_shot"], test_sets["zero_shot"])
        general = scores(predicted["generalized_zero_shot"], test_sets["generalized_zero_shot"])
        row.update(
            zero_shot_top1=unseen["top1"],
            zero_shot_appearance=unseen["appearance"],
            zero_shot_motion=unseen["motion"],
            generalized_zero_shot_top1=general["top1"],
        )
        row["chance"]["generalized_zero_shot_top1"] = 1 / len(classes)
    row.update(_since(start))
    zero_shot = "n/a" if row["zero_shot_top1"] is None else f"{row['zero_shot_top1']:.1%}"
    log(f"{key}: supervised {row['supervised_top1']:.1%}, zero-shot {zero_shot} ({row['wall_s']:.0f} s)")
    return row


def in_worker(function: Callable, *args):
    """``function(*args, log=...)`` in a worker process: one thread and deterministic kernels, as in the parent
    that forked it."""
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    return function(*args, log=lambda line: print(line, flush=True))


def run_demo(output: str | Path, config: DemoConfig = DemoConfig(), log: Callable[[str], None] = print) -> dict:
    """Run the demo into ``output`` (results.json, results.png, the pre-trained CLIP); returns the results.

    Every model trains on one thread; ``config.threads`` > 1 fine-tunes that many variants at once in worker
    processes. One thread per model keeps the numbers independent of ``threads`` and avoids OpenMP threads
    spinning against other jobs on a shared machine.
    """
    unknown = [v for v in config.variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    output = Path(output)
    output.mkdir(parents=True, exist_ok=True)
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        return _run(output, config, log)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def register_models() -> int:
    """Register the tiny CLIPs of ``MODEL_NAMES`` (which `run_variant` builds) with the context length that fits the
    longest prompt or caption, as nothing may be cut; returns that length."""
    labels = [class_text(*c) for c in all_classes()]
    context_length = check_captions_fit(fill_templates(ACTIONCLIP_TEMPLATES, labels) + labels, 77)
    for tower, name in MODEL_NAMES.items():
        register_model_config(name, model_config(context_length, tower))
    return context_length


def _run(output: Path, config: DemoConfig, log) -> dict:
    start, load_before = _clock(), _loadavg()
    context_length = register_models()
    towers = [tower for tower in MODEL_NAMES if any(VARIANTS[key].tower == tower for key in config.variants)]
    pretrained: dict[str, tuple[Path, dict]] = {}

    # Forked workers (spawned ones would re-run an unguarded __main__, ``python -m actionclip`` included); where
    # there is no fork (Windows) everything runs one after the other, with the same results. The towers pre-train
    # side by side, and each tower's variants start as soon as it is ready.
    jobs = len(towers) + len(config.variants)
    if config.threads > 1 and jobs > 2 and "fork" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(min(config.threads, jobs), mp_context=context) as pool:
            pretraining = {pool.submit(in_worker, pretrain_step, config, output, context_length, tower): tower for tower in towers}
            variant_jobs = {}
            for done in as_completed(pretraining):
                tower = pretraining[done]
                pretrained[tower] = done.result()
                for key in config.variants:
                    if VARIANTS[key].tower == tower:
                        variant_jobs[key] = pool.submit(in_worker, run_variant, key, pretrained[tower][0], config)
            rows = [variant_jobs[key].result() for key in config.variants]
        cpu_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime + resource.getrusage(resource.RUSAGE_CHILDREN).ru_stime
    else:
        for tower in towers:
            pretrained[tower] = pretrain_step(config, output, context_length, tower, log)
        rows = [run_variant(key, pretrained[VARIANTS[key].tower][0], config, log) for key in config.variants]
        cpu_children = 0.0
    results: dict = dict(zip(config.variants, rows))

    train_classes, unseen_classes = splits()
    total = _since(start)
    for tower, (_, summary) in pretrained.items():
        results[pretrain_key(tower)] = summary
    results["run"] = {
        "config": asdict(config),
        "classes": {"train": len(train_classes), "unseen": len(unseen_classes), "held_out_pairs": [f"{c} {s}" for c, s in HELD_OUT]},
        "videos_per_class": {"train": config.train_draws, "test": config.test_draws},
        "context_length": context_length,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, {config.threads} process(es) x 1 thread",
        "loadavg_start": load_before,
        "loadavg_end": _loadavg(),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "wall_s": total["wall_s"],
        "cpu_s": round(total["cpu_s"] + cpu_children, 2),  # this process and its workers
    }
    (output / "results.json").write_text(json.dumps(results, indent=2))
    plot_results(results, output / "results.png")
    log(format_table(results))
    return results
