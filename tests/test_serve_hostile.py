"""`actionclip serve` against hostile requests and a dying server (issue 32): bounded text work that stalls no one,
other origins, a dead batching thread, out-of-range settings, unterminated bodies. A server killed with SIGKILL, and
its decoding processes, are the end of `test_serve.py::test_a_real_server_process` (a server takes long to start)."""

import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")

import actionclip  # noqa: E402
from actionclip.serve import refusals  # noqa: E402
from actionclip.serve.app import ServeSettings  # noqa: E402
from actionclip.serve.batching import Batcher  # noqa: E402
from actionclip.serve.texts import MAX_TEXTS, EncodingCancelled, TextFeatureCache  # noqa: E402
from serve_helpers import ARM_WRESTLING, EYE_MAKEUP, client_for, multipart_part, needs_peer_videos, tiny_model, video_files  # noqa: E402

pytestmark = needs_peer_videos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_model(tmp_path_factory)


def test_labels_times_templates_is_bounded_and_the_bound_is_named(tiny, tmp_path):
    model, _ = tiny
    labels = ",".join(f"class {i}" for i in range(100))
    templates = json.dumps([f"a video of {{}}, take {i}" for i in range(200)])  # 20,000 texts to encode
    client, _ = client_for(model, tmp_path)
    with client:
        encoded = client.app.state.texts.encoded
        answer = client.post("/v1/classify", files=video_files(ARM_WRESTLING), data={"labels": labels, "templates": templates})
        assert answer.status_code == 422
        assert answer.json()["detail"] == (
            "100 labels x 200 templates is 20000 texts to encode: at most 16000 per request (labels x templates)"
        )
        assert client.app.state.texts.encoded == encoded  # refused before any encoding
        assert client.get("/v1/model").json()["max_texts"] == MAX_TEXTS == 16000


def test_text_features_kept_are_bounded_in_bytes(tiny):
    model, _ = tiny
    one_set = model.class_text_features(["a", "b"], ["{}"]).nbytes
    texts = TextFeatureCache(model, max_bytes=3 * one_set)
    for i in range(5):
        texts.get([f"a{i}", f"b{i}"], ["{}"])
    assert texts.bytes == 3 * one_set and len(texts) == 3
    texts.get(["a4", "b4"], ["{}"])
    assert texts.encoded == 5  # the most recent set was kept


def test_the_text_encoding_of_a_client_that_has_gone_stops_between_chunks(tiny):
    model, _ = tiny
    gone, chunks = threading.Event(), []

    class Watched:  # the model, noting each chunk it encodes; the client goes away during the first
        default_templates = model.default_templates

        def class_text_features(self, labels, templates):
            chunks.append(len(templates))
            gone.set()
            return model.class_text_features(labels, templates)

    labels = [f"class {i}" for i in range(1000)]  # 1,000 texts per template: one template per chunk
    texts = TextFeatureCache(Watched())
    with pytest.raises(EncodingCancelled):
        texts.get(labels, "actionclip", gone)
    assert chunks == [1] and len(texts) == 0


def test_a_slow_text_encoding_stalls_no_other_request(tmp_path):
    model = actionclip.create_model("test-tiny", seed=0).eval()
    encode, started, release = model.class_text_features, threading.Event(), threading.Event()

    def slow(labels, templates=None, **options):
        if "a slow label" in labels:
            started.set()
            release.wait(60)
        return encode(labels, templates, **options)

    model.class_text_features = slow
    client, _ = client_for(model, tmp_path)
    answers = {}

    def send(name, data):
        answers[name] = client.post("/v1/classify", files=video_files(ARM_WRESTLING), data=data)

    with client:
        slow_request = threading.Thread(target=send, args=("slow", {"labels": "a slow label,another"}))
        slow_request.start()
        assert started.wait(30)
        other = threading.Thread(target=send, args=("other", {}))  # the default labels, encoded at start-up
        other.start()
        other.join(30)
        served_meanwhile = not other.is_alive()
        release.set()
        slow_request.join(60)
        other.join(60)
    assert served_meanwhile, "a request with encoded labels waited for another request's text encoding"
    assert answers["other"].status_code == 200 and answers["slow"].status_code == 200


