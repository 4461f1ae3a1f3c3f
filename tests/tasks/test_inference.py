"""Evaluation windows: inside each sample's own span (its manifest start/end), spread evenly."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tubelet.data.manifest import Sample
from tubelet.tasks.inference import view_windows


def _data(*spans_and_durations):
    samples = [Sample(path=f"v{i}.mp4", start=s, end=e) for i, (s, e, _) in enumerate(spans_and_durations)]
    infos = [SimpleNamespace(duration_s=d) for _, _, d in spans_and_durations]
    return SimpleNamespace(samples=samples, infos=infos)


def test_windows_stay_inside_the_manifest_span_of_each_sample():
    data = _data((None, None, 10.0), (4.0, 8.0, 10.0), (6.0, None, 10.0), (1.0, 20.0, 5.0))
    windows = view_windows(data, 2.0, 3)
    by_video = {v: [(round(s, 6), round(e, 6)) for u, s, e in windows if u == v] for v in range(4)}
    assert by_video[0] == [(0.0, 2.0), (4.0, 6.0), (8.0, 10.0)]  # the whole video
    assert by_video[1] == [(4.0, 6.0), (5.0, 7.0), (6.0, 8.0)]  # only [4, 8]
    assert by_video[2] == [(6.0, 8.0), (7.0, 9.0), (8.0, 10.0)]  # from 6 s to the end
    assert by_video[3] == [(1.0, 3.0), (2.0, 4.0), (3.0, 5.0)]  # an end past the video: the video's end
    centred = view_windows(_data((4.0, 5.0, 10.0)), 2.0, 3)  # a span shorter than a window: all of it, once
    assert centred == [(0, 4.0, 5.0)]


@pytest.mark.parametrize("views", [1, 2])
def test_one_view_is_the_centre_of_the_span(views):
    windows = view_windows(_data((2.0, 8.0, 10.0)), 2.0, views)
    starts = [s for _, s, _ in windows]
    assert starts == ([4.0] if views == 1 else [2.0, 6.0])
