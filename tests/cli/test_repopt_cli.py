"""``yolodeploy repopt-scales``: writes the scales of a hyper-search checkpoint; bad input gives one error line."""

from __future__ import annotations

import torch
from conftest import assert_one_line_error, run_cli

from yolodeploy.core.init import randomize_constants_
from yolodeploy.models import create_model, save_checkpoint
from yolodeploy.train.repopt import extract_scales, load_scales


def test_repopt_scales_writes_file(tmp_path):
    hs = randomize_constants_(create_model("yolov6n_hs", num_classes=2), seed=3)
    checkpoint = save_checkpoint(hs, tmp_path / "hs.safetensors")
    out = tmp_path / "scales.safetensors"
    result = run_cli("repopt-scales", checkpoint, "-o", out)
    assert result.exit_code == 0, result.output
    assert len(result.output.strip().splitlines()) == 1 and "yolov6n_hs" in result.output
    loaded, expected = load_scales(out), extract_scales(hs)
    assert loaded.arch == "yolov6n_hs" and list(loaded) == list(expected)
    assert all(torch.equal(a, b) for name in expected for a, b in zip(loaded[name], expected[name]))


def test_repopt_scales_bad_input(tmp_path):
    out = tmp_path / "scales.safetensors"
    assert_one_line_error(run_cli("repopt-scales", tmp_path / "missing.safetensors", "-o", out), "no such file")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"definitely not a checkpoint")
    assert_one_line_error(run_cli("repopt-scales", garbage, "-o", out), "not a checkpoint")
    plain = save_checkpoint(create_model("yolov6n_opt", num_classes=2), tmp_path / "opt.safetensors")
    assert_one_line_error(run_cli("repopt-scales", plain, "-o", out), "no LinearAddBlock", "hyper_search")
    assert not out.exists()
