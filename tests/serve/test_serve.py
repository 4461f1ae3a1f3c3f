"""`tubelet serve` over real HTTP on loopback: the answers, the limits, overload, crashes, batching and reload."""

import ctypes
import json
import os
import stat
import threading
import time

import httpx
import pytest

from tubelet.cli import main
from tubelet.data import pipeline
from tubelet.serve import ServeConfig, batching
from tubelet.serve import app as app_module

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def server(checkpoint, start_server):
    """Open (no key), micro-batching with a 300 ms gathering window so concurrent requests share forwards."""
    return start_server(ServeConfig(checkpoint=str(checkpoint), max_batch_ms=300, watch=False))


@pytest.fixture(scope="module")
def strict(checkpoint, start_server):
    """With a key, a 0.5 MiB upload limit, a queue of 1 and no micro-batching."""
    config = ServeConfig(
        checkpoint=str(checkpoint), api_key=KEY, max_upload_mb=0.5, queue=1, max_batch_ms=0, watch=False
    )
    return start_server(config)


def upload(path, name=None, **fields):
    return {"files": {"file": (name or path.name, path.read_bytes(), "video/mp4")}, "data": fields}


def cli_predict(capsys, checkpoint, video, *flags) -> dict:
    assert main(["predict", "--checkpoint", str(checkpoint), str(video), "--json", "--workers", "0", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def assert_same_prediction(served: dict, printed: dict) -> None:
    """Equal but for floating-point noise: a window packed beside other requests' windows may differ in the last bit."""
    assert served.keys() == printed.keys()
    assert served["label"] == printed["label"] and served["duration_s"] == printed["duration_s"]
    assert [t["label"] for t in served["topk"]] == [t["label"] for t in printed["topk"]]
    assert [t["score"] for t in served["topk"]] == pytest.approx([t["score"] for t in printed["topk"]], abs=2e-4)
    assert [(w["start"], w["end"], w["label"]) for w in served.get("windows", [])] == [
        (w["start"], w["end"], w["label"]) for w in printed.get("windows", [])
    ]


def test_health_metrics_schema_and_page(server, labels):
    health = server.client.get("/healthz").json()
    assert health["status"] == "ok" and health["version"] == 1 and health["labels"] == labels
    schema = server.client.get("/openapi.json").json()
    assert {"/v1/predict", "/v1/explain", "/v1/search", "/v1/reload"} <= set(schema["paths"])
    page = server.client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text
    assert "http://" not in page.text.replace("http://www.w3.org/2000/svg", "")  # no CDN: nothing from elsewhere
    metrics = server.client.get("/metrics").text
    assert 'tubelet_requests_total{path="/healthz",status="200"}' in metrics
    assert "tubelet_queue_depth 0.0" in metrics and "tubelet_model_version 1.0" in metrics


@pytest.mark.parametrize("flags", [(), ("--window-seconds", "1.5", "--stride-seconds", "0.5")])
def test_predict_is_what_the_cli_prints(server, checkpoint, video, capsys, flags):
    fields = {k.strip("-").replace("-", "_"): v for k, v in zip(flags[::2], flags[1::2])}
    response = server.client.post("/v1/predict", **upload(video, name="clip.mp4", **fields))
    assert response.status_code == 200, response.text
    served = response.json()
    assert served["path"] == "clip.mp4"
    printed = cli_predict(capsys, checkpoint, video, *flags)
    assert_same_prediction(served, printed)
    assert len(served["windows"]) == (3 if not flags else 4)  # 3 s: 0-1, 1-2, 2-3 / 0-1.5, 0.5-2, 1-2.5, 1.5-3


def test_bad_fields_are_422_and_non_video_415(server, video, tmp_path):
    for fields in ({"window_seconds": "abc"}, {"window_seconds": "-1"}, {"stride_seconds": "0"}):
        response = server.client.post("/v1/predict", **upload(video, **fields))
        assert response.status_code == 422, (fields, response.text)
        assert "error" in response.json()
    assert server.client.post("/v1/predict", data={"window_seconds": "1"}).status_code == 422  # no file
    short = server.client.post("/v1/predict", **upload(video, window_seconds="0.1"))  # under one tubelet (2 frames)
    assert short.status_code == 422 and short.json()["error"].startswith("window_seconds 0.1: holds 0.4 frames")
    asked = server.client.post("/v1/predict", **upload(video, question="which way?"))  # not a VQA checkpoint
    assert asked.status_code == 422 and "question" in asked.json()["error"]
    fake = tmp_path / "not_a_video.mp4"
    fake.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(4000))  # an mp4 header, then noise
    response = server.client.post("/v1/predict", **upload(fake))
    assert response.status_code == 415 and "not_a_video.mp4" in response.json()["error"]
    assert server.client.post("/v1/search", json={"query": "a square"}).status_code == 409  # no --index


def test_uploads_are_private_and_deleted(server, video):
    work = server.app.state.work
    assert stat.S_IMODE(work.stat().st_mode) == 0o700
    assert server.client.post("/v1/predict", **upload(video)).status_code == 200
    assert server.client.post("/v1/predict", files={"file": ("x.mp4", b"junk", "video/mp4")}).status_code == 415
    assert list((work / "uploads").iterdir()) == []


def test_concurrent_requests_are_micro_batched(server, video, checkpoint, capsys):
    batcher = server.app.state.batcher
    before_batches, before_requests = batcher.batches, batcher.requests
    results = [None] * 8

    def ask(i: int) -> None:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            results[i] = client.post("/v1/predict", **upload(video))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in results] == [200] * 8
    printed = cli_predict(capsys, checkpoint, video)
    for r in results:
        assert_same_prediction({**r.json(), "path": printed["path"]}, printed)
    assert batcher.requests - before_requests == 8
    assert batcher.batches - before_batches < 8 and batcher.largest >= 2  # several requests shared a forward
    metrics = server.client.get("/metrics").text
    assert "tubelet_batch_requests_count" in metrics and "tubelet_clips_total" in metrics


