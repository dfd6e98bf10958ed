"""``yolodeploy data synth``: writes the dataset with a one-line summary; bad options give one error line."""

from __future__ import annotations

import json

from conftest import assert_one_line_error, run_cli


def test_synth_writes_dataset(tmp_path):
    out = tmp_path / "synth"
    result = run_cli("data", "synth", out, "--images", 12, "--classes", 3, "--img-size", 64, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1 and "12 images" in result.output
    coco = json.loads((out / "annotations" / "instances_train.json").read_text())
    assert len(coco["categories"]) == 3 and len(coco["images"]) == 8
    assert len(list((out / "images" / "val").iterdir())) == 2


def test_synth_bad_options(tmp_path):
    out = tmp_path / "x"
    assert_one_line_error(run_cli("data", "synth", out, "--classes", 0), "--classes")
    assert_one_line_error(run_cli("data", "synth", out, "--images", 0), "--images")
    assert_one_line_error(run_cli("data", "synth", out, "--splits", "0.5,0.5"), "--splits")
    assert_one_line_error(run_cli("data", "synth", out, "--splits", "0.5,0.6,0.1"), "splits")
    assert not out.exists()
    out.mkdir()
    (out / "f").write_text("")
    assert_one_line_error(run_cli("data", "synth", out, "--images", 2), "not empty", "--overwrite")
