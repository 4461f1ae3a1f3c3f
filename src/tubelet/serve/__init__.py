"""``tubelet serve``: an HTTP API and a web page over a checkpoint (`create_app`), micro-batched, reloadable."""

from tubelet.serve.app import ServeConfig, create_app

__all__ = ["ServeConfig", "create_app"]
