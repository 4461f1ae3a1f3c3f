"""The request checks of `tubelet.serve.limits` on their own: the key, the bind, and a body cut off as it streams."""

import asyncio

import pytest

from tubelet.errors import ConfigError
from tubelet.serve.limits import UploadLimit, authorized, check_bind, is_loopback


def test_key_must_be_bearer_and_equal():
    assert authorized("Bearer k3y", "k3y") and authorized("bearer k3y", "k3y")
    assert not any(authorized(h, "k3y") for h in (None, "", "k3y", "Bearer k3", "Bearer k3yy", "Basic k3y"))


def test_only_loopback_without_a_key():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.10")
    check_bind("127.0.0.1", None)
    check_bind("0.0.0.0", "a key")
    with pytest.raises(ConfigError, match="--api-key-file"):
        check_bind("0.0.0.0", None)


def test_upload_limit_stops_reading_where_the_body_crosses_it():
    chunk, limit = 64 * 1024, 512 * 1024
    read = 0

    async def receive():  # an endless body with no Content-Length
        nonlocal read
        read += 1
        return {"type": "http.request", "body": b"x" * chunk, "more_body": True}

    async def app(scope, receive, send):  # reads until the body ends or the client leaves, as a form parser does
        while (await receive())["type"] == "http.request":
            pass
        await send({"type": "http.response.start", "status": 400, "headers": []})
        await send({"type": "http.response.body", "body": b"client left"})

    sent = []

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "headers": []}
    asyncio.run(UploadLimit(app, limit)(scope, receive, send))
    assert read == limit // chunk + 1  # the chunk that crossed the limit was the last one read
    assert sent[0]["status"] == 413 and b"max-upload-mb 0.5" in sent[1]["body"]
    assert len(sent) == 2  # the app's own answer was dropped

    sent.clear()
    told = {**scope, "headers": [(b"content-length", str(limit + 1).encode())]}
    read = 0
    asyncio.run(UploadLimit(app, limit)(told, receive, send))
    assert read == 0 and sent[0]["status"] == 413  # refused before a byte is read
