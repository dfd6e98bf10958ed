"""The QAT stage of ``yolodeploy quantize --qat``: fine-tune the calibrated model, export, measure (issue 6 item 5).

YOLOv6 paper §2.5.3 / §3.5.1 (https://arxiv.org/abs/2209.02976). :func:`run_qat_stage` runs inside
:func:`yolodeploy.quant.ptq.run_ptq` after the PTQ rows, on the same held-out and val images:

1. the student is a copy of the calibrated quantized model: every layer quantized, or with
   ``PTQConfig.qat_partial`` the partial PTQ model (the layers kept float by ``sensitive_topk`` / ``max_ap_drop``
   stay float). The PTQ model itself and its files are left as they are;
2. the teacher is the float model in deploy form (BN folded, as the student);
3. :func:`~yolodeploy.quant.qat.run_qat` with ``PTQConfig.qat`` (lr 1e-5, no warm-up, amax frozen). After every
   epoch the fake-quant model's AP on the val subset (``qat_val_images``; PyTorch runner) picks the best epoch;
4. the same Q/DQ export and parity check as PTQ (``qat_ort.onnx``, ``qat_trt.onnx``), the ``qat`` row (AP on
   ONNX Runtime), and ``qat.safetensors`` (portable ``form="quantized"`` with every quantizer's amax; the
   :class:`~yolodeploy.quant.qat.QATConfig` under ``qat`` and the run's outcome under ``qat_run`` in its metadata).

Example:
    >>> result = run_ptq(PTQConfig(model="best.safetensors", data="data/", output="runs/qat", img_size=224,
    ...                            qat=QATConfig(epochs=10, img_size=224, distill="cwd")))
    >>> result.rows["qat"]["ap"], result.qat["best_epoch"], result.files["qat_checkpoint"]
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator
from typing import Any

from torch import nn

from .model import enable_all
from .ptq import _export_checked, _measure, _Run, _torch_ap, _val_subset
from .qat import run_qat

__all__ = ["run_qat_stage", "fusion_regression_note", "epoch_choice_note", "QAT_STEM"]

#: File stem of the QAT outputs: ``qat.safetensors``, ``qat_ort.onnx``, ``qat_trt.onnx``.
QAT_STEM = "qat"


@contextlib.contextmanager
def _epoch_evaluator(run: _Run) -> Iterator[Callable[[nn.Module], float] | None]:
    """The per-epoch ``eval_fn`` of ``run_qat``: fake-quant AP on ``qat_val_images`` val images (0: None)."""
    config = run.config
    if config.qat_val_images == 0:
        yield None
    elif config.qat_val_images is None:
        yield lambda model: _torch_ap(config, run.split, model)
    else:
        with _val_subset(config, config.qat_val_images) as split:
            yield lambda model: _torch_ap(config, split, model)


def _student(run: _Run, qmodel: nn.Module, float_layers: list[str]) -> tuple[nn.Module, str, list[str]]:
    """``(student, start row, its float layers)``: a copy of ``qmodel``, all quantized unless ``qat_partial``."""
    student = copy.deepcopy(qmodel)
    if run.config.qat_partial and float_layers:
        return student, f"ptq_top{len(float_layers)}", list(float_layers)
    enable_all(student)
    return student, "ptq", []


def fusion_regression_note(int8_convs: dict[str, int | None], start: str) -> str | None:
    """A warning when ONNX Runtime runs fewer convs of the QAT file in int8 than of the file QAT started from.

    Training must not change which convs fuse (only weights and ranges move). It did once: quantizers of one
    tensor learned separate ranges, the export could no longer merge their QuantizeLinear nodes, and ORT left the
    producing convs float (1.5x instead of 2.6x), which only the latency table showed.

    Args:
        int8_convs: QLinearConv count of the ORT file of ``start`` and of ``"qat"`` (None without onnxruntime).
        start: the row QAT started from.
    """
    trained, started = int8_convs.get(QAT_STEM), int8_convs.get(start)
    if trained is None or started is None or trained >= started:
        return None
    return (
        f"the QAT ONNX file runs {trained} convs as int8 QLinearConv on ONNX Runtime, the {start} file it started "
        f"from {started}: its Q/DQ layout changed in training and the other convs run in float (slower)"
    )


def epoch_choice_note(history: list[dict[str, Any]], best_epoch: int | None, *, same_images: bool) -> str | None:
    """A warning when the kept QAT epoch is not the last one and was chosen on the images the ``qat`` row's AP is
    measured on: that AP is then optimistic. Keeping the last epoch involves no choice, so no warning."""
    if best_epoch is None or not history or not same_images or best_epoch == history[-1]["epoch"]:
        return None
    last = history[-1]
    return (
        f"QAT kept epoch {best_epoch} of {last['epoch']}, chosen by AP on the same val images as the qat row: its AP "
        f"is optimistic (fake-quant AP of the last epoch: {last.get('ap', float('nan')):.4f})"
    )


def run_qat_stage(
    run: _Run, model: nn.Module, qmodel: nn.Module, float_layers: list[str], calibration: dict[str, Any]
) -> dict[str, Any]:
    """QAT of a copy of the calibrated ``qmodel`` distilled from ``model``; adds the ``qat`` row and files to ``run``.

    Args:
        run: the state of the :func:`~yolodeploy.quant.ptq.run_ptq` call (config with ``qat`` set, open val subset).
        model: the float model (train or deploy form): the teacher, after re-parameterization.
        qmodel: the calibrated quantized model of the PTQ rows (not modified).
        float_layers: the layers ``qmodel`` keeps float (partial PTQ), most sensitive first.
        calibration: the calibration metadata, copied into ``qat.safetensors``.

    Returns:
        The report's ``qat`` section: ``start`` (the row QAT started from), ``float_layers``, ``history`` (one
        record per epoch: losses, lr, seconds, ``ap``), ``best_epoch``, ``best_ap`` and ``config``.

    Raises:
        ConfigError: a recipe the model does not support. ExportError: the QAT model's Q/DQ parity failed.
    """
    from ..deploy.export import prepare_deploy_model
    from .calibrate import model_hash
    from .model import save_quantized

    config, qat = run.config, run.config.qat
    student, start, student_float = _student(run, qmodel, float_layers)
    teacher = prepare_deploy_model(model)
    with _epoch_evaluator(run) as eval_fn:
        result = run_qat(student, teacher, config.data, qat, eval_fn=eval_fn)
    _measure(run, QAT_STEM, _export_checked(result.model, run, QAT_STEM, QAT_STEM))
    int8_convs = {key: run.int8_convs.get(run.onnx[key]) for key in (start, QAT_STEM)}
    note = fusion_regression_note(int8_convs, start)
    if note:
        run.notes.append(note)
    outcome = {"start": start, "float_layers": student_float, "best_epoch": result.best_epoch}
    outcome["int8_convs"] = int8_convs
    outcome["best_ap"] = result.best_ap
    ckpt = save_quantized(
        result.model, run.out / f"{QAT_STEM}.safetensors", calibration=calibration, qat=qat.to_dict(),
        qat_run={**outcome, "model_hash": model_hash(result.model)},
    )  # fmt: skip
    run.files["qat_checkpoint"] = str(ckpt)
    note = epoch_choice_note(result.history, result.best_epoch, same_images=config.qat_val_images is None)
    if note:
        run.notes.append(note)
    return {**outcome, "history": result.history, "config": qat.to_dict()}
