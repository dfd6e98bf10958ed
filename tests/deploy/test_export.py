"""ONNX export of every family: ORT parity, dynamic batch, opset, the NMS tails (ORT run against the reference
NMS; TensorRT's plugin node checked structurally), fp16, and the failure paths (no file left behind)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from yolodeploy.core.init import randomize_for_verification_
from yolodeploy.core.nms import batched_nms
from yolodeploy.deploy import export as export_module
from yolodeploy.deploy.export import HALF_TOLERANCE, check_exported_opset, export_onnx, prepare_deploy_model
from yolodeploy.deploy.nms import NMS_OUTPUT_NAMES, NMSConfig, NMSKind, append_nms
from yolodeploy.deploy.onnx_utils import load_onnx_checked, onnx_io, onnx_opset
from yolodeploy.errors import ConfigError, ExportError
from yolodeploy.models import create_model

MODELS = ["yolov6n", "yolov6s", "yolov6_lite_s", "yolov7_tiny", "yolov9_t", "gelan_t"]
IMG = 128  # a multiple of every stride, including yolov6_lite_s's 64
SMALL = 64  # for tests about the pipeline, not the family


pytestmark = pytest.mark.usefixtures("single_thread_torch")


def make_model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_for_verification_(create_model(name), seed=0)


def images(batch: int, seed: int = 1, img: int = IMG) -> np.ndarray:
    return torch.rand(batch, 3, img, img, generator=torch.Generator().manual_seed(seed)).numpy()


def session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def ort_run(model: onnx.ModelProto | str | ort.InferenceSession, feed: np.ndarray) -> list[np.ndarray]:
    return (model if isinstance(model, ort.InferenceSession) else session(model)).run(None, {"images": feed})


@pytest.fixture(scope="module", params=MODELS)
def exported(request, tmp_path_factory):
    """(name, model, path, report) of a raw, dynamic-batch fp32 export at opset 17."""
    model = make_model(request.param)
    path = tmp_path_factory.mktemp("onnx") / f"{request.param}.onnx"
    report = export_onnx(model, path, img_size=IMG, opset=17, dynamic_batch=True)
    return request.param, model, path, report


def test_raw_export_parity_opset_and_dynamic_batch(exported):
    name, model, path, report = exported
    assert report.path == path and path.is_file() and report.parity and report.passed
    (raw,) = report.parity
    assert raw.max_rel_error <= 1e-4, raw
    proto = load_onnx_checked(path)
    assert onnx_opset(proto) == 17 == report.opset
    inputs, outputs = onnx_io(proto)
    assert [(m.name, m.dtype, m.shape) for m in inputs] == [("images", np.float32, ("batch", 3, IMG, IMG))]
    assert outputs[0].name == "outputs" and outputs[0].shape[0] == "batch" and outputs[0].shape[2] == 84
    # only the batch is dynamic: sizes, split points and the anchor grid are constants (core.shapes)
    assert not {"Shape", "Range", "Expand", "ConstantOfShape"} & {node.op_type for node in proto.graph.node}, name
    feed, runner = images(4), session(str(path))
    (out4,) = ort_run(runner, feed)
    (out1,) = ort_run(runner, feed[:1])
    with torch.no_grad():
        ref = prepare_deploy_model(model)(torch.from_numpy(feed)).numpy()
    assert out4.shape == ref.shape == (4, outputs[0].shape[1], 84) and out1.shape == (1, *ref.shape[1:])
    assert np.abs(out4 - ref).max() <= 1e-4 * np.abs(ref).max(), name
    np.testing.assert_allclose(out1, out4[:1], rtol=0, atol=1e-5 * np.abs(ref).max())


def test_ort_nms_tail_equals_reference_nms(exported):
    """The NMS graph, at batch 1 and 4, equals batched_nms applied to the raw graph's output on the same input."""
    name, _, path, _ = exported
    raw_model, feed = onnx.load(str(path)), images(4, seed=2)
    raw_runner = session(raw_model)
    (raw4,) = ort_run(raw_runner, feed)
    # a threshold that some, not all, (box, class) pairs pass: v7 scores (objectness x class) run lower than v6/v9's
    config = NMSConfig(NMSKind.ORT, topk=30, iou=0.5, conf=float(np.quantile(raw4[..., 4:], 0.9995)))
    nms_model = append_nms(raw_model, config)
    onnx.checker.check_model(nms_model, full_check=True)
    nms_runner = session(nms_model)
    for batch in (1, 4):
        (raw,) = ort_run(raw_runner, feed[:batch])
        outputs = dict(zip(NMS_OUTPUT_NAMES, ort_run(nms_runner, feed[:batch])))
        raw = torch.from_numpy(raw)
        expected = batched_nms(raw[..., :4], raw[..., 4:], iou=config.iou, conf=config.conf, topk=config.topk)
        for (key, test), ref in zip(outputs.items(), expected):
            assert test.shape == tuple(ref.shape) and test.dtype == ref.numpy().dtype, (name, key)
            np.testing.assert_array_equal(test, ref.numpy(), err_msg=f"{name} {key} batch {batch}")
        assert (outputs["num_dets"] > 0).any() and (outputs["num_dets"] < config.topk).any(), name


