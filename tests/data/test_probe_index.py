import json
import os
import pickle
import sqlite3

import numpy as np
import pytest

from tubelet.data import Sample, load_dataset
from tubelet.data.columns import Samples, VideoInfos
from tubelet.data.probe_index import create_index, default_index_path, probe_files
from tubelet.errors import DataError
from tubelet.io import probe, write_video


def _video(path, frames=6, width=48):
    rng = np.random.default_rng(frames)
    return write_video(path, rng.integers(0, 255, (frames, 32, width, 3), dtype=np.uint8), fps=12)


@pytest.fixture
def windows(tmp_path):
    """A manifest of 6 windows over 2 good files and 1 corrupt one."""
    _video(tmp_path / "a.mp4", frames=12)
    _video(tmp_path / "b.mp4", frames=6)
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    rows = ["a.mp4,cat,0,0.5", "a.mp4,cat,0.5,1.0", "b.mp4,dog,0,0.25", "b.mp4,dog,,", "broken.mp4,dog,0,1"]
    (tmp_path / "train.csv").write_text("path,label,start,end\n" + "\n".join(rows) + "\n")
    return tmp_path / "train.csv"


@pytest.fixture
def probes(monkeypatch):
    """The paths the index module opens with FFmpeg, in order."""
    import tubelet.data.probe_index as probe_index

    opened = []

    def counting(path):
        opened.append(os.path.basename(path))
        return probe(path)

    monkeypatch.setattr(probe_index, "probe", counting)
    return opened


def test_default_index_sits_beside_the_manifest_or_in_the_folder(windows):
    assert default_index_path(windows) == windows.parent / "train.csv.probe.sqlite"
    assert default_index_path(windows.parent) == windows.parent / ".tubelet-probe.sqlite"


def test_without_an_index_every_file_is_probed_each_time(windows, probes):
    for _ in range(2):
        data = load_dataset(windows)
        assert (data.probed, data.reused) == (3, 0)
    assert sorted(probes) == sorted(["a.mp4", "b.mp4", "broken.mp4"] * 2)  # once per file, not per window
    assert not default_index_path(windows).exists()


def test_an_index_spares_probing_and_gives_the_same_dataset(windows, probes):
    probed = load_dataset(windows)
    create_index(default_index_path(windows))
    first = load_dataset(windows)  # found beside the manifest: fills it
    assert (first.probed, first.reused) == (3, 0)
    probes.clear()
    again = load_dataset(windows)
    assert probes == []  # nothing opened
    assert (again.probed, again.reused) == (0, 3)
    assert list(again.infos) == list(probed.infos) == [probe(s.path) for s in probed.samples]
    assert list(again.samples) == list(probed.samples)
    assert again.skipped == probed.skipped


def test_a_changed_file_is_probed_again(windows, probes):
    index = create_index(windows.parent / "elsewhere.sqlite")
    assert load_dataset(windows, index=index).probed == 3
    before = os.stat(windows.parent / "b.mp4")
    _video(windows.parent / "b.mp4", frames=10, width=64)  # rewritten: new size and mtime
    os.utime(windows.parent / "b.mp4", ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))
    probes.clear()
    data = load_dataset(windows, index=index)
    assert probes == ["b.mp4"]
    assert (data.probed, data.reused) == (1, 2)
    b = data.infos[2]
    assert (b.frames, b.width) == (10, 64)
    probes.clear()
    assert load_dataset(windows, index=index).reused == 3 and probes == []  # and the new facts were written back


def test_a_corrupt_file_recorded_as_a_failure_is_skipped_with_its_reason(windows, probes):
    index = create_index(windows.parent / "i.sqlite")
    reason = load_dataset(windows, index=index).skipped[0][1]
    probes.clear()
    data = load_dataset(windows, index=index)
    assert "broken.mp4" not in probes
    assert data.skipped == [(str(windows.parent / "broken.mp4"), reason)]
    assert "broken.mp4" in reason and len(data) == 4
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT reason FROM probes WHERE path LIKE '%broken.mp4'").fetchone() == (reason,)


