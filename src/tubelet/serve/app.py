"""The HTTP service: `create_app` builds the FastAPI app over one checkpoint (or export) directory.

``POST /v1/predict`` answers what ``tubelet predict --json`` prints for the uploaded file (`tubelet.recipes.predict`:
the same windows, the same results; only the model's forward is shared with concurrent requests by the
`MicroBatcher`). ``POST /v1/explain`` runs `tubelet.recipes.explain.explain` and serves its files under
``/v1/files/<id>/``; ``POST /v1/search`` queries an index (`tubelet.recipes.search.search`). ``GET /`` is the web page,
``GET /healthz`` and ``GET /metrics`` are for the machines that watch the server. Every ``/v1/*`` call needs the API
key when there is one (`ServeConfig.api_key`).

Errors are JSON ``{"error": ...}``: 401 no key, 404 nothing there, 409 no index, 413 too large or too long, 415 not a
video, 422 bad fields, 429 queue full, 503 model not loaded yet, 500 a bug (the server goes on serving).
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import threading
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import BaseModel

from tubelet.data.dataset import collate
from tubelet.errors import ConfigError, TubeletError
from tubelet.io import probe
from tubelet.nn.device import resolve_device
from tubelet.recipes.explain import explain
from tubelet.recipes.predict import plan_windows, results
from tubelet.recipes.search import search
from tubelet.serve.batching import MicroBatcher, QueueFull
from tubelet.serve.decoding import DecoderCrashed, Decoders, decode_all
from tubelet.serve.limits import UploadLimit, authorized, discard, save_upload
from tubelet.serve.metrics import Metrics, RequestRecorder
from tubelet.serve.served import ModelSlot

log = logging.getLogger("tubelet.serve")

KEPT_EXPLANATIONS = 32  # explanation folders kept for download; the oldest goes when one more is written


@dataclass(frozen=True)
class ServeConfig:
    """How a server runs (``tubelet serve`` flags)."""

    checkpoint: str  # checkpoint or export directory
    api_key: str | None = None  # the key every /v1/* call must bring (Authorization: Bearer KEY); None: no key
    max_upload_mb: float = 200.0  # largest request body, MiB
    max_seconds: float = 600.0  # longest video accepted, seconds
    index: str | None = None  # `tubelet index` directory for /v1/search
    max_batch_ms: float = 5.0  # how long the batcher waits for more requests; 0 turns micro-batching off
    queue: int = 64  # predict requests that may wait; one more gets 429
    batch_particles: int = 8192  # particle budget of one forward
    device: str = "auto"  # auto, cpu, cuda
    watch: bool = True  # poll the checkpoint's files every second and reload when they change
    topk: int = 5  # classes listed per prediction (as tubelet predict --topk)
    decode_workers: int = 2  # processes that probe and decode uploads (a crashing decoder costs its request); 0: none


class HTTPFailure(Exception):
    """An error answered with `status` and a one-line message (and `headers`, e.g. 401's WWW-Authenticate)."""

    def __init__(self, status: int, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.headers = headers


class Query(BaseModel):
    query: str
    topk: int = 10


def create_app(config: ServeConfig) -> FastAPI:
    """The app; the model loads in the background when it starts (503 until then)."""
    device = resolve_device(config.device)
    metrics = Metrics()
    slot = ModelSlot(config.checkpoint, device=device)
    batcher = MicroBatcher(
        max_batch_ms=config.max_batch_ms, budget=config.batch_particles, capacity=config.queue, device=device
    )
    batcher.on_group = metrics.on_group
    metrics.queue_depth.set_function(batcher.depth)
    metrics.model_version.set_function(lambda: slot.current.version if slot.current else 0)
    decoders = Decoders(config.decode_workers)
    explaining = threading.BoundedSemaphore(config.queue)  # explanations in flight; one more gets 429
    work = Path(tempfile.mkdtemp(prefix="tubelet-serve-"))  # mode 0700: uploads and explanations
    uploads, explained = work / "uploads", work / "explained"
    uploads.mkdir(mode=0o700)
    explained.mkdir(mode=0o700)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        slot.reload()  # in the background: /healthz says 503 until it is done
        if config.watch:
            slot.watch()
        yield
        slot.stop()
        batcher.close()
        decoders.close()
        shutil.rmtree(work, ignore_errors=True)

    app = FastAPI(
        title="tubelet", summary="Video models over spacetime particles: predict, explain, search.", lifespan=lifespan
    )
    app.state.config, app.state.slot, app.state.batcher, app.state.metrics = config, slot, batcher, metrics
    app.state.work = work

    @app.exception_handler(HTTPFailure)
    def failure(_: Request, exc: HTTPFailure) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        said = "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'body'}: {e['msg']}" for e in exc.errors())
        return JSONResponse({"error": said, "detail": jsonable_encoder(exc.errors())}, status_code=422)

    def key_checked(request: Request) -> None:
        if config.api_key is not None and not authorized(request.headers.get("authorization"), config.api_key):
            said = "missing or wrong API key: send Authorization: Bearer KEY"
            raise HTTPFailure(401, said, {"WWW-Authenticate": "Bearer"})

    def served():
        if slot.current is None:
            raise HTTPFailure(503, slot.error or "the model is loading; try again in a moment")
        return slot.current

    def received(file: UploadFile):
        """The upload saved privately, checked to be a video no longer than --max-seconds: (path, probe)."""
        path = save_upload(file.file, uploads, file.filename)
        try:
            info = decoders.run(probe, path)
        except (TubeletError, DecoderCrashed) as exc:
            discard(path)
            raise HTTPFailure(415, f"{file.filename or 'file'}: not a video that can be decoded ({exc})") from None
        if info.duration_s > config.max_seconds:
            discard(path)
            raise HTTPFailure(
                413, f"{file.filename}: {info.duration_s:.1f} s is longer than --max-seconds {config.max_seconds:g}"
            )
        return path, info

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(key_checked)])

    @v1.post("/predict")
    def predict(
        file: Annotated[UploadFile, File(description="the video")],
        window_seconds: Annotated[float | None, Form(gt=0, description="window length (default: training's)")] = None,
        stride_seconds: Annotated[float | None, Form(gt=0, description="step between windows")] = None,
        question: Annotated[str | None, Form(description="what a VQA checkpoint is asked (required by one)")] = None,
    ) -> dict:
        """What ``tubelet predict --json`` prints for the file; ``windows`` in seconds for a long one."""
        model = served()
        path, _ = received(file)
        try:
            try:
                plan = plan_windows(
                    model.loaded, [str(path)], questions=[question] if question is not None else None,
                    window_seconds=window_seconds, stride_seconds=stride_seconds,
                )  # fmt: skip
            except ConfigError as exc:
                raise HTTPFailure(422, _as_fields(str(exc))) from None
            if plan.failed:
                raise HTTPFailure(415, f"{file.filename}: {plan.failed[0]['error']}")
            try:
                items = decoders.run(decode_all, plan.dataset)  # in a worker process: a crash costs this request
            except DecoderCrashed as exc:
                raise HTTPFailure(415, f"{file.filename}: not a video that can be decoded ({exc})") from None
            try:
                future = batcher.submit(model, items, getattr(plan.dataset, "collate", collate))
            except QueueFull as exc:
                raise HTTPFailure(429, f"busy: {exc}; retry shortly") from None
            outputs, bad = future.result()
            (result,) = results(plan, model.loaded, outputs, bad, topk=config.topk)
        finally:
            discard(path)
        if "error" in result:
            raise HTTPFailure(415, f"{file.filename}: {result['error']}")
        return {**result, "path": file.filename or "upload"}

    @v1.post("/explain")
    def explain_file(
        request: Request,
        file: Annotated[UploadFile, File(description="the video")],
        method: Annotated[str, Form(pattern="^(occlusion|ig|gradxinput|rollout)$")] = "occlusion",
        target: Annotated[str | None, Form(description="class to explain (default: the predicted one)")] = None,
        start: Annotated[float | None, Form(ge=0, description="window start, seconds (default: centred)")] = None,
        seconds: Annotated[float | None, Form(gt=0, description="window length (default: training's)")] = None,
        question: Annotated[str | None, Form(description="what a VQA checkpoint is asked (required by one)")] = None,
    ) -> dict:
        """``explanation.json`` of one window, with ``urls`` of its heatmap (GIF, MP4, PNG), timeline and report."""
        model = served()
        if not explaining.acquire(blocking=False):
            raise HTTPFailure(429, f"busy: {config.queue} explanations are running; retry shortly")
        try:
            path, _ = received(file)
            ident = uuid.uuid4().hex
            try:
                with model.lock:
                    result = explain(
                        model.loaded, path, out=explained / ident, method=method, target=target, question=question,
                        start=start, seconds=seconds, device=str(device),
                    )  # fmt: skip
            except ConfigError as exc:
                raise HTTPFailure(422, _as_fields(str(exc))) from None
            except TubeletError as exc:
                raise HTTPFailure(415, f"{file.filename}: {exc}") from None
            finally:
                discard(path)
        finally:
            explaining.release()
        _keep_newest(explained, KEPT_EXPLANATIONS)
        base = str(request.url_for("files", ident=ident, name="x"))[: -len("x")]
        files = {k: base + Path(v).name for k, v in result["files"].items()}
        answer = {**result, "path": file.filename, "files": {**files, "json": base + "explanation.json"}}
        (explained / ident / "explanation.json").write_text(_json(answer))  # URLs, not this server's paths
        return answer

    @v1.get("/files/{ident}/{name}", name="files")
    def files(ident: str, name: str) -> FileResponse:
        """A file of an explanation (heatmap.gif, heatmap.mp4, report.html, ...)."""
        if not re.fullmatch(r"[0-9a-f]{32}", ident) or not re.fullmatch(r"[\w.-]+", name) or name.startswith("."):
            raise HTTPFailure(404, "no such file")
        target = explained / ident / name
        if not target.is_file():
            raise HTTPFailure(404, f"no such file (explanations are kept for the last {KEPT_EXPLANATIONS})")
        return FileResponse(target)

    @v1.post("/search")
    def search_index(query: Query) -> list[dict]:
        """The index's windows closest to a text query, best first (needs ``tubelet serve --index``)."""
        if config.index is None:
            raise HTTPFailure(409, "no index: start the server with --index INDEX (built by tubelet index)")
        try:
            return search(config.index, query.query, topk=query.topk, device=str(device))
        except TubeletError as exc:
            raise HTTPFailure(422, str(exc)) from None

    @v1.post("/reload", status_code=202)
    def reload(wait: bool = False) -> dict:
        """Load the checkpoint directory again and swap it in (in the background unless ``wait``)."""
        if wait:
            try:
                now = slot.load_now()
            except Exception as exc:
                raise HTTPFailure(409, f"reload failed, still serving the old model: {exc}") from None
            return {"status": "reloaded", "version": now.version}
        slot.reload()
        return {"status": "reloading", "version": slot.current.version if slot.current else 0}

    app.include_router(v1)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """``ok`` with the model's version once it is loaded; 503 while it loads."""
        now = slot.current
        body = {
            "status": "ok" if now is not None else ("loading" if slot.error is None else "error"),
            "version": now.version if now is not None else 0,
            "checkpoint": config.checkpoint,
            "labels": now.loaded.labels if now is not None else None,
            "error": slot.error,
            "batching": {"max_batch_ms": config.max_batch_ms, "queue": config.queue, "depth": batcher.depth()},
        }
        return JSONResponse(body, status_code=200 if now is not None else 503)

    @app.get("/metrics")
    def prometheus() -> Response:
        return Response(metrics.text(), media_type="text/plain; version=0.0.4")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(resources.files("tubelet.serve").joinpath("static/index.html").read_text())

    app.add_middleware(CrashGuard)
    app.add_middleware(UploadLimit, limit=int(config.max_upload_mb * 2**20))
    app.add_middleware(RequestRecorder, metrics=metrics)  # outermost: 413s and 500s count too
    return app


class CrashGuard:
    """ASGI middleware: a request that raises gets a JSON 500 and the exception stops here, so the connection and the
    server live on (Starlette's own handler answers 500 and then re-raises, which drops the connection)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def watched(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            log.exception("%s %s failed", scope.get("method"), scope.get("path"))
            if started:
                raise  # half a response is out: nothing to do but drop the connection
            response = JSONResponse({"error": f"internal error: {type(exc).__name__}: {exc}"}, status_code=500)
            await response(scope, receive, send)


def _as_fields(message: str) -> str:
    """A recipe's message in the API's words: its ``--window-seconds`` flag is the ``window_seconds`` field here."""
    return re.sub(r"--([a-z][a-z-]*)", lambda m: m.group(1).replace("-", "_"), message)


def _json(data) -> str:
    return json.dumps(data, indent=2) + "\n"


def _keep_newest(folder: Path, count: int) -> None:
    """Remove all but the `count` newest sub-folders of `folder`."""
    entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime)
    for old in entries[:-count]:
        shutil.rmtree(old, ignore_errors=True)