def test_export_with_ort_nms_end_to_end(tmp_path):
    report = export_onnx(
        make_model("yolov6n"), tmp_path / "n.onnx", img_size=SMALL, dynamic_batch=True, nms=NMSConfig("ort", topk=20)
    )
    assert report.passed and [r.name.split()[0] for r in report.parity] == ["outputs", *NMS_OUTPUT_NAMES]
    outputs = {m.name: m for m in report.outputs}
    assert list(outputs) == list(NMS_OUTPUT_NAMES)
    assert outputs["num_dets"].shape == ("batch", 1) and outputs["num_dets"].dtype == np.int32
    assert outputs["det_boxes"].shape == ("batch", 20, 4) and outputs["det_boxes"].dtype == np.float32
    num_dets, det_boxes, det_scores, det_classes = ort_run(str(report.path), images(3, img=SMALL))
    assert num_dets.shape == (3, 1) and det_classes.dtype == np.int32
    for row, count in enumerate(num_dets[:, 0]):  # zero padding beyond num_dets, scores sorted
        assert not det_scores[row, count:].any() and not det_boxes[row, count:].any()
        assert (np.diff(det_scores[row, :count]) <= 0).all()


def test_nms_tail_pads_when_nothing_passes(tmp_path):
    raw = helper.make_graph(
        [helper.make_node("Identity", ["images"], ["outputs"])],
        "raw",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 8, 6])],
        [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["batch", 8, 6])],
    )
    model = append_nms(helper.make_model(raw, opset_imports=[helper.make_opsetid("", 13)]), NMSConfig("ort", topk=5))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = np.zeros((2, 8, 6), np.float32)
    feed[1, :, :4] = [0, 0, 10, 10]
    feed[1, 3, 5] = 0.9  # one candidate, image 1, class 1
    num_dets, det_boxes, det_scores, det_classes = session.run(None, {"images": feed})
    assert num_dets.tolist() == [[0], [1]] and det_classes.tolist() == [[0] * 5, [1, 0, 0, 0, 0]]
    assert det_scores[1, 0] == pytest.approx(0.9) and det_boxes[1, 0].tolist() == [0, 0, 10, 10]
    assert not det_scores[0].any() and not det_boxes[1, 1:].any()


@pytest.mark.parametrize("half", [False, True])
def test_trt_nms_graph_structure(tmp_path, half):
    report = export_onnx(
        make_model("yolov6n"),
        tmp_path / "trt.onnx",
        img_size=SMALL,
        dynamic_batch=True,
        half=half,
        nms=NMSConfig("trt", topk=50, iou=0.6, conf=0.25),
    )
    assert [r.name.split()[0] for r in report.parity] == ["outputs"]  # the plugin cannot run here
    model = onnx.load(str(report.path))
    (node,) = [n for n in model.graph.node if n.op_type == "EfficientNMS_TRT"]
    assert node.domain == "TRT" and any(o.domain == "TRT" and o.version == 1 for o in model.opset_import)
    attrs = {a.name: a for a in node.attribute}
    assert attrs["background_class"].type == onnx.AttributeProto.INT and attrs["background_class"].i == -1
    assert {k: helper.get_attribute_value(v) for k, v in attrs.items() if k != "background_class"} == {
        "box_coding": 0,
        "iou_threshold": pytest.approx(0.6),
        "score_threshold": pytest.approx(0.25),
        "max_output_boxes": 50,
        "score_activation": 0,
        "plugin_version": b"1",
    }
    assert list(node.output) == list(NMS_OUTPUT_NAMES)
    float_type = np.float16 if half else np.float32
    assert [(m.name, m.dtype, m.shape) for m in report.outputs] == [
        ("num_dets", np.int32, ("batch", 1)),
        ("det_boxes", float_type, ("batch", 50, 4)),
        ("det_scores", float_type, ("batch", 50)),
        ("det_classes", np.int32, ("batch", 50)),
    ]
    boxes_in, scores_in = node.input  # (B, N, 4) and (B, N, C) slices of the raw output
    producers = {out: n for n in model.graph.node for out in n.output}
    assert producers[boxes_in].op_type == producers[scores_in].op_type == "Slice"


