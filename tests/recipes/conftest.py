import pytest

from tubelet.data.sample import generate


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """Sample data with 3 clips per class: 5 train, 5 val, 5 test clips."""
    out = tmp_path_factory.mktemp("recipes") / "data"
    generate(out, seed=2, clips_per_class=3)
    return out
