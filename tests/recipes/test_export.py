"""tubelet export through the real CLI: the report, parity, predict and evaluate on onnxruntime, and refusals."""

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from tubelet.cli import main
from tubelet.data.transforms import AudioPreprocessing, Preprocessing
from tubelet.io import write_video
from tubelet.models import Encoder, FusionConfig, FusionModel, load, model_config, save
from tubelet.models.onnx_model import OnnxModel

REPORT_KEYS = {"format", "opset", "max_abs_diff", "top1_agreement", "files", "particles"}


@pytest.fixture(scope="module")
def exported(classifier_run, tiny_data, tmp_path_factory):
    """(checkpoint, export directory, the report the CLI printed): the session's classifier exported once, checked on
    two of the sample files."""
    _, run = classifier_run
    out = tmp_path_factory.mktemp("export") / "onnx"
    checks = sorted(str(p) for p in (tiny_data / "move_left").glob("*.mp4"))[:1] + [
        str(sorted((tiny_data / "static").glob("*.mp4"))[0])
    ]
    assert main(["export", "--checkpoint", str(run / "best"), "--out", str(out), "--check", *checks, "--json"]) == 0
    return run / "best", out, checks


def test_export_writes_a_self_describing_directory_and_its_report(exported, capsys):
    checkpoint, out, checks = exported
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "export_report.json", "model.onnx"]
    report = json.loads((out / "export_report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["format"] == "onnx" and report["opset"] >= 17
    assert report["files"] == checks
    assert 0 <= report["max_abs_diff"] <= 1e-3 and report["top1_agreement"] == 1.0
    # Per file: short, window pruned, window unpruned, long; then all of them packed into one batch of 8 clips.
    assert len(report["particles"]) == 2 * 4 + 1 and report["checks"][-1]["clips"] == 8
    assert report["particles"][-1] == sum(report["particles"][:-1])
    pruned, unpruned = report["checks"][5]["particles"], report["checks"][6]["particles"]  # the static clip
    assert pruned < unpruned  # a pruned batch was checked, not only full grids
    config = json.loads((out / "config.json").read_text())
    source = json.loads((checkpoint / "config.json").read_text())
    assert config["model_type"] == "tubelet-onnx" and config["task"] == "classification"
    assert config["preprocessing"] == source["preprocessing"] and config["encoder"] == source["encoder"]
    assert config["labels"] == json.loads((checkpoint / "labels.json").read_text())


def test_an_export_directory_loads_as_an_onnxruntime_model(exported):
    checkpoint, out, _ = exported
    loaded, original = load(out), load(checkpoint)
    assert isinstance(loaded.model, OnnxModel) and loaded.kind == "onnx"
    assert loaded.labels == original.labels and loaded.task == "classification"
    assert loaded.preprocessing == original.preprocessing


def test_predict_on_the_export_prints_the_checkpoints_json(exported, tmp_path, capsys):
    checkpoint, out, _ = exported
    frames = np.random.default_rng(3).integers(0, 255, (20, 64, 80, 3), dtype=np.uint8)
    frames[:, 20:40] = 128  # a still band: some particles pruned
    video = write_video(tmp_path / "new.mp4", frames, fps=8)  # 2.5 s: windows
    rows = []
    for source in (checkpoint, out):
        assert main(["predict", "--checkpoint", str(source), str(video), "--json", "--workers", "0"]) == 0
        rows.append(json.loads(capsys.readouterr().out))
    eager, runtime = rows
    assert len(eager["windows"]) == 3
    assert runtime["label"] == eager["label"] and [w["label"] for w in runtime["windows"]] == [
        w["label"] for w in eager["windows"]
    ]
    assert _close(runtime, eager)


def _close(a, b, tol=2e-4) -> bool:
    """The same JSON up to `tol` on numbers (scores are rounded to 4 places: a last digit may differ)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        return all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        assert len(a) == len(b)
        return all(_close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, float):
        assert abs(a - b) <= tol, (a, b)
        return True
    assert a == b
    return True


def test_evaluate_on_the_export_gives_the_checkpoints_report(exported, tiny_data, tmp_path, capsys):
    checkpoint, out, _ = exported
    reports = []
    for name, source in (("eager", checkpoint), ("onnx", out)):
        args = ["evaluate", "--checkpoint", str(source), "--data", str(tiny_data), "--out", str(tmp_path / name)]
        assert main([*args, "--views", "1", "--workers", "0", "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[1]["accuracy"] == reports[0]["accuracy"]
    assert reports[1]["per_class"] == reports[0]["per_class"]


def test_explain_and_finetune_refuse_an_export_directory_in_one_line(exported, tiny_data, tmp_path, capsys):
    _, out, checks = exported
    assert main(["explain", "--checkpoint", str(out), checks[0], "--out", str(tmp_path / "x")]) == 2
    assert "an export directory cannot be explained" in capsys.readouterr().err
    args = ["finetune", "--data", str(tiny_data), "--model", str(out), "--out", str(tmp_path / "run"), "workers=0"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "'tubelet-onnx' is not an encoder model" in err and len(err.splitlines()) == 1, err


def test_a_graph_that_disagrees_fails_the_export_and_writes_nothing(exported, monkeypatch, tmp_path, capsys):
    """The head's bias moved by 0.01 in the written graph: parity catches it, exit 2, no directory at --out."""
    import tubelet.recipes.export as recipe

    checkpoint, out, checks = exported

    def corrupted(graph, example, path):
        model = onnx.load(str(out / "model.onnx"))
        bias = next(t for t in model.graph.initializer if "head.bias" in t.name)
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.01, bias.name))
        onnx.save(model, str(path))
        return 18

    monkeypatch.setattr(recipe, "export_onnx", corrupted)
    target = tmp_path / "bad"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(target), "--check", checks[0]]) == 2
    err = capsys.readouterr().err.strip()
    assert "parity check failed" in err and "0.01" in err and len(err.splitlines()) == 1
    assert not target.exists() and not any(tmp_path.iterdir())  # not even the partial directory