def test_half_export_static_batch_with_nms(tmp_path):
    report = export_onnx(make_model("yolov7_tiny"), tmp_path / "h.onnx", img_size=IMG, half=True, nms=NMSConfig("ort"))
    assert report.passed and report.parity[0].max_rel_error <= HALF_TOLERANCE
    assert report.inputs[0].dtype == np.float16 and report.inputs[0].shape == (1, 3, IMG, IMG)
    assert report.outputs[1].dtype == np.float16 and report.outputs[1].shape == (1, 100, 4)
    outputs = ort_run(str(report.path), images(1).astype(np.float16))
    assert [o.dtype for o in outputs] == [np.int32, np.float16, np.float16, np.int32]


def test_opset_13_torchscript(tmp_path):
    report = export_onnx(make_model("yolov6n"), tmp_path / "o13.onnx", img_size=SMALL, opset=13)
    assert report.passed and onnx_opset(onnx.load(str(report.path))) == 13
    assert report.inputs[0].shape == (1, 3, SMALL, SMALL) and report.outputs[0].shape[0] == 1


@pytest.mark.slow
def test_dynamo_exporter_opset_18(tmp_path):
    report = export_onnx(
        make_model("yolov6n"), tmp_path / "d.onnx", img_size=SMALL, opset=18, dynamic_batch=True, exporter="dynamo"
    )
    assert report.passed and report.exporter.value == "dynamo" and report.opset == 18
    assert onnx_opset(onnx.load(str(report.path))) == 18
    assert ort_run(str(report.path), images(3, img=SMALL))[0].shape[0] == 3


def test_opset_check_catches_silent_opset_change():
    model = helper.make_model(helper.make_graph([], "g", [], []), opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ExportError, match="opset 18, not the requested 13.*--opset 18 or --exporter torchscript"):
        check_exported_opset(model, 13, export_module.Exporter.DYNAMO)


def test_parity_failure_writes_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "RAW_TOLERANCE", 0.0)
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="parity above tolerance, file not written"):
        export_onnx(make_model("yolov6n"), path, img_size=SMALL)
    assert list(tmp_path.iterdir()) == []


def test_input_model_is_not_modified(tmp_path):
    model = make_model("yolov6n").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export_onnx(model, tmp_path / "m.onnx", img_size=SMALL, check=False)
    assert model.training and model.form == "train"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"img_size": 100}, "multiples of the model's stride 32"),
        ({"opset": 11}, "opset 11 is not supported"),
        ({"exporter": "jit"}, "unknown exporter"),
        ({"nms": "ort"}, "nms must be an NMSConfig"),
    ],
)
def test_bad_options(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        export_onnx(create_model("yolov6n"), tmp_path / "x.onnx", **{"img_size": SMALL, **kwargs})
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "fast"}, "unknown NMS kind"),
        ({"kind": "ort", "topk": 0}, "topk"),
        ({"kind": "ort", "iou": 1.5}, "iou"),
        ({"kind": "ort", "conf": -0.1}, "conf"),
    ],
)
def test_nms_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        NMSConfig(**kwargs)


def test_nms_config_round_trip():
    config = NMSConfig("trt", topk=300, iou=0.7, conf=0.25)
    assert config.kind is NMSKind.TRT and NMSConfig.from_dict(config.to_dict()) == config
    assert config.to_dict()["version"] == 1
