"""One command to check a GPU machine before the real workload (Kinetics-400, fp16/bf16, 10x3 testing). It prints ONE
JSON summary and keeps to an 8-minute budget on one GPU: the CUDA tests are stopped 90 s before its end, and no
throughput figure is started past it.

- ``environment``: versions, and the GPU's name and memory;
- ``cpu_smoke``: a training step of a tiny model on the CPU (the package imports and learns);
- ``cuda_tests``: ``pytest -m cuda tests/test_cuda.py``, each test's outcome: fp16 (GradScaler) and bf16 training
  steps, torchrun with one NCCL process, ``predict`` and a 10x3 evaluation of ViT-B/32 under stated peak-memory
  bounds, gradient checkpointing's saving, the benchmark's CPU time;
- ``throughput``: ``actionclip benchmark``'s model-only videos/s of ViT-B/32 and ViT-B/16, Transf, 8 frames, random
  weights, in fp16 and bf16, beside Table 7 of the paper (one RTX 3090, single view: 144.7 and 43.2 videos/s; the paper
  gives neither the precision nor the batch size).

Without a GPU it says so and runs what a CPU allows (the CUDA tests are then collected and skipped). A check that fails
is reported in the JSON with its error; the exit status is 1 if any check failed, else 0.

    python benchmarks/gpu_check.py [--batch-size 16] [--iterations 10]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# This checkout's package, whatever else is installed (the machine may have none).
sys.path.insert(0, str(REPO / "src"))

import torch  # noqa: E402 (after the path insert above)

import actionclip  # noqa: E402
from actionclip.benchmark.throughput import benchmark  # noqa: E402
from actionclip.losses import kl_contrastive_loss  # noqa: E402

BUDGET_S = 8 * 60
# Table 7: ActionCLIP, Transf, 8 frames, one view, on one NVIDIA GeForce RTX 3090.
PAPER_VIDEOS_PER_S = {"ViT-B-32": 144.7, "ViT-B-16": 43.2}


def environment() -> dict:
    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "actionclip": actionclip.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cpu_threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        info.update(
            gpu=properties.name,
            gpu_memory_gib=round(properties.total_memory / 2**30, 1),
            cuda=torch.version.cuda,
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return info


def cpu_smoke() -> dict:
    """One optimizer step of the tiny CLIP on 2 random videos: the loss is finite and the weights move."""
    torch.manual_seed(0)
    model = actionclip.create_model("actionclip-tiny-vit", visual_prompt="Transf", num_frames=4, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = model.video.temporal.frame_position_embeddings.weight.detach().clone()
    logits_v, logits_t = model(torch.randn(2, 4, 3, 32, 32), model.tokenize(["a video of a circle", "a video of a square"]))
    loss = kl_contrastive_loss(logits_v, logits_t, torch.tensor([0, 1]))
    loss.backward()
    optimizer.step()
    moved = not torch.equal(before, model.video.temporal.frame_position_embeddings.weight)
    if not (torch.isfinite(loss) and moved):
        raise RuntimeError(f"loss {loss.item()}, weights moved: {moved}")
    return {"loss": round(loss.item(), 4)}


def cuda_tests(timeout_s: float) -> dict:
    """``pytest -m cuda`` on this checkout's tests, each test's outcome read from its JUnit report."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
        command = [
            sys.executable,
            "-m",
            "pytest",
            "-m",
            "cuda",
            "tests/test_cuda.py",
            "-q",
            "-p",
            "no:cacheprovider",
            f"--basetemp={Path(folder) / 'tmp'}",
            f"--junitxml={report}",
        ]
        try:
            done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"pytest -m cuda did not finish in {timeout_s:.0f} s") from None
        if not report.is_file():
            raise RuntimeError(f"pytest exited {done.returncode} without a report: {(done.stdout + done.stderr)[-1500:]}")
        tests = {}
        for case in ET.parse(report).iter("testcase"):
            outcome, message = "passed", None
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome, message = ("skipped" if child.tag == "skipped" else "failed"), (child.get("message") or "")[:500]
            tests[case.get("name")] = {
                "outcome": outcome,
                "seconds": round(float(case.get("time", 0)), 1),
                **({"message": message} if message else {}),
            }
    counts = {outcome: sum(t["outcome"] == outcome for t in tests.values()) for outcome in ("passed", "failed", "skipped")}
    if counts["failed"] or not tests:
        raise RuntimeError(f"{counts['failed']} of {len(tests)} CUDA tests failed: " + json.dumps(tests))
    return {**counts, "tests": tests}


def throughput(model_name: str, precision: str, batch_size: int, iterations: int) -> dict:
    result = benchmark(model_name, "Transf", frames=8, batch_size=batch_size, device="cuda", iterations=iterations, precision=precision)
    paper = PAPER_VIDEOS_PER_S[model_name]
    return {
        "videos_per_s": round(result["videos_per_s"], 1),
        "paper_videos_per_s_rtx3090": paper,
        "vs_paper": round(result["videos_per_s"] / paper, 2),
        "cpu_ms_per_video": round(1000 * result["cpu_s_per_video"], 2),
        "gflops_per_video": round(result["gflops_per_video"], 1),
        "achieved_gflops": round(result["achieved_gflops"]),
        "peak_gflops": round(result["peak_gflops"]),
        "batch_size": batch_size,
    }


def run(name: str, check, checks: dict) -> None:
    """Run one check, recording its result, or its error instead of stopping the others."""
    started = time.perf_counter()
    try:
        checks[name] = {"ok": True, **check()}
    except Exception as error:  # noqa: BLE001 (any failure is this check's result, reported with the others)
        frame = traceback.extract_tb(error.__traceback__)[-1]
        checks[name] = {
            "ok": False,
            "error": f"{type(error).__name__}: {error}"[:3000],
            "where": f"{frame.filename}:{frame.lineno} in {frame.name}",
        }
    checks[name]["seconds"] = round(time.perf_counter() - started, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=16, help="videos per batch for the throughput (default: 16)")
    parser.add_argument("--iterations", type=int, default=10, help="timed batches per throughput figure (default: 10)")
    args = parser.parse_args()
    started = time.perf_counter()
    checks: dict = {}
    run("environment", environment, checks)
    run("cpu_smoke", cpu_smoke, checks)
    gpu = torch.cuda.is_available()
    # Leave the throughput about 90 s of the budget.
    run("cuda_tests", lambda: cuda_tests(max(60.0, BUDGET_S - 90 - (time.perf_counter() - started))), checks)
    if gpu:
        for model_name in PAPER_VIDEOS_PER_S:
            for precision in ("fp16", "bf16"):
                name = f"throughput {model_name} {precision}"
                if time.perf_counter() - started > BUDGET_S - 20:
                    checks[name] = {"ok": False, "error": "not run: the 8-minute budget is spent"}
                    continue
                run(name, lambda m=model_name, p=precision: throughput(m, p, args.batch_size, args.iterations), checks)
    summary = {
        "gpu": torch.cuda.get_device_name(0) if gpu else None,
        "message": None if gpu else "no CUDA GPU here: only the checks a CPU allows ran (the CUDA tests were skipped)",
        "ok": all(check["ok"] for check in checks.values()),
        "seconds": round(time.perf_counter() - started, 1),
        "checks": checks,
    }
    print(json.dumps(summary, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
