"""The heat overlay: on a busy, colourful frame every colour in the picture is heat."""

import numpy as np
from matplotlib import colormaps

from tubelet.explain.render import overlay


def _chroma(pixels: np.ndarray) -> np.ndarray:
    pixels = pixels.astype(int)
    return pixels.max(-1) - pixels.min(-1)


def test_where_there_is_no_heat_the_frame_is_grey_and_where_there_is_heat_its_colour_shows():
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)  # every colour, everywhere
    heat = np.zeros((2, 32, 32), np.float32)
    heat[:, 8:16, 8:16] = 1.0
    shown = overlay(frames, heat)
    cold, hot = heat == 0, heat == 1
    assert _chroma(shown[cold]).mean() < 0.2 * _chroma(frames[cold]).mean()  # greyed: colour here would be heat
    assert shown[cold].mean() < 0.7 * frames[cold].mean()  # and dimmed, so that heat stands out in brightness too
    top = np.array(colormaps["inferno"](1.0)[:3]) * 255
    assert np.abs(shown[hot].mean(0) - top).max() < 25  # the colour bar's top colour, whatever lies beneath
