"""The FastAPI app of ``actionclip serve``: ``POST /v1/classify``, ``GET /v1/health``, ``GET /v1/model``,
``GET /v1/label-sets`` and the page at ``/``. Every mistake in a request is a 4xx JSON answer ``{"detail": "..."}``
saying what was wrong; uploads live in a temporary folder for the request's lifetime only. A client that goes away
stops its request's work: its text encoding between two chunks, its videos before the model takes them."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import secrets
import shutil
import tempfile
import threading
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field
from starlette.requests import ClientDisconnect

from actionclip.inference.inputs import check_labels
from actionclip.prompts import clean_class_name
from actionclip.serve.batching import Batcher, BatcherStopped, check_views
from actionclip.serve.origins import OriginCheck, check_origins
from actionclip.serve.refusals import RefusalBrake
from actionclip.serve.texts import MAX_TEXTS, TextFeatureCache, check_text_count
from actionclip.serve.uploads import FILE_FIELD, UploadError, read_form

MAX_LABELS = 1000  # Kinetics-700 fits; more is a mistake, and costs a text encoding per label set
DEFAULT_TOP_K = 5
LABEL_SETS = {"kinetics400": "Kinetics-400", "ucf101": "UCF-101", "hmdb51": "HMDB-51"}
PACKAGE = resources.files("actionclip.serve")
API_KEY_ENV = "ACTIONCLIP_API_KEY"
MAX_UPLOAD_MB = 100_000  # 100 GB: more than any disk a request could be written to
MAX_WAIT_MS = 10_000  # a batch waiting longer for company would keep its first video waiting as long


def check_api_key(api_key: str | None) -> None:
    """None serves without a key; an empty one is refused, as every request without a key would match it."""
    if api_key is not None and not api_key.strip():
        raise ValueError(
            f"the API key is empty (--api-key or {API_KEY_ENV}): every request would be let in; give a key, or unset it to serve without one"
        )


@dataclass
class ServeSettings:
    default_labels: list[str] | None = None
    views: str = "1x1"
    max_upload_mb: float = 200
    max_batch: int = 8
    max_wait_ms: float = 20
    api_key: str | None = None
    workers: int = 2
    decode_short_side: int | None = None
    precision: str = "fp32"
    cors: list[str] = field(default_factory=list)  # origins whose pages may call the API

    def __post_init__(self) -> None:
        # "not (a <= x <= b)" rather than "x < a or x > b": nan fails every comparison
        if not 0 < self.max_upload_mb <= MAX_UPLOAD_MB:
            raise ValueError(f"--max-upload-mb must be > 0 and at most {MAX_UPLOAD_MB}, got {self.max_upload_mb:g}")
        if not 0 <= self.max_wait_ms <= MAX_WAIT_MS:
            raise ValueError(f"--max-wait-ms must be >= 0 and at most {MAX_WAIT_MS}, got {self.max_wait_ms:g}")
        if self.max_batch < 1:
            raise ValueError(f"--max-batch must be >= 1, got {self.max_batch}")
        if self.workers < 0:
            raise ValueError(f"--workers must be >= 0, got {self.workers}")
        self.cors = check_origins(self.cors)
        check_api_key(self.api_key)


class Result(BaseModel):
    """One uploaded video: its labels best first with their probabilities, or why it could not be read."""

    video: str = Field(description="the uploaded file's name")
    labels: list[str] | None = Field(None, description="the top-k labels, best first")
    scores: list[float] | None = Field(None, description="their probabilities (softmax over all the labels)")
    warning: str | None = Field(None, description="e.g. only part of a truncated video could be decoded")
    error: str | None = Field(None, description="why the video could not be read (then no labels or scores)")
    thumbnails: list[str] | None = Field(None, description="with thumbnails=true: the sampled frames as JPEG data URIs")


class Results(BaseModel):
    results: list[Result] = Field(description="one per uploaded video, in upload order")


class Problem(BaseModel):
    detail: str
    results: list[Result] | None = None


_FORM_SCHEMA = {
    "type": "object",
    "required": [FILE_FIELD],
    "properties": {
        FILE_FIELD: {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "description": "one or more video files (repeat the field)",
        },
        "labels": {
            "type": "string",
            "description": 'comma-separated ("a,b,c") or a JSON list (["a", "b"]); default: the server\'s label set',
        },
        "top_k": {"type": "integer", "minimum": 1, "default": DEFAULT_TOP_K, "description": "labels per video"},
        "views": {"type": "string", "description": "CLIPSxCROPS, e.g. 1x1, 3x1, 10x3 (default: the server's --views)"},
        "templates": {
            "type": "string",
            "description": 'actionclip, label_only, or a JSON list of templates with "{}" (default: the model\'s)',
        },
        "thumbnails": {"type": "boolean", "default": False, "description": "return the sampled frames"},
    },
}
_ERRORS = {
    status: {"model": Problem, "description": text}
    for status, text in (
        (400, "malformed multipart body"),
        (401, "missing or wrong API key"),
        (403, "a browser request from another origin than the server's and --cors"),
        (413, "upload over --max-upload-mb"),
        (415, "not multipart/form-data"),
        (422, f"bad fields or labels, more than {MAX_TEXTS} labels x templates, or no video could be read"),
        (503, "the server cannot score videos (its batching thread has stopped)"),
    )
}


def _all_strings(items: list) -> bool:
    # map(type, ...) runs in C: a generator of isinstance calls took 2 ms for 10,000 templates, half of a refusal's CPU
    return set(map(type, items)) <= {str}


def _parse_labels_field(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("["):
        try:
            labels = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"labels: not a valid JSON list ({error})") from None
        except RecursionError:  # [[[[... thousands deep
            raise ValueError("labels: not a valid JSON list (nested too deep)") from None
        if not _all_strings(labels):
            raise ValueError("labels: a JSON list must hold strings only")
        labels = [label.strip() for label in labels]
        if not all(labels):
            raise ValueError("labels: an empty label in the list")
        return labels
    return [label.strip() for label in text.split(",") if label.strip()]


def _labels(fields: dict, default: list[str] | None) -> list[str]:
    if "labels" not in fields:
        if default is None:
            raise ValueError("no labels: give the field 'labels' (this server has no default label set)")
        return default
    labels = _parse_labels_field(fields["labels"])
    if not labels:
        raise ValueError("the field 'labels' is empty: give labels, or leave the field out for the default set")
    if len(labels) > MAX_LABELS:
        raise ValueError(f"{len(labels)} labels: at most {MAX_LABELS} per request")
    return check_labels(labels)


def _templates(text: str | None):
    if text is None or text in ("actionclip", "label_only"):
        return text
    try:  # never a path: a client must not make the server read its files
        templates = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        templates = None
    if not isinstance(templates, list) or not _all_strings(templates):
        raise ValueError('templates: actionclip, label_only, or a JSON list of templates such as ["a video of {}"]')
    return templates


def _top_k(text: str | None) -> int:
    if text is None:
        return DEFAULT_TOP_K
    digits = text.strip().lstrip("0")
    if not re.fullmatch(r"[0-9]+", digits):  # ASCII: str.isdigit takes "²", which int() refuses
        raise ValueError(f"top_k must be an integer >= 1, got {text!r}")
    return int(digits) if len(digits) <= 9 else 10**9  # more than any label set: all of them


def _flag(text: str | None, name: str) -> bool:
    if text is None or text.lower() in ("false", "0", ""):
        return False
    if text.lower() in ("true", "1"):
        return True
    raise ValueError(f"{name} must be true or false, got {text!r}")


async def _unless_gone(request: Request, work: asyncio.Future, on_gone=None):
    """``work``'s result, unless the client goes away first: then ``work`` is cancelled (and ``on_gone`` called, to
    stop what runs in a thread) and ``ClientDisconnect`` raised."""
    while not work.done():
        await asyncio.wait([work], timeout=0.25)
        if not work.done() and await request.is_disconnected():
            if on_gone is not None:
                on_gone()
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work  # retrieved, or asyncio logs "exception was never retrieved"
            raise ClientDisconnect()
    return work.result()


def label_sets() -> dict[str, list[str]]:
    """The shipped class lists, as prompt text (``ApplyEyeMakeup`` -> ``apply eye makeup``)."""
    return {
        name: [
            clean_class_name(line.strip()) for line in (PACKAGE / "labels" / f"{name}.txt").read_text("utf-8").splitlines() if line.strip()
        ]
        for name in LABEL_SETS
    }


def create_app(model, settings: ServeSettings, upload_dir: str | Path | None = None) -> FastAPI:
    """The app serving ``model`` (in eval mode, on its device). Uploads go to folders below ``upload_dir``
    (default: the system's temporary folder)."""
    texts = TextFeatureCache(model)
    if settings.default_labels is not None:
        settings.default_labels = check_labels(settings.default_labels)
    check_views(settings.views)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = Batcher(
            model,
            settings.workers,
            max_batch=settings.max_batch,
            max_wait_ms=settings.max_wait_ms,
            decode_short_side=settings.decode_short_side,
        )
        await asyncio.to_thread(batcher.start)
        app.state.batcher = batcher
        if settings.default_labels:
            await asyncio.to_thread(texts.get, settings.default_labels, None)
        try:
            yield
        finally:
            await asyncio.to_thread(batcher.close)

    # FastAPIOffline: /docs and /redoc with Swagger UI and ReDoc served by the app, where FastAPI's load them from a CDN.
    app = FastAPIOffline(
        title="actionclip",
        version="1",
        lifespan=lifespan,
        description="Classify videos among your own labels (video-text matching with CLIP).",
    )
    app.state.texts = texts
    if settings.cors:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors, allow_methods=["GET", "POST"], allow_headers=["X-API-Key", "Authorization"]
        )
    app.add_middleware(OriginCheck, allowed=settings.cors)  # before anything reads the request
    app.add_middleware(RefusalBrake)  # added last, the outermost: it counts the refusals of OriginCheck too

    def api_key(request: Request) -> None:
        if settings.api_key is None:
            return
        given = request.headers.get("x-api-key") or request.headers.get("authorization", "").removeprefix("Bearer ").strip()
        if not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise HTTPException(401, "missing or wrong API key: send it in the header 'X-API-Key: KEY' (or 'Authorization: Bearer KEY')")

    @app.get("/v1/health", summary="Liveness (503 if videos cannot be scored); says whether the API needs a key")
    def health():
        failure = app.state.batcher.failure
        status = "ok" if failure is None else f"the batching thread has stopped: {failure}"
        return JSONResponse(
            {"status": status, "api_key_required": settings.api_key is not None}, status_code=200 if failure is None else 503
        )

    @app.get("/v1/model", summary="The served model and the server's settings", dependencies=[Depends(api_key)])
    def model_info() -> dict:
        config = model.config
        return {
            "arch": config.arch,
            "model_name": config.model_name,
            "visual_prompt": config.visual_prompt,
            "frames": config.num_frames,
            "image_size": app.state.batcher.size,
            "precision": settings.precision,
            "device": str(app.state.batcher.device),
            "default_labels": settings.default_labels,
            "views": settings.views,
            "max_upload_mb": settings.max_upload_mb,
            "max_batch": settings.max_batch,
            "max_wait_ms": settings.max_wait_ms,
            "max_labels": MAX_LABELS,
            "max_texts": MAX_TEXTS,
            "cors": settings.cors,
        }

    @app.get("/v1/label-sets", summary="Ready label lists: Kinetics-400, UCF-101, HMDB-51 class names", dependencies=[Depends(api_key)])
    def get_label_sets() -> dict:
        return {"names": LABEL_SETS, "labels": label_sets()}

    @app.post(
        "/v1/classify",
        response_model=Results,
        response_model_exclude_none=True,
        responses=_ERRORS,
        summary="Classify uploaded videos among labels",
        dependencies=[Depends(api_key)],
        openapi_extra={"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}}}},
    )
    async def classify(request: Request):
        folder = Path(tempfile.mkdtemp(prefix="actionclip-serve-", dir=upload_dir))
        try:
            return await _classify(request, folder)
        except UploadError as error:
            return JSONResponse({"detail": str(error)}, status_code=error.status)
        except BatcherStopped as error:
            return JSONResponse({"detail": f"{error}; restart the server"}, status_code=503)
        except ValueError as error:
            return JSONResponse({"detail": str(error)}, status_code=422)
        except ClientDisconnect:
            return JSONResponse({"detail": "the client went away"}, status_code=400)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    async def _classify(request: Request, folder: Path):
        form = await read_form(request.headers, request.stream(), folder, int(settings.max_upload_mb * 2**20))
        if not form.files:
            raise UploadError(422, f"no video: send one or more files in the field {FILE_FIELD!r}")
        fields = form.fields
        labels = _labels(fields, settings.default_labels)
        top_k, views = _top_k(fields.get("top_k")), check_views(fields.get("views", settings.views))
        thumbnails = _flag(fields.get("thumbnails"), "thumbnails")
        templates = _templates(fields.get("templates"))
        if "labels" in fields or templates is not None:  # the default set is the server's choice, encoded at start-up
            check_text_count(len(labels), templates, model)
        gone = threading.Event()
        encoding = asyncio.ensure_future(asyncio.to_thread(texts.get, labels, templates, gone))
        text_features = await _unless_gone(request, encoding, gone.set)
        batcher: Batcher = app.state.batcher

        async def one(upload):
            if upload.size == 0:
                return {"video": upload.name, "error": "empty file (0 bytes)"}
            return await batcher.classify(str(upload.path), upload.name, labels, text_features, views, top_k, thumbnails)

        results = await _unless_gone(request, asyncio.ensure_future(asyncio.gather(*(one(upload) for upload in form.files))))
        if all("error" in result for result in results):
            reasons = "; ".join(f"{result['video']}: {result['error']}" for result in results)
            return JSONResponse({"detail": f"no uploaded video could be read: {reasons}", "results": results}, status_code=422)
        return {"results": results}

    static = PACKAGE / "static"
    app.mount("/static", StaticFiles(directory=str(static)), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(str(static / "index.html"))

    return app
