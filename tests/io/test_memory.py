"""Decoding in a loop (as a DataLoader worker does for hours) must not grow resident memory."""

import psutil

from tubelet.io import decode, probe, write_video

ROUNDS = 400
# One leaked 8-frame 64x48 clip is ~74 KB and one leaked FFmpeg context far more: 400 rounds of either pass 20 MB.
MAX_GROWTH_MB = 20


def test_repeated_decoding_keeps_resident_memory_flat(tmp_path, numbered_frames):
    path = write_video(tmp_path / "loop.mp4", numbered_frames(30), fps=15, crf=10)
    process = psutil.Process()

    def one_round():
        sparse = decode(path, num_frames=8)  # seeks
        resampled = decode(path, fps=5, size=24)  # resizes through swscale
        info = probe(path)
        return len(sparse) + len(resampled) + info.frames

    for _ in range(30):  # warm-up: allocator pools, codec tables, the frame-index cache
        one_round()
    baseline = process.memory_info().rss

    for _ in range(ROUNDS):
        assert one_round() == 8 + 10 + 30

    growth_mb = (process.memory_info().rss - baseline) / 2**20
    assert growth_mb < MAX_GROWTH_MB, f"RSS grew {growth_mb:.1f} MB over {ROUNDS} decode rounds"
