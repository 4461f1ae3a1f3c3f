"""The parity check's batches (real encoded clips, pruned and not, short to long, one to many clips) and its numbers."""

import pytest
import torch

from tubelet.data.transforms import Preprocessing
from tubelet.export.parity import check_cases, generated_clips, parity
from tubelet.io import probe
from tubelet.models import Encoder, model_config

PRE = Preprocessing(size=64, max_long_side=96, sample_fps=4.0, clip_seconds=1.0)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    files = generated_clips(tmp_path_factory.mktemp("clips"), PRE)
    return files, check_cases(files, PRE)


def test_generated_clips_are_real_videos_of_twice_the_window(cases):
    files, _ = cases
    assert [f.name for f in files] == ["pan.mp4", "fixed.mp4"]
    for f in files:
        info = probe(f)
        assert info.duration_s == pytest.approx(2 * PRE.clip_seconds, abs=0.1)
        assert (info.width, info.height) == (160, 120)


def test_cases_run_from_one_short_clip_to_all_clips_packed(cases):
    _, batches = cases
    names = [c.name for c in batches]
    assert names[:4] == ["pan.mp4 short 0.5 s", "pan.mp4 window 1 s", "pan.mp4 window unpruned 1 s", "pan.mp4 long 2 s"]
    assert names[-1] == "8 clips packed" and batches[-1].packed.num_clips == 8
    assert all(c.packed.num_clips == 1 for c in batches[:-1])
    sizes = {c.name: len(c.packed) for c in batches}
    assert sizes["8 clips packed"] == sum(len(c.packed) for c in batches[:-1])
    # 4 fps, tubelets of 2 frames, 64x85 -> 4x6 grid: a short window is one tubelet deep, a long one four.
    assert sizes["pan.mp4 window unpruned 1 s"] == 2 * 4 * 6 and sizes["pan.mp4 long 2 s"] >= 3 * 4 * 6
    # The fixed camera prunes most of its still background; the pan keeps nearly everything.
    assert sizes["fixed.mp4 window 1 s"] < 0.8 * sizes["fixed.mp4 window unpruned 1 s"]
    assert sizes["pan.mp4 window 1 s"] > 0.9 * sizes["pan.mp4 window unpruned 1 s"]


def test_parity_reports_the_largest_difference_and_top1_agreement(cases):
    _, batches = cases
    torch.manual_seed(0)
    eager = Encoder(model_config("test", num_classes=3)).eval()
    same = parity(eager, lambda p: eager(p), batches)
    assert same["max_abs_diff"] == 0 and same["top1_agreement"] == 1
    assert same["particles"] == [len(c.packed) for c in batches]
    shifted = parity(eager, lambda p: eager(p) + 0.25, batches)  # every logit moved: same top class
    assert shifted["max_abs_diff"] == pytest.approx(0.25, abs=1e-6) and shifted["top1_agreement"] == 1

    def flipped(p):  # the class eager ranks last gets the top score
        logits = eager(p)
        return logits - 100 * torch.nn.functional.one_hot(logits.argmax(-1), 3)

    assert parity(eager, flipped, batches)["top1_agreement"] == 0
