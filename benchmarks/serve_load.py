"""`actionclip serve` under load, against `actionclip predict` on the same videos and model.

A ViT-B/32 ActionCLIP (Transf, 8 frames, random weights: nothing is downloaded) is saved once into ``--workdir``
and served by ``actionclip serve`` on 127.0.0.1 (``--max-batch 8``, ``--workers 2``, an API key). ``--clients``
threads then send ``--requests`` requests, one video each; a fifth of them (``--bad-fraction``) are bad inputs
cycling through: not a video, a zero-byte file, a truncated file, a file over ``--max-upload-mb``, no labels,
2,000 labels, duplicate labels, a wrong field name, and a wrong API key. Good requests send one of the videos
(10-second 340x256 30 fps H.264 scenes of ``benchmarks/data_loader.py`` and the two peer clips) with the server's
default labels or, every fourth one, a second label set of their own.

It prints requests/s, p50/p95 latency and videos/s of the good requests, and videos/s of ``actionclip predict``'s
pipeline (``iter_predictions``, the function behind the command: model loaded, text features in its disk cache,
DataLoader with 2 workers, batch 8) over the same good videos with the same checkpoint, measured in this run before
and after the server's (other load on the machine shows as a difference between the two), and the CPU seconds per
video of each. The server's memory (resident set of the server and its decoding workers) is given once started,
after ``--warmup`` good requests (the allocator reaches the high-water mark of ``--clients`` concurrent requests, and
each batch size its kernels), at each quarter of the run, and at its end.

The same requests are then sent again with an abusive client beside the ``--clients`` normal ones: it sends, one
after another until they are done, the request of issue 32 that once stalled every client for 40 s (100 labels x
10,000 templates: 280 KB of JSON, with a 250 KB video), which the server now refuses (422: over its labels x
templates bound). The good requests' p95 latency of both runs, their ratio, and the server's CPU seconds per good
video in each say what the abusive client costs the others.

    python benchmarks/serve_load.py [--requests 200] [--clients 16] [--workdir runs/bench_serve] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

import actionclip
from actionclip.inference.backends import load_model
from actionclip.inference.classify import iter_predictions
from inference import make_videos

PEER_VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "peer_videos"
LABELS = [
    "arm wrestling",
    "applying eye makeup",
    "playing guitar",
    "swimming",
    "dancing",
    "cooking",
    "running",
    "riding a bike",
    "juggling",
    "reading",
]
OTHER_LABELS = ["a person", "a car", "an animal", "a game", "music"]
KEY = "load-test-key"


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants (the decoding workers), in MiB."""
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        try:
            with open(f"/proc/{current}/status") as status:
                total += next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{current}/task").iterdir():  # children are listed under the thread that started them
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError, StopIteration):
            continue
    return total / 1024


def bad_requests(workdir: Path, good: Path, max_upload_mb: int) -> list[tuple[str, dict, int]]:
    """(what, httpx keyword arguments, the expected status) of each kind of bad input."""
    workdir.mkdir(parents=True, exist_ok=True)
    truncated = workdir / "truncated.mp4"
    truncated.write_bytes((PEER_VIDEOS / "mmaction2_demo_arm_wrestling.mp4").read_bytes()[:20000])
    big = workdir / "big.mp4"
    if not big.exists() or big.stat().st_size <= max_upload_mb << 20:
        big.write_bytes(os.urandom((max_upload_mb << 20) + 4096))
    video = {"video": (good.name, good.read_bytes())}
    auth = {"X-API-Key": KEY}
    return [
        ("not a video", {"files": {"video": ("notes.mp4", b"this is not a video")}, "headers": auth}, 422),
        ("zero bytes", {"files": {"video": ("empty.mp4", b"")}, "headers": auth}, 422),
        ("truncated", {"files": {"video": ("truncated.mp4", truncated.read_bytes())}, "headers": auth}, 422),
        ("over the limit", {"files": {"video": ("big.mp4", big.read_bytes())}, "headers": auth}, 413),
        ("no labels", {"files": video, "data": {"labels": ""}, "headers": auth}, 422),
        ("2,000 labels", {"files": video, "data": {"labels": ",".join(f"class {i}" for i in range(2000))}, "headers": auth}, 422),
        ("duplicate labels", {"files": video, "data": {"labels": "a,b,a"}, "headers": auth}, 422),
        ("wrong field name", {"files": {"file": (good.name, good.read_bytes())}, "headers": auth}, 422),
        ("wrong API key", {"files": video, "headers": {"X-API-Key": "wrong"}}, 401),
    ]


