import pytest

from tubelet.data.sample import generate
from tubelet.data.sample_av import generate_av


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Sample data with 3 clips per class: 5 train, 5 val, 5 test clips."""
    out = tmp_path_factory.mktemp("recipes") / "data"
    generate(out, seed=2, clips_per_class=3)
    return out


@pytest.fixture(scope="session")
def av_data(tmp_path_factory):
    """The AV sample data at 3 clips per class: 6 train, 6 val, 6 test clips with captions and 4 questions each.

    Read-only: tests that need other manifests write them elsewhere.
    """
    out = tmp_path_factory.mktemp("av") / "data"
    generate_av(out, seed=1, clips_per_class=3, workers=1)
    return out
