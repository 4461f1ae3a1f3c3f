"""What a request must bring: the API key, a body within the upload limit, a real video, a loopback bind without a key.

The upload limit is checked while the body streams in (`UploadLimit`, an ASGI middleware): a ``Content-Length`` over
the limit is refused before a byte is read, and a body that grows past it is cut off where it crosses the limit, so
a client cannot fill the disk by not saying how much it sends.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
import shutil
import socket
import uuid
from pathlib import Path

from tubelet.errors import ConfigError


def read_key(path: str) -> str:
    """The API key in `path` (its first line, stripped).

    Raises:
        ConfigError: a file that cannot be read or holds no key.
    """
    try:
        key = Path(path).read_text().strip().splitlines()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path}: {exc.strerror}") from None
    if not key or not key[0].strip():
        raise ConfigError(f"--api-key-file {path}: empty; write the key on its first line")
    return key[0].strip()


def authorized(header: str | None, key: str) -> bool:
    """Whether an ``Authorization`` header is ``Bearer <key>`` (compared in constant time)."""
    scheme, _, given = (header or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) only ever binds to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_bind(host: str, key: str | None) -> None:
    """Refuse to listen beyond loopback without an API key.

    Raises:
        ConfigError: a non-loopback `host` and no key.
    """
    if key is None and not is_loopback(host):
        raise ConfigError(
            f"--host {host}: refusing to serve beyond this machine without --api-key-file (or bind 127.0.0.1)"
        )


def save_upload(source, folder: Path, name: str | None) -> Path:
    """Copy an uploaded file (a file object) to a new private sub-folder of `folder`; returns its path.

    The sub-folder is made with mode 0700 and holds only this upload; `discard` removes it.
    """
    own = folder / uuid.uuid4().hex
    own.mkdir(mode=0o700)
    suffix = Path(name or "").suffix.lower()
    target = own / f"upload{suffix if suffix.isascii() and len(suffix) <= 8 else ''}"
    with open(target, "wb") as out:
        os.chmod(target, 0o600)
        shutil.copyfileobj(source, out, length=1 << 20)
    return target


def discard(path: Path) -> None:
    """Remove an upload and its private sub-folder."""
    shutil.rmtree(path.parent, ignore_errors=True)


class UploadLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413, checked as it streams in."""

    def __init__(self, app, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._refuse(send)
        seen, over, replied = 0, False, False

        async def counted():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    over = True  # the app sees the client leave; its reply is replaced by ours
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message):
            nonlocal replied
            if over:
                if not replied:
                    replied = True
                    await self._refuse(send)
                return
            replied = True
            await send(message)

        try:
            await self.app(scope, counted, guarded)
        except Exception:
            if not over:
                raise
        if over and not replied:
            await self._refuse(send)

    async def _refuse(self, send) -> None:
        megabytes = self.limit / 2**20
        body = json.dumps({"error": f"upload larger than --max-upload-mb {megabytes:g}"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"connection", b"close")],
            }
        )
        await send({"type": "http.response.body", "body": body})
