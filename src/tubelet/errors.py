"""Error types for bad user input. Each carries a one-line message naming the file or field and what failed."""


class TubeletError(Exception):
    """Base of every error caused by user input; the CLI prints it as one line, without a traceback."""


class VideoError(TubeletError):
    """A video file could not be opened, probed or decoded.

    The message is ``"<path>: <what failed>"``.
    """

    def __init__(self, path, reason: str):
        self.path = str(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever FFmpeg said
        super().__init__(f"{self.path}: {self.reason}")


class ConfigError(TubeletError):
    """A configuration value or command-line flag is invalid; the message names the field."""


class DataError(TubeletError):
    """A dataset or manifest is unusable (missing directory, empty class, bad column)."""


class ExportError(TubeletError):
    """A model cannot be exported, or its export does not match it (the parity check failed)."""