def start_server(checkpoint: Path, port: int, args, log: Path) -> subprocess.Popen:
    command = [
        sys.executable,
        "-m",
        "actionclip",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        str(port),
        "--labels",
        ",".join(LABELS),
        "--api-key",
        KEY,
        "--max-batch",
        str(args.batch),
        "--workers",
        str(args.workers),
        "--max-upload-mb",
        str(args.max_upload_mb),
        "--precision",
        args.precision,
    ]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT)
    for _ in range(600):
        if process.poll() is not None:
            raise SystemExit(f"the server exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.2)
    raise SystemExit("the server did not start")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` and its live descendants."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
            for task in Path(f"/proc/{current}/task").iterdir():
                todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def predict_rate(model, videos: list[str], args) -> tuple[float, float]:
    """videos/s and CPU seconds per video of ``iter_predictions`` (this process and its DataLoader workers)."""
    before, start = os.times(), time.perf_counter()
    results = list(
        iter_predictions(model, videos, LABELS, batch_size=args.batch, workers=args.workers, text_cache=args.workdir / "text_cache")
    )  # as the command: no text encoding
    seconds, after = time.perf_counter() - start, os.times()
    assert all("scores" in r for r in results), [r for r in results if "scores" not in r][:3]
    cpu = sum(after[i] - before[i] for i in range(4))  # user, system, children's user and system
    return len(videos) / seconds, cpu / len(videos)


def plan_requests(args, files: list[Path]) -> tuple[list, list[str]]:
    """The requests in sending order: (what, httpx keyword arguments, expected status), and the good ones' videos."""
    bad = bad_requests(args.workdir / "bad", files[0], args.max_upload_mb)
    bad_count = round(args.requests * args.bad_fraction)
    bad_slots = sorted({round(i * args.requests / max(bad_count, 1)) for i in range(bad_count)})
    plan, good_videos = [], []
    for i in range(args.requests):
        if i in bad_slots:
            plan.append(bad[bad_slots.index(i) % len(bad)])
            continue
        video = files[len(good_videos) % len(files)]
        good_videos.append(str(video))
        data = {"labels": ",".join(OTHER_LABELS)} if len(good_videos) % 4 == 0 else {}
        plan.append(("good", {"files": {"video": (video.name, video.read_bytes())}, "data": data, "headers": {"X-API-Key": KEY}}, 200))
    return plan, good_videos


def abusive_request(good: Path) -> dict:
    """httpx keyword arguments of the request that asks for 1,000,000 texts to be encoded."""
    return {
        "files": {"video": (good.name, good.read_bytes())},
        "data": {
            "labels": ",".join(f"class {i}" for i in range(100)),
            "templates": json.dumps([f"a video of {{}}, take {i}" for i in range(10_000)]),
        },
        "headers": {"X-API-Key": KEY},
    }


def abuse(url: str, video: Path, stop, answers) -> None:
    """Send the abusive request back to back until ``stop`` is set, then put the (status, seconds) of each in
    ``answers`` (run in a process of its own, as another program would be: not in the normal clients' GIL)."""
    request, sent = abusive_request(video), []
    with httpx.Client(timeout=600) as client:
        while not stop.is_set():
            start = time.perf_counter()
            status = client.post(f"{url}/v1/classify", **request).status_code
            sent.append((status, time.perf_counter() - start))
    answers.put(sent)


def p95(outcomes: list) -> float:
    latencies = sorted(o[1] for o in outcomes if o[0] == "good")
    return latencies[int(0.95 * (len(latencies) - 1))]


def run_load(url: str, plan: list, clients: int) -> tuple[list, float]:
    """Send ``plan`` from ``clients`` threads, one connection each; each outcome is (what, seconds, as expected,
    status, detail)."""
    local = threading.local()

    def send(item):
        what, request, status = item
        if not hasattr(local, "client"):
            local.client = httpx.Client(timeout=600)
        start = time.perf_counter()
        answer = local.client.post(f"{url}/v1/classify", **request)
        seconds = time.perf_counter() - start
        body = answer.json()
        ok = answer.status_code == status and (status != 200 or all("scores" in r for r in body["results"]))
        return what, seconds, ok, answer.status_code, body.get("detail")

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        outcomes = list(pool.map(send, plan))
    return outcomes, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--bad-fraction", type=float, default=0.2)
    parser.add_argument("--warmup", type=int, default=48, help="good requests sent before the measured run")
    parser.add_argument("--videos", type=int, default=8, help="generated videos, beside the two peer clips")
    parser.add_argument("--batch", type=int, default=8, help="--max-batch of the server, --batch-size of predict")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--max-upload-mb", type=int, default=20)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--workdir", type=Path, default=Path("runs/bench_serve"))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    checkpoint = args.workdir / "vit-b-32-random"
    if not (checkpoint / "config.json").exists():
        actionclip.save(actionclip.create_model("ViT-B-32", None, "Transf", 8, seed=0).eval(), checkpoint)
    files = sorted(make_videos(args.workdir / "videos", args.videos).glob("*.mp4"))[: args.videos]
    files += sorted(p for p in PEER_VIDEOS.glob("mmaction2_*") if p.suffix in (".mp4", ".avi"))
    plan, good_videos = plan_requests(args, files)

    # predict before and after the server's run: other load on the machine shows as a difference between the two.
    model = load_model(checkpoint, precision=args.precision)
    list(
        iter_predictions(model, good_videos[: args.batch], LABELS, workers=args.workers, text_cache=args.workdir / "text_cache")
    )  # warm-up
    predict_before = predict_rate(model, good_videos, args)

    url = f"http://127.0.0.1:{args.port}"
    server = start_server(checkpoint, args.port, args, args.workdir / "server.log")
    try:
        memory = {"started": rss_mb(server.pid)}
        warmup = [item for item in plan if item[0] == "good"][: args.warmup]
        run_load(url, warmup, args.clients)  # the allocator's high-water mark and the batch shapes' kernels
        memory["after warm-up"] = rss_mb(server.pid)
        samples, stop = [], threading.Event()

        def watch():
            while not stop.wait(0.5):
                samples.append(rss_mb(server.pid))

        watcher = threading.Thread(target=watch)
        watcher.start()
        cpu_before = cpu_seconds(server.pid)
        outcomes, wall = run_load(url, plan, args.clients)
        server_cpu = cpu_seconds(server.pid) - cpu_before
        stop.set()
        watcher.join()
        memory["end"] = rss_mb(server.pid)

        context = multiprocessing.get_context("spawn")
        done, answers = context.Event(), context.Queue()
        abuser = context.Process(target=abuse, args=(url, files[0], done, answers))
        abuser.start()
        cpu_before = cpu_seconds(server.pid)
        abused_outcomes, abused_wall = run_load(url, plan, args.clients)
        abused_cpu = cpu_seconds(server.pid) - cpu_before
        done.set()
        abusive = answers.get()
        abuser.join()
        memory["after the abusive run"] = rss_mb(server.pid)
    finally:
        server.terminate()
        server.wait(60)
    predict_after = predict_rate(model, good_videos, args)

    good = [o for o in outcomes if o[0] == "good"]
    failures = [o for o in outcomes if not o[2]]
    latencies = sorted(o[1] for o in good)
    predict_mean = (predict_before[0] + predict_after[0]) / 2
    quarters = [samples[min(len(samples) - 1, len(samples) * q // 4)] for q in range(1, 4)] if samples else []
    figures = {
        "requests": len(outcomes),
        "good": len(good),
        "bad": len(outcomes) - len(good),
        "clients": args.clients,
        "failed_good": sum(1 for o in failures if o[0] == "good"),
        "bad_without_their_4xx": sum(1 for o in failures if o[0] != "good"),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(outcomes) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies)),
        "p95_ms": round(1000 * p95(outcomes)),
        "serve_videos_per_s": round(len(good) / wall, 2),
        "predict_videos_per_s_before_after": [round(predict_before[0], 2), round(predict_after[0], 2)],
        "serve_over_predict": round(len(good) / wall / predict_mean, 3),
        "serve_cpu_s_per_video": round(server_cpu / len(good), 3),
        "predict_cpu_s_per_video_before_after": [round(predict_before[1], 3), round(predict_after[1], 3)],
        "memory_mb": {
            **{k: round(v) for k, v in memory.items()},
            "quarters": [round(q) for q in quarters],
            "peak": round(max(samples, default=memory["end"])),
        },
        "bad_statuses": sorted({f"{o[0]}: {o[3]}" for o in outcomes if o[0] != "good"}),
        "with_an_abusive_client": {
            "failed": sum(1 for o in abused_outcomes if not o[2]),
            "seconds": round(abused_wall, 2),
            "p95_ms": round(1000 * p95(abused_outcomes)),
            "p95_over_without": round(p95(abused_outcomes) / p95(outcomes), 3),
            "serve_cpu_s_per_video": round(abused_cpu / len(good), 3),
            "abusive_requests": len(abusive),
            "abusive_statuses": sorted({status for status, _ in abusive}),
            "abusive_p95_ms": round(1000 * sorted(s for _, s in abusive)[int(0.95 * (len(abusive) - 1))]) if abusive else None,
        },
        "failures": [{"what": o[0], "status": o[3], "detail": o[4]} for o in failures[:10]],
    }
    for key, value in figures.items():
        print(f"{key}: {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
