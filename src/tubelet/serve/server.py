"""Running the app: `serve` checks the bind and the key, then hands the app to uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path

from tubelet.errors import ConfigError
from tubelet.serve.app import ServeConfig, create_app
from tubelet.serve.limits import check_bind

log = logging.getLogger("tubelet.serve")


def check_config(config: ServeConfig, host: str) -> None:
    """Refuse what would serve badly or unsafely, before anything binds.

    Raises:
        ConfigError: a checkpoint or index that is not a directory, bad limits, or a non-loopback `host` without a key.
    """
    if not Path(config.checkpoint).is_dir():
        raise ConfigError(f"--checkpoint {config.checkpoint}: no such directory")
    if config.index is not None and not Path(config.index).is_dir():
        raise ConfigError(f"--index {config.index}: no such directory (build one with tubelet index)")
    for flag, value in (("--max-upload-mb", config.max_upload_mb), ("--max-seconds", config.max_seconds)):
        if value <= 0:
            raise ConfigError(f"{flag}: must be positive, got {value:g}")
    if config.max_batch_ms < 0 or config.queue < 1:
        raise ConfigError("--max-batch-ms must be 0 or more and --queue at least 1")
    check_bind(host, config.api_key)


def serve(config: ServeConfig, *, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve `config` on host:port until interrupted."""
    import uvicorn

    check_config(config, host)
    app = create_app(config)
    key = "on" if config.api_key else "off"
    log.info("serving %s on http://%s:%d (API key %s)", config.checkpoint, host, port, key)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