def test_a_crash_is_500_and_the_server_goes_on(server, video, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("planted failure")

    monkeypatch.setattr(app_module, "plan_windows", boom)
    response = server.client.post("/v1/predict", **upload(video))
    assert response.status_code == 500 and "planted failure" in response.json()["error"]
    monkeypatch.undo()
    assert server.client.post("/v1/predict", **upload(video)).status_code == 200


def test_a_file_that_crashes_the_decoder_is_415_and_the_server_goes_on(
    checkpoint, start_server, video, write_square, tmp_path, monkeypatch
):
    # A real SIGSEGV inside the decoder, as a broken FFmpeg would cause, for one file (known by its size): the
    # worker process dies, not the server, and a request for another file is served by a fresh worker.
    victim = write_square(tmp_path / "victim.mp4", seconds=2.0)
    size = victim.stat().st_size
    real = pipeline.decode

    def decode_or_crash(path, **kwargs):
        if os.path.getsize(path) == size:
            ctypes.string_at(0)
        return real(path, **kwargs)

    monkeypatch.setattr(pipeline, "decode", decode_or_crash)  # the workers fork from here: they crash too
    crashing = start_server(ServeConfig(checkpoint=str(checkpoint), watch=False))
    response = crashing.client.post("/v1/predict", **upload(victim))
    assert response.status_code == 415 and "the decoder crashed" in response.json()["error"]
    assert crashing.client.post("/v1/predict", **upload(video)).status_code == 200
    assert crashing.client.get("/healthz").status_code == 200


def test_explain_returns_urls_that_download(server, video, labels):
    response = server.client.post("/v1/explain", **upload(video, name="clip.mp4"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["path"] == "clip.mp4" and body["prediction"]["label"] in labels and body["top_particles"]
    gif = server.client.get(body["files"]["gif"])
    assert gif.status_code == 200 and gif.content[:4] == b"GIF8"
    mp4 = server.client.get(body["files"]["mp4"])
    assert mp4.status_code == 200 and mp4.content[4:8] == b"ftyp"
    report = server.client.get(body["files"]["html"])
    assert report.status_code == 200 and "<html" in report.text.lower()
    saved = server.client.get(body["files"]["json"]).json()
    assert saved["target"] == body["target"] and saved["files"] == body["files"]
    assert server.client.get("/v1/files/" + "0" * 32 + "/report.html").status_code == 404


def test_api_key_and_upload_limit(strict, video):
    client = strict.client
    refused = client.post("/v1/predict", **upload(video))
    assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/predict", headers={"Authorization": "Bearer wrong"}, **upload(video)).status_code == 401
    assert client.post("/v1/reload", headers={"Authorization": "Basic " + KEY}).status_code == 401
    auth = {"Authorization": f"Bearer {KEY}"}
    assert client.post("/v1/predict", headers=auth, **upload(video)).status_code == 200
    assert client.get("/healthz").status_code == 200  # health needs no key
    big = os.urandom(600 * 1024)
    said = client.post("/v1/predict", headers=auth, files={"file": ("big.mp4", big, "video/mp4")})
    assert said.status_code == 413 and "max-upload-mb" in said.json()["error"]

    def chunks():  # a multipart body sent chunked, with no Content-Length: the limit is found as it streams in
        yield b'--B\r\nContent-Disposition: form-data; name="file"; filename="big.mp4"\r\n\r\n'
        for _ in range(40):
            yield os.urandom(64 * 1024)
        yield b"\r\n--B--\r\n"

    multipart = {**auth, "Content-Type": "multipart/form-data; boundary=B"}
    streamed = client.post("/v1/predict", headers=multipart, content=chunks())
    assert streamed.status_code == 413
    assert list((strict.app.state.work / "uploads").iterdir()) == []


def test_a_full_queue_is_429(strict, video, monkeypatch):
    entered, release = threading.Event(), threading.Event()
    original = batching.run_model

    def blocked(*args, **kwargs):
        entered.set()
        release.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(batching, "run_model", blocked)
    auth = {"Authorization": f"Bearer {KEY}"}
    answers = {}

    def ask(name: str) -> None:
        with httpx.Client(base_url=strict.url, timeout=60) as client:
            answers[name] = client.post("/v1/predict", headers=auth, **upload(video)).status_code

    first = threading.Thread(target=ask, args=("first",))
    first.start()
    assert entered.wait(30)  # the worker holds the first request
    second = threading.Thread(target=ask, args=("second",))
    second.start()
    deadline = time.monotonic() + 30
    while strict.app.state.batcher.depth() < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    third = strict.client.post("/v1/predict", headers=auth, **upload(video))
    assert third.status_code == 429 and "busy" in third.json()["error"]
    release.set()
    first.join()
    second.join()
    assert answers == {"first": 200, "second": 200}


def test_reload_swaps_in_a_new_checkpoint(tmp_path, start_server, video, labels, write_checkpoint):
    directory = write_checkpoint(tmp_path / "ckpt", labels)
    running = start_server(ServeConfig(checkpoint=str(directory), api_key=KEY))
    auth = {"Authorization": f"Bearer {KEY}"}

    def wait_for(version: int) -> dict:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            health = running.client.get("/healthz").json()
            if health["version"] >= version:
                return health
            time.sleep(0.1)
        raise AssertionError(f"still version {health['version']}: {health}")

    assert wait_for(1)["labels"] == labels
    renamed = ["cat", "dog", "bird", "fish"]
    write_checkpoint(directory, renamed, seed=1)  # an atomic directory swap, as training writes: the watch sees it
    assert wait_for(2)["labels"] == renamed
    predicted = running.client.post("/v1/predict", headers=auth, **upload(video)).json()
    assert predicted["label"] in renamed and len(predicted["topk"]) == 4

    assert running.client.post("/v1/reload?wait=true").status_code == 401
    said = running.client.post("/v1/reload?wait=true", headers=auth)
    assert said.status_code == 202 and said.json()["version"] == 3

    (directory / "config.json").write_text("{ half written")  # a broken checkpoint: the old model stays
    said = running.client.post("/v1/reload?wait=true", headers=auth)
    assert said.status_code == 409 and "config.json" in said.json()["error"]
    health = running.client.get("/healthz").json()
    assert health["status"] == "ok" and health["version"] == 3 and "config.json" in health["error"]
    assert running.client.post("/v1/predict", headers=auth, **upload(video)).json()["label"] in renamed


def test_refuses_to_bind_beyond_loopback_without_a_key(checkpoint, capsys, tmp_path):
    assert main(["serve", "--checkpoint", str(checkpoint), "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--host 0.0.0.0" in err and "--api-key-file" in err
    empty = tmp_path / "key"
    empty.write_text("\n")
    assert main(["serve", "--checkpoint", str(checkpoint), "--api-key-file", str(empty)]) == 2
    assert "empty" in capsys.readouterr().err


def test_503_while_the_model_loads_and_413_for_a_long_video(checkpoint, start_server, video, monkeypatch):
    from tubelet.serve import served

    loading, original = threading.Event(), served.load

    def slow(*args, **kwargs):
        loading.wait(30)
        return original(*args, **kwargs)

    monkeypatch.setattr(served, "load", slow)
    running = start_server(ServeConfig(checkpoint=str(checkpoint), max_seconds=2.5, watch=False), ready=False)
    health = running.client.get("/healthz")
    assert health.status_code == 503 and health.json()["status"] == "loading"
    said = running.client.post("/v1/predict", **upload(video))
    assert said.status_code == 503 and "loading" in said.json()["error"]
    loading.set()
    deadline = time.monotonic() + 20
    while running.client.get("/healthz").status_code != 200 and time.monotonic() < deadline:
        time.sleep(0.05)
    said = running.client.post("/v1/predict", **upload(video))  # 3 s
    assert said.status_code == 413 and "--max-seconds 2.5" in said.json()["error"]


def test_search_over_an_index(retrieval_index, start_server, checkpoint):
    from tubelet.recipes.search import search

    index, _ = retrieval_index
    running = start_server(ServeConfig(checkpoint=str(checkpoint), index=str(index), watch=False))
    said = running.client.post("/v1/search", json={"query": "a square moves right", "topk": 2})
    assert said.status_code == 200, said.text
    assert said.json() == search(str(index), "a square moves right", topk=2)
    assert len(said.json()) == 2 and said.json()[0]["start"] < said.json()[0]["end"]
    assert running.client.post("/v1/search", json={"query": " "}).status_code == 422  # empty, says the recipe
    assert running.client.post("/v1/search", json={"text": "x"}).status_code == 422  # no query field
