"""tubelet: video foundation models over spacetime particles that know when and where they are."""

__version__ = "0.1.0"