def test_a_read_only_index_is_read_but_not_written(windows, probes, monkeypatch):
    index = create_index(windows.parent / "i.sqlite")
    probe_files([str(windows.parent / "a.mp4")], index=index)
    # as a user without write permission sees it (chmod would not stop root, which runs these tests in CI)
    monkeypatch.setattr("tubelet.data.probe_index.os.access", lambda path, mode: mode != os.W_OK)
    probes.clear()
    data = load_dataset(windows, index=index)
    assert (data.probed, data.reused) == (2, 1)
    assert sorted(probes) == ["b.mp4", "broken.mp4"]
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT count(*) FROM probes").fetchone() == (1,)


def test_a_file_that_is_not_an_index_is_an_error_naming_it(windows):
    (windows.parent / "train.csv.probe.sqlite").write_text("path,size\n")
    with pytest.raises(DataError, match="train.csv.probe.sqlite: not a tubelet probe index"):
        load_dataset(windows)


def test_compact_infos_behave_like_the_list_of_probe_results(windows):
    files = [probe(windows.parent / "a.mp4"), probe(windows.parent / "b.mp4")]
    expected = [files[i] for i in (0, 0, 1, 1, 0)]
    infos = VideoInfos(files, [0, 0, 1, 1, 0])
    assert len(infos) == 5 and infos == expected and list(infos) == expected
    assert infos[2] == expected[2] and infos[-1] == expected[-1]
    assert list(infos[1:4]) == expected[1:4] and list(infos[::-1]) == expected[::-1]
    assert list(infos.take([4, 2])) == [expected[4], expected[2]]
    assert infos.duration_s.tolist() == [i.duration_s for i in expected]
    assert infos.per_file() == [(files[0], 3), (files[1], 2)]
    assert [i for i, _ in zip(infos, range(5))] == expected  # zip, as callers pair samples and infos
    with pytest.raises(IndexError):
        infos[5]
    assert pickle.loads(pickle.dumps(infos[1:])) == expected[1:]  # as DataLoader workers started by spawn get them


def test_compact_samples_behave_like_the_list_of_samples(tmp_path):
    samples = [
        Sample(path=tmp_path / "a.mp4", label="cat", start=0.5, end=1.0),
        Sample(path=tmp_path / "a.mp4", label=None),
        Sample(path=tmp_path / "b.mp4", label="dog", start=0.0),
    ]
    compact = Samples.from_samples(samples)
    assert len(compact) == 3 and list(compact) == samples and compact == samples
    assert compact[1] == samples[1] and list(compact[1:]) == samples[1:]
    assert compact.label_counts() == {"cat": 1, None: 1, "dog": 1}
    assert compact.take([2, 0]).label_counts() == {"cat": 1, "dog": 1}
    assert pickle.loads(pickle.dumps(compact)) == samples


def test_scan_index_writes_then_reuses(windows, tubelet_cli):
    first = json.loads(tubelet_cli("scan", windows, "--index", "--json").stdout)
    assert (first["probed"], first["reused"]) == (3, 0)
    assert first["index"] == str(default_index_path(windows))
    again = json.loads(tubelet_cli("scan", windows, "--index", "--json").stdout)
    assert (again["probed"], again["reused"]) == (0, 3)
    plain = json.loads(tubelet_cli("scan", windows, "--json").stdout)  # no flag: the index beside it is still read
    assert (plain["index"], plain["probed"], plain["reused"]) == (None, 0, 3)
    keys = ["source", "split", "clips", "classes", "skipped", "total_duration_s", "duration_s_range", "fps", "sizes"]
    keys += ["codecs", "with_audio", "index", "probed", "reused"]
    assert list(first) == keys
    assert {k: first[k] for k in keys[:11]} == {k: plain[k] for k in keys[:11]}
    assert first["clips"] == 4 and first["classes"] == {"cat": 2, "dog": 2}
    assert [s["path"] for s in first["skipped"]] == [str(windows.parent / "broken.mp4")]
    elsewhere = windows.parent / "sub" / "my.sqlite"
    (windows.parent / "sub").mkdir()
    assert json.loads(tubelet_cli("scan", windows, "--index", elsewhere, "--json").stdout)["probed"] == 3
    assert elsewhere.is_file()