def test_bad_inputs_are_one_line_errors(exported, tmp_path, capsys):
    checkpoint, out, _ = exported
    models = tmp_path / "models"
    fusion = FusionModel(FusionConfig(dim=32, depth=1, heads=2, num_classes=2))
    save(models / "fusion", fusion, preprocessing=Preprocessing(), audio=AudioPreprocessing(), labels=["a", "b"])
    save(models / "features", Encoder(model_config("test")), preprocessing=Preprocessing())  # no head, no labels
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("x")
    cases = {
        "a fusion checkpoint cannot be exported yet": [
            "--checkpoint",
            str(models / "fusion"),
            "--out",
            str(tmp_path / "r"),
        ],
        "no labels.json; export supports video classifiers": [
            "--checkpoint",
            str(models / "features"),
            "--out",
            str(tmp_path / "f"),
        ],
        "cannot create the directory": ["--checkpoint", str(checkpoint), "--out", str(not_a_dir / "sub")],
        "is not an export directory": ["--checkpoint", str(checkpoint), "--out", str(out.parent.parent)],
        "--format torch: not supported yet": [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path / "t"),
            "--format",
            "torch",
        ],  # fmt: skip
        "no such file": ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "m"), "--check", "missing.mp4"],
    }
    for message, args in cases.items():
        assert main(["export", *args]) == 2, message
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "models"]


def test_serve_answers_from_an_export_directory_as_from_its_checkpoint(exported, tiny_data):
    # The real server on loopback over the export directory (onnxruntime) and over the checkpoint (PyTorch).
    import socket
    import threading
    import time

    import httpx
    import uvicorn

    from tubelet.serve import ServeConfig, create_app

    checkpoint, out, _ = exported
    video = sorted((tiny_data / "move_right").glob("*.mp4"))[0]
    answers = []
    for source in (checkpoint, out):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(create_app(ServeConfig(checkpoint=str(source), watch=False)), port=port)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if client.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
            files = {"file": (video.name, video.read_bytes(), "video/mp4")}
            response = client.post("/v1/predict", files=files)
        server.should_exit = True
        thread.join(timeout=15)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    assert _close(answers[1], answers[0])
