import json
import logging

import numpy as np
import pytest

from tubelet.data import Sample, load_dataset, read_manifest, read_samples
from tubelet.errors import DataError
from tubelet.io import write_video


def _video(path, frames=6):
    rng = np.random.default_rng(0)
    return write_video(path, rng.integers(0, 255, (frames, 32, 48, 3), dtype=np.uint8), fps=12)


@pytest.fixture
def folders(tmp_path):
    for label in ("cat", "dog"):
        for i in range(2):
            _video(tmp_path / label / f"{label}{i}.mp4")
    return tmp_path


def test_class_folders_give_labels_from_folder_names(folders):
    samples, labels = read_samples(folders)
    assert labels == ["cat", "dog"]
    assert sorted((s.path.name, s.label) for s in samples) == [
        ("cat0.mp4", "cat"),
        ("cat1.mp4", "cat"),
        ("dog0.mp4", "dog"),
        ("dog1.mp4", "dog"),
    ]


def test_csv_manifest_with_windows_and_relative_paths(folders):
    (folders / "train.csv").write_text("path,label,start,end\ncat/cat0.mp4,cat,0.1,0.4\ndog/dog1.mp4,dog,,\n")
    samples, labels = read_samples(folders, split="train")
    assert labels == ["cat", "dog"]
    assert samples[0] == Sample(path=folders / "cat/cat0.mp4", label="cat", start=0.1, end=0.4)
    assert samples[1].start is None and samples[1].path == folders / "dog/dog1.mp4"


def test_csv_with_a_byte_order_mark_reads_like_one_without(tmp_path):
    text = "path,label,start,end\na.mp4,cat,0.1,0.4\n"
    (tmp_path / "plain.csv").write_text(text, encoding="utf-8")
    (tmp_path / "excel.csv").write_text(text, encoding="utf-8-sig")  # what Excel's "CSV UTF-8" writes
    assert (tmp_path / "excel.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_manifest(tmp_path / "excel.csv") == read_manifest(tmp_path / "plain.csv")


def test_duplicate_rows_are_kept_and_named_in_a_warning(tmp_path, caplog):
    rows = "a.mp4,cat,0,1\nb.mp4,dog,0,1\na.mp4,cat,0,1\na.mp4,cat,1,2\n"  # line 4 repeats line 2; line 5 differs
    (tmp_path / "m.csv").write_text("path,label,start,end\n" + rows)
    with caplog.at_level(logging.WARNING, logger="tubelet.data"):
        samples = read_manifest(tmp_path / "m.csv")
    assert [(s.path.name, s.start) for s in samples] == [("a.mp4", 0), ("b.mp4", 0), ("a.mp4", 0), ("a.mp4", 1)]
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "m.csv" in message and "1 duplicate row" in message and "line 4 repeats line 2" in message
    assert "kept" in message


def test_distinct_rows_raise_no_warning(tmp_path, caplog):
    (tmp_path / "m.csv").write_text("path,label\na.mp4,cat\nb.mp4,cat\n")
    with caplog.at_level(logging.WARNING, logger="tubelet.data"):
        read_manifest(tmp_path / "m.csv")
    assert caplog.records == []


def test_jsonl_manifest(folders):
    lines = [{"path": str(folders / "cat/cat1.mp4"), "label": "cat", "start": 0.2}, {"path": "dog/dog0.mp4"}]
    (folders / "val.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    samples = read_manifest(folders / "val.jsonl")
    assert samples[0].start == 0.2 and samples[0].label == "cat"
    assert samples[1].label is None and samples[1].path == folders / "dog/dog0.mp4"


@pytest.mark.parametrize(
    "text, field",
    [
        ("file,label\na.mp4,cat\n", "'path'"),
        ("path,label\n,cat\n", "'path'"),
        ("path,label,start\na.mp4,cat,soon\n", "'start'"),
        ("path,label,start,end\na.mp4,cat,2,1\n", "'end'"),
        ("path,label\na.mp4,cat,extra\n", "more cells"),
    ],
)
def test_bad_manifest_names_the_file_and_field(tmp_path, text, field):
    manifest = tmp_path / "m.csv"
    manifest.write_text(text)
    with pytest.raises(DataError) as err:
        read_manifest(manifest)
    assert str(manifest) in str(err.value) and field in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_split_and_missing_source_are_clear(folders):
    with pytest.raises(DataError, match="no 'test' split"):
        read_samples(folders, split="test")
    with pytest.raises(DataError, match="no such file"):
        read_samples(folders / "nowhere")


def test_unreadable_files_are_reported_and_skipped(folders, caplog):
    (folders / "cat" / "broken.mp4").write_bytes(b"\x00" * 1000)
    with caplog.at_level(logging.WARNING, logger="tubelet.data"):
        dataset = load_dataset(folders)
    assert len(dataset) == 4
    assert dataset.class_counts() == {"cat": 2, "dog": 2}
    assert [p for p, _ in dataset.skipped] == [str(folders / "cat" / "broken.mp4")]
    assert "broken.mp4" in caplog.text
    assert dataset.infos[0].frames == 6


def test_class_without_usable_clip_is_an_error_naming_it(folders):
    (folders / "bird").mkdir()
    with pytest.raises(DataError, match="class 'bird' has no usable clip"):
        load_dataset(folders)
    (folders / "bird" / "b.mp4").write_text("not a video")
    with pytest.raises(DataError, match="class 'bird'"):
        load_dataset(folders)


def test_unlabeled_folder_loads_without_labels_but_not_for_classification(tmp_path):
    for i in range(2):
        _video(tmp_path / f"clip{i}.mkv")
    dataset = load_dataset(tmp_path, require_labels=False)
    assert len(dataset) == 2 and dataset.labels == []
    with pytest.raises(DataError, match="'label'"):
        load_dataset(tmp_path)
