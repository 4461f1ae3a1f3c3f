"""`iterate_batches`: batches in worker processes, and a file whose decoder kills its worker named and left out."""

import os
import signal

import pytest
import torch

from tubelet.data.loader import iterate_batches

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="workers that crash need fork")


class Files(torch.utils.data.Dataset):
    """Item i "decodes" ``paths[i]`` into the pair (i, path); the files in `crash_on` kill their worker with a real
    SIGSEGV, as a decoder crashing inside FFmpeg would. Follows `ClipDataset`'s protocol: it marks the file it is
    reading in ``crash_dir/<pid>`` first, and says which items read a file."""

    def __init__(self, paths: list[str], crash_on: set[str] = frozenset()):
        self.paths = paths
        self.crash_on = crash_on
        self.crash_dir = None

    def __len__(self) -> int:
        return len(self.paths)

    def item_indices_of(self, path: str) -> list[int]:
        return [i for i, p in enumerate(self.paths) if p == path]

    def __getitem__(self, index: int) -> tuple[int, str]:
        path = self.paths[index]
        if self.crash_dir is not None:
            with open(os.path.join(self.crash_dir, str(os.getpid())), "w") as f:
                f.write(path)
        if path in self.crash_on:
            os.kill(os.getpid(), signal.SIGSEGV)
        return index, path

    @staticmethod
    def collate(items: list[tuple[int, str]]) -> list[int]:
        return [index for index, _ in items]


PATHS = ["a.mp4", "b.mp4", "c.mp4", "bad.mp4", "d.mp4", "e.mp4", "bad.mp4", "f.mp4"]
BATCHES = [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_without_workers_batches_arrive_in_order():
    assert list(iterate_batches(Files(PATHS), BATCHES, workers=0)) == BATCHES


def test_with_workers_every_batch_arrives_once_in_order():
    dataset = Files(PATHS)
    assert list(iterate_batches(dataset, BATCHES, workers=2)) == BATCHES
    assert dataset.crash_dir is None  # its own marker directory, removed afterwards


def test_a_file_that_segfaults_its_worker_is_named_and_the_rest_still_arrive():
    crashes = []
    dataset = Files(PATHS, crash_on={"bad.mp4"})
    got = list(iterate_batches(dataset, BATCHES, workers=2, on_crash=lambda path, why: crashes.append((path, why))))
    assert [path for path, _ in crashes] == ["bad.mp4"]  # one crash: both its items were left out after it
    assert "DataLoader worker" in crashes[0][1]
    delivered = [i for batch in got for i in batch]
    assert sorted(delivered) == [0, 1, 2, 4, 5, 7]  # every item of every other file, once
    assert delivered == sorted(delivered)  # in the order of the batches
    assert dataset.crash_dir is None


def test_a_loader_whose_workers_keep_crashing_gives_up():
    dataset = Files(PATHS, crash_on={"a.mp4", "c.mp4"})
    crashes = []
    with pytest.raises(RuntimeError, match="2 DataLoader workers crashed; giving up"):
        list(iterate_batches(dataset, BATCHES, workers=1, on_crash=lambda p, _: crashes.append(p), max_crashes=1))
    assert crashes == ["a.mp4"]