def test_browser_requests_from_other_origins_are_refused_unless_allowed(tiny, tmp_path):
    model, _ = tiny
    evil = {"Origin": "http://evil.example"}
    client, _ = client_for(model, tmp_path)
    with client:
        refused = client.post("/v1/classify", files=video_files(ARM_WRESTLING), headers=evil)
        assert refused.status_code == 403
        assert refused.json()["detail"] == (
            "a browser request from the origin http://evil.example, not this server's: start the server with --cors http://evil.example to allow it"
        )
        assert client.get("/v1/model", headers=evil).status_code == 403
        same = client.post("/v1/classify", files=video_files(ARM_WRESTLING), headers={"Origin": "http://testserver"})
        assert same.status_code == 200  # the page's own requests
        assert client.post("/v1/classify", files=video_files(ARM_WRESTLING)).status_code == 200  # not a browser: no Origin

    allowed = {"Origin": "https://app.example"}
    client, _ = client_for(model, tmp_path, cors=["https://app.example"])
    with client:
        answer = client.post("/v1/classify", files=video_files(ARM_WRESTLING), headers=allowed)
        assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == "https://app.example"
        preflight = client.options(
            "/v1/classify", headers={**allowed, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x-api-key"}
        )
        assert preflight.status_code == 200 and "x-api-key" in preflight.headers["access-control-allow-headers"].lower()
        assert client.post("/v1/classify", files=video_files(ARM_WRESTLING), headers=evil).status_code == 403


def test_health_reflects_the_batching_thread(tiny, tmp_path, monkeypatch):
    model, _ = tiny

    def broken(self):
        raise RuntimeError("a bug in the batching thread")

    monkeypatch.setattr(Batcher, "_next_batch", broken)
    client, _ = client_for(model, tmp_path)
    with client:
        deadline = time.monotonic() + 10
        while client.app.state.batcher._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)
        health = client.get("/v1/health")
        assert health.status_code == 503
        assert health.json()["status"] == "the batching thread has stopped: RuntimeError: a bug in the batching thread"
        answer = client.post("/v1/classify", files=video_files(ARM_WRESTLING))  # answered, not left waiting
        assert answer.status_code == 503 and "the batching thread has stopped" in answer.json()["detail"]


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"max_upload_mb": 0}, "--max-upload-mb must be > 0 and at most 100000, got 0"),
        ({"max_upload_mb": -5}, "--max-upload-mb must be > 0 and at most 100000, got -5"),
        ({"max_upload_mb": float("nan")}, "--max-upload-mb must be > 0 and at most 100000, got nan"),
        ({"max_upload_mb": 1e12}, "--max-upload-mb must be > 0 and at most 100000, got 1e+12"),
        ({"max_wait_ms": -1}, "--max-wait-ms must be >= 0 and at most 10000, got -1"),
        ({"max_wait_ms": 1e9}, "--max-wait-ms must be >= 0 and at most 10000, got 1e+09"),
        ({"max_wait_ms": float("inf")}, "--max-wait-ms must be >= 0 and at most 10000, got inf"),
        ({"max_batch": 0}, "--max-batch must be >= 1, got 0"),
        ({"workers": -1}, "--workers must be >= 0, got -1"),
        ({"cors": ["app.example"]}, "--cors: 'app.example' is not an origin"),
    ],
)
def test_settings_out_of_range_are_refused_in_one_line(settings, message):
    with pytest.raises(ValueError) as refused:
        ServeSettings(**settings)
    assert str(refused.value).startswith(message)


def test_a_body_without_its_closing_boundary_is_refused(tiny, tmp_path):
    model, _ = tiny
    client, uploads = client_for(model, tmp_path)
    video = EYE_MAKEUP.read_bytes()
    headers = {"Content-Type": "multipart/form-data; boundary=xx"}
    with client:
        for body in (multipart_part("xx") + video, multipart_part("xx") + video + b"\r\n--xx\r\n"):
            answer = client.post("/v1/classify", content=body, headers=headers)
            assert answer.status_code == 400, answer.text
            assert answer.json()["detail"] == "malformed multipart body: it ends before its closing boundary --xx-- (a truncated upload?)"
        whole = client.post("/v1/classify", content=multipart_part("xx") + video + b"\r\n--xx--\r\n", headers=headers)
        assert whole.status_code == 200
    assert list(uploads.iterdir()) == []


def _answer(status: int):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def test_a_client_over_its_budget_of_refusals_waits_before_it_is_read_and_no_one_else_does(monkeypatch):
    now, waits = [0.0], []

    async def sleep(seconds):
        waits.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(refusals.asyncio, "sleep", sleep)
    brakes = {status: refusals.RefusalBrake(_answer(status), per_s=10, burst=20, clock=lambda: now[0]) for status in (200, 422)}
    brakes[200].buckets = brakes[422].buckets  # one server: refused and answered requests share the clients' budgets

    async def request(status, client):
        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            pass

        await brakes[status]({"type": "http", "client": (client, 5000)}, receive, send)

    async def scenario():
        for _ in range(40):  # back to back, each answered at once: the budget of 20, then one every 0.1 s
            await request(422, "10.0.0.9")
        abuser_waits = list(waits)
        for _ in range(50):
            await request(200, "10.0.0.1")  # a good client meanwhile
        good_waits = waits[len(abuser_waits) :]
        return abuser_waits, good_waits

    abuser_waits, good_waits = asyncio.run(scenario())
    assert good_waits == []
    assert len(abuser_waits) == 19 and all(wait == pytest.approx(0.1) for wait in abuser_waits)
    assert now[0] == pytest.approx(1.9)  # 40 refusals in 1.9 s: 20 at once, then 10 a second
    assert "10.0.0.1" not in brakes[200].buckets  # answered requests cost no budget


def test_the_server_slows_a_client_that_keeps_being_refused(tiny, tmp_path, monkeypatch):
    waits = []

    async def sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(refusals.asyncio, "sleep", sleep)
    model, _ = tiny
    client, _ = client_for(model, tmp_path)
    with client:
        for _ in range(refusals.REFUSAL_BURST + 3):
            assert 400 <= client.post("/v1/classify", data={"labels": "[]"}).status_code < 500
    assert len(waits) >= 2 and max(waits) <= refusals.MAX_WAIT_S
