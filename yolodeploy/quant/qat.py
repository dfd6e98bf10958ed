"""Quantization-aware training of a calibrated fake-quant model, distilled from its float self (issue 6 item 5).

YOLOv6 paper §2.5.3 / §3.5.1 and ``tools/qat`` + ``configs/repopt/*_opt_qat.py`` of github.com/meituan/YOLOv6:
the student is the calibrated quantized deploy model (BN already folded, so the deploy convs' weights and biases
are what trains and there are no BN statistics to care about), the teacher is the same network in float. Recipes
(:class:`DistillMethod`):

* ``cwd`` (the YOLOv6 recipe): detection loss on the labels + class-logit KD (``T**2 * sum KL`` of the
  temperature-softened class scores, plus DFL KD on the foreground anchors when the head has a DFL) + channel-wise
  distillation (Shu et al. 2021) on the neck outputs; every distillation term scaled by the cosine decay
  :func:`~yolodeploy.train.distill.distillation_weight` (1 at the first epoch, 0.01 at the end).
* ``mse``: label-free; mean squared error between student and teacher block outputs: the neck outputs (the
  head's inputs) and the head's raw train-mode outputs. No labels are read, so it works for any model; not decayed
  (it is the only loss).
* ``none``: detection loss only.

What is fixed during QAT, by default: every quantizer's ``amax`` (activation and weight ranges stay those of
calibration, as in the official recipe). With ``learn_amax`` the ranges train too (LSQ, Esser et al. 2020): every
enabled quantizer gets a ``log_amax`` parameter (:meth:`~yolodeploy.quant.quantizer.TensorQuantizer.learn_amax_`)
stepped by its own Adam at ``amax_lr`` (Adam: the range gradients sum over whole tensors and differ by orders of
magnitude between layers, which a per-parameter step size absorbs), and the learned values are written back to
``amax`` at the end. Quantizers that read one tensor share one parameter (:func:`same_input_groups`): the Q/DQ
export merges them into one QuantizeLinear only while their ranges are equal, and ONNX Runtime runs the conv that
produces the tensor in int8 only then. Gradients reach the conv weights through the straight-through estimator
(zero for values clipped by the range). Which layers fake-quantize is left as the caller set it (``calibrate``
enables all; a layer turned off with ``set_layer_enabled`` or kept float by ``quantize_model(exclude=...)`` trains
in float).

Hyper-parameters follow the official QAT configs where the issue does not say otherwise: SGD (Nesterov, momentum
0.937), lr 1e-5 with a cosine decay to ``lr * 0.001`` (official ``lr0=1e-5, lrf=0.001``), weight decay 5e-5 on
conv weights only (official ``weight_decay=0.00005``), temperature 20, CWD weight 10 (``--distill_feat``),
10 epochs. Different from the official: no warm-up (the issue; the official config keeps 3 warm-up epochs), no
EMA, and light augmentation by default (letterbox + HSV + left-right flip, no mosaic; the official keeps
training's mosaic): a short fine-tune from a converged model on the teacher's predictions of the same image
gains nothing from heavier augmentation, and ``augment`` restores any pipeline.

Example:
    >>> qmodel = quantize_model(float_model)
    >>> calibrate(qmodel, calibration_batches(calibration_images("data/images/calib"), 640))
    >>> result = run_qat(qmodel, float_model, "data/", QATConfig(epochs=10, img_size=640, distill="cwd"))
    >>> save_quantized(result.model, "qat.safetensors", qat=QATConfig().to_dict())
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from ..train.distill import _kl_rows, channel_wise_distillation, distillation_weight, teacher_forward
from ..train.optim import cosine_factor
from ..utils.choices import Choice
from .model import quant_layers
from .quantizer import QuantState, TensorQuantizer

__all__ = ["DistillMethod", "QATConfig", "QATResult", "QATLoss", "run_qat", "light_augment"]

QAT_CONFIG_VERSION = 1


class DistillMethod(Choice):
    """The QAT recipe: ``cwd`` (YOLOv6: det + KD + CWD), ``mse`` (label-free), ``none`` (det only)."""

    CWD = "cwd"
    MSE = "mse"
    NONE = "none"


def light_augment() -> dict[str, float]:
    """The default QAT augmentation: letterbox + HSV jitter + left-right flip (no mosaic, mixup or affine)."""
    return {"translate": 0.0, "scale": 0.0, "mosaic": 0.0, "mixup": 0.0}


@dataclass(kw_only=True)
class QATConfig:
    """QAT hyper-parameters (see the module docstring for where each default comes from).

    Args:
        epochs: training epochs (official 10).
        lr: initial learning rate (about 1e-5: the weights are already converged; official ``lr0``).
        lrf: final lr factor of the per-epoch cosine decay (official 0.001).
        momentum: SGD (Nesterov) momentum.
        weight_decay: decay of conv weights (biases none).
        batch_size: images per step.
        img_size: training image side (the letterboxed square).
        distill: "cwd", "mse" or "none" (converted to :class:`DistillMethod`).
        temperature: softening temperature of the class / DFL KD (official 20).
        cwd_tau: CWD temperature (official 1).
        det_weight: weight of the detection loss.
        kd_class_weight: weight of the class KD (official ``distill_weight['class']`` 1.0).
        kd_dfl_weight: weight of the DFL KD when the head has a DFL (official 1.0; times the DFL loss weight 0.5).
        cwd_weight: weight of the CWD term (official 10).
        mse_weight: weight of the label-free MSE term.
        augment: ``AugmentConfig`` fields overriding the YOLOv6 defaults (default :func:`light_augment`).
        train_split: the dataset split to train on when a dataset root is given.
        seed: seed of the data order and augmentation.
        workers: DataLoader worker processes.
        grad_clip: max gradient norm of the weights (0 = off).
        learn_amax: train the quantization ranges too (LSQ; see the module docstring).
        amax_lr: initial Adam learning rate of the log ranges (cosine-decayed like ``lr``).
    """

    epochs: int = 10
    lr: float = 1e-5
    lrf: float = 0.001
    momentum: float = 0.937
    weight_decay: float = 5e-5
    batch_size: int = 8
    img_size: int = 640
    distill: DistillMethod | str = DistillMethod.CWD
    temperature: float = 20.0
    cwd_tau: float = 1.0
    det_weight: float = 1.0
    kd_class_weight: float = 1.0
    kd_dfl_weight: float = 1.0
    cwd_weight: float = 10.0
    mse_weight: float = 1.0
    augment: dict[str, Any] = field(default_factory=light_augment)
    train_split: str = "train"
    seed: int = 0
    workers: int = 0
    grad_clip: float = 10.0
    learn_amax: bool = False
    amax_lr: float = 1e-3
    version: int = QAT_CONFIG_VERSION

    def __post_init__(self) -> None:
        self.distill = DistillMethod.parse(self.distill)
        for name in ("epochs", "batch_size", "img_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"QATConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "temperature", "cwd_tau", "amax_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"QATConfig.{name} must be > 0, got {getattr(self, name)}")
        negative = [f.name for f in fields(self) if f.name.endswith("weight") and getattr(self, f.name) < 0]
        if negative or self.lrf < 0 or self.momentum < 0 or self.seed < 0 or self.workers < 0 or self.grad_clip < 0:
            raise ConfigError(f"QATConfig: negative value in {negative or 'lrf/momentum/seed/workers/grad_clip'}")
        from ..core.data.augment import AugmentConfig

        AugmentConfig.from_dict(self.augment)  # validates the names and ranges now, not in the first epoch

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "distill": self.distill.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QATConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown QAT options {unknown}; valid: {sorted(known)}")
        return cls(**data)


@dataclass
class QATResult:
    """The per-epoch loss/AP records, the best AP (None without ``eval_fn``) and the trained model (eval mode)."""

    history: list[dict[str, Any]]
    best_ap: float | None
    model: nn.Module
    best_epoch: int


# -- losses ------------------------------------------------------------------------------------------------------


@contextmanager
def capture_head_inputs(model: nn.Module) -> Iterator[list[Tensor]]:
    """Record the tensors the model's ``head`` is called with (the neck outputs) on every forward.

    Yields a list that each forward refills; empty for a model without a ``head`` attribute.
    """
    captured: list[Tensor] = []
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        yield captured
        return

    def hook(_module: nn.Module, args: tuple) -> None:
        captured[:] = _tensors(args)

    handle = head.register_forward_pre_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


def _tensors(value: Any) -> list[Tensor]:
    """Every tensor in a nest of tuples / lists, in order."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [tensor for item in value for tensor in _tensors(item)]
    return []


def _family(model: nn.Module) -> str:
    return type(model).__name__.lower()


def _scores_and_box(model: nn.Module, output: Any) -> tuple[Tensor, Tensor]:
    """(class scores or logits, box distribution) of a train-mode output: (B, A, C) and (B, A, 4 * bins)."""
    from ..train.distill import _scores_and_distribution
    from ..train.objective import yolov9_predictions

    if _family(model) == "yolov6":
        return _scores_and_distribution(output, "model")
    if _family(model) == "yolov9":
        levels = output[-1] if model.head.num_branches > 1 else output
        predictions = yolov9_predictions(levels, model.head)
        return predictions.scores, predictions.box
    raise ConfigError(f"class-logit KD supports YOLOv6 and YOLOv9 models, not {type(model).__name__}")


class QATLoss(nn.Module):
    """The QAT objective of one recipe: ``loss(model, output, teacher_output, neck, teacher_neck, targets, epoch)``.

    Returns ``(total, parts)``: parts are the detached terms before weights (``det``, ``kd_cls``, ``kd_dfl``,
    ``cwd``, ``mse``) and the distillation weight ``alpha``.

    Raises:
        ConfigError: (at construction) a recipe with a detection loss for a model without a training objective.
    """

    def __init__(self, model: nn.Module, config: QATConfig) -> None:
        super().__init__()
        self.config = config
        self.objective = None
        if config.distill is not DistillMethod.MSE:
            from ..train.objective import build_objective

            try:
                self.objective = build_objective(model)
            except ValueError as error:
                raise ConfigError(
                    f"distill={config.distill.value!r} needs a detection loss: {error}; "
                    "use distill='mse' (label-free) for this model"
                ) from None

    def forward(self, model, output, teacher_output, neck, teacher_neck, targets: Tensor | None, epoch: int):
        config = self.config
        if config.distill is DistillMethod.MSE:
            mse = _block_mse(output, teacher_output, neck, teacher_neck)
            return config.mse_weight * mse, {"mse": mse.detach()}
        result = self.objective(output, targets, epoch)
        total, parts = config.det_weight * result.total, {"det": result.total.detach()}
        if config.distill is DistillMethod.CWD:
            alpha = distillation_weight(epoch, config.epochs)
            kd_cls, kd_dfl = self._kd_terms(model, output, teacher_output, result.fg_mask)
            if not neck or len(neck) != len(teacher_neck):
                raise ConfigError("CWD needs the neck outputs: the model has no 'head' module whose inputs they are")
            cwd = channel_wise_distillation(neck, teacher_neck, config.cwd_tau)
            distill = config.kd_class_weight * kd_cls + 0.5 * config.kd_dfl_weight * kd_dfl + config.cwd_weight * cwd
            total = total + alpha * distill
            parts |= {"kd_cls": kd_cls.detach(), "kd_dfl": kd_dfl.detach(), "cwd": cwd.detach(), "alpha": alpha}
        return total, parts

    def _kd_terms(self, model, output, teacher_output, fg_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """Class KD (summed over anchors, as the official) and DFL KD (mean over foreground sides; 0 without DFL)."""
        temperature = self.config.temperature
        scores, box = _scores_and_box(model, output)
        teacher_scores, teacher_box = _scores_and_box(model, teacher_output)
        if scores.shape != teacher_scores.shape or box.shape != teacher_box.shape:
            raise ConfigError(
                f"student and teacher outputs differ ({tuple(scores.shape)} vs "
                f"{tuple(teacher_scores.shape)}): the teacher must be the same network in float"
            )
        kd_cls = _kl_rows(scores, teacher_scores.detach(), temperature).sum() * temperature**2
        bins = box.shape[-1] // 4
        if bins <= 1:  # no DFL (e.g. YOLOv6-N/T: plain box regression)
            return kd_cls, kd_cls.new_zeros(())
        if fg_mask is not None:
            if not fg_mask.any():
                return kd_cls, box.sum() * 0.0
            box, teacher_box = box[fg_mask.bool()], teacher_box[fg_mask.bool()]
        rows = _kl_rows(box.reshape(-1, bins), teacher_box.detach().reshape(-1, bins), temperature)
        return kd_cls, rows.mean() * temperature**2


def _block_mse(output, teacher_output, neck: list[Tensor], teacher_neck: list[Tensor]) -> Tensor:
    """Sum over blocks of the MSE between student and teacher: neck outputs, then the head's raw outputs.

    The head outputs are every tensor of the train-mode output that is not itself a neck output (YOLOv6 returns
    the neck features again beside the head outputs; they count once).
    """
    neck_ids = {id(t) for t in neck} | {id(t) for t in teacher_neck}
    heads = [t for t in _tensors(output) if id(t) not in neck_ids]
    teacher_heads = [t for t in _tensors(teacher_output) if id(t) not in neck_ids]
    student, teacher = list(neck) + heads, list(teacher_neck) + teacher_heads
    if len(student) != len(teacher) or any(s.shape != t.shape for s, t in zip(student, teacher)):
        raise ConfigError(
            "student and teacher block outputs differ in number or shape: the teacher must be the same network in float"
        )
    return sum(torch.nn.functional.mse_loss(s.float(), t.detach().float()) for s, t in zip(student, teacher))


# -- the loop ----------------------------------------------------------------------------------------------------


def _check_student(qmodel: nn.Module) -> None:
    layers = quant_layers(qmodel)
    if not layers:
        raise ConfigError("run_qat needs a quantized model: quantize_model(...) then calibrate(...) first")
    states = [q.state for layer in layers.values() for q in (layer.input_quantizer, layer.weight_quantizer)]
    if QuantState.CALIBRATING in states:
        raise ConfigError("a quantizer is still calibrating: finish calibrate() before QAT")
    if QuantState.ENABLED not in states:
        raise ConfigError("no quantizer is enabled (uncalibrated model?): calibrate it, or load_quantized a PTQ model")


def _train_dataset(data, config: QATConfig):
    """A ``TrainDetectionDataset`` from a dataset root (its ``train_split``), or ``data`` itself if a Dataset."""
    if isinstance(data, torch.utils.data.Dataset):
        return data
    from ..core.data.augment import AugmentConfig
    from ..core.data.datasets import CocoDetection
    from ..core.data.train_dataset import TrainDetectionDataset
    from ..core.evaluation_run import EvalConfig, resolve_split

    image_dir, annotations = resolve_split(EvalConfig(model="-", data=str(Path(data)), split=config.train_split))
    augment = AugmentConfig.from_dict(config.augment)
    return TrainDetectionDataset(CocoDetection(image_dir, annotations), config.img_size, augment, seed=config.seed)


def _loader(dataset, config: QATConfig, epoch: int):
    from ..core.data.train_dataset import train_collate

    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(epoch, mosaic=True)  # mosaic then follows augment["mosaic"] (0 by default)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    order = torch.randperm(len(dataset), generator=generator).tolist()
    batches = [order[i : i + config.batch_size] for i in range(0, len(order), config.batch_size)]
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=batches, num_workers=config.workers, collate_fn=train_collate
    )


def same_input_groups(
    model: nn.Module, quantizers: list[TensorQuantizer], img_size: int = 64
) -> list[list[TensorQuantizer]]:
    """``quantizers`` grouped by the tensor they read: equal inputs in one traced forward of a random image.

    Calibration gives quantizers that read one tensor (the convs of two branches reading one ReLU output) the same
    amax, since they see the same data; the Q/DQ export relies on it to merge them into one QuantizeLinear.
    """
    inputs: dict[int, Tensor] = {}

    def hook(module: nn.Module, args: tuple, _output: Any) -> None:
        inputs[id(module)] = args[0].detach()

    handles = [quantizer.register_forward_hook(hook) for quantizer in quantizers]
    was_training = model.training
    try:
        with torch.no_grad():
            device = next(model.parameters()).device
            model.eval()(torch.rand(1, 3, img_size, img_size, generator=torch.Generator().manual_seed(0)).to(device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    groups: list[list[TensorQuantizer]] = []
    for quantizer in quantizers:
        x = inputs.get(id(quantizer))
        match = next((g for g in groups if x is not None and _same_tensor(inputs.get(id(g[0])), x)), None)
        if match is None:
            groups.append([quantizer])
        else:
            match.append(quantizer)
    return groups


def _same_tensor(a: Tensor | None, b: Tensor) -> bool:
    return a is not None and a.shape == b.shape and bool(torch.equal(a, b))


def _range_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Make the range of every enabled quantizer trainable, one parameter per read tensor; the parameters."""
    enabled = [m for m in model.modules() if isinstance(m, TensorQuantizer) and m.state is QuantState.ENABLED]
    per_tensor = [quantizer for quantizer in enabled if quantizer.axis is None]
    parameters = [quantizer.learn_amax_() for quantizer in enabled if quantizer.axis is not None]
    for group in same_input_groups(model, per_tensor):
        leader = group[0]
        with torch.no_grad():  # equal after calibration; the max never clips what one of them represented
            leader.set_amax_(torch.stack([quantizer.amax for quantizer in group]).max())
        parameters.append(leader.learn_amax_())
        for quantizer in group[1:]:
            quantizer.learn_amax_(shared=leader.log_amax)
    return parameters


def _freeze_ranges(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, TensorQuantizer):
            module.freeze_amax_()


def _optimizers(model: nn.Module, config: QATConfig) -> list[tuple[torch.optim.Optimizer, float]]:
    """``[(optimizer, initial lr)]``: Nesterov SGD of the weights, and Adam of the log ranges with ``learn_amax``."""
    from ..train.optim import param_groups

    ranges = _range_parameters(model) if config.learn_amax else []
    skip = {id(p) for p in ranges}
    groups = [
        {**group, "params": [p for p in group["params"] if id(p) not in skip]}
        for group in param_groups(model, config.weight_decay)
    ]
    groups = [group for group in groups if group["params"]]
    optimizers = [(torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True), config.lr)]
    if ranges:
        optimizers.append((torch.optim.Adam(ranges, lr=config.amax_lr), config.amax_lr))
    return optimizers


def _set_train_mode(model: nn.Module) -> None:
    """Train-mode forward (raw head outputs), with any BatchNorm left in the model kept on its running stats."""
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def _train_epoch(model, teacher, loss_fn: QATLoss, optimizers, loader, config: QATConfig, epoch: int, bar):
    sums: dict[str, float] = {}
    steps = 0
    weights = [p for group in optimizers[0].param_groups for p in group["params"]]
    _set_train_mode(model)
    with capture_head_inputs(model) as neck, capture_head_inputs(teacher) as teacher_neck:
        for images, targets in bar(loader):
            output = model(images)
            teacher_output = teacher_forward(teacher, images) if config.distill is not DistillMethod.NONE else None
            loss, parts = loss_fn(model, output, teacher_output, list(neck), list(teacher_neck), targets, epoch)
            for optimizer in optimizers:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip:
                torch.nn.utils.clip_grad_norm_(weights, max_norm=config.grad_clip)
            for optimizer in optimizers:
                optimizer.step()
            for name, value in {"loss": loss.detach(), **parts}.items():
                sums[name] = sums.get(name, 0.0) + float(value)
            steps += 1
    return {name: round(total / max(steps, 1), 6) for name, total in sums.items()}


def run_qat(
    qmodel: nn.Module,
    teacher: nn.Module,
    data: str | Path | torch.utils.data.Dataset,
    config: QATConfig | None = None,
    *,
    eval_fn: Callable[[nn.Module], float] | None = None,
    progress: bool = True,
) -> QATResult:
    """Fine-tune a calibrated fake-quant model in place, distilling from its float teacher.

    Args:
        qmodel: a calibrated model from ``quantize_model`` + ``calibrate`` (or ``load_quantized``); trained in place.
        teacher: the float network (deploy or train form, same classes and strides); never updated.
        data: a COCO-format dataset root (``config.train_split`` is used) or a ``TrainDetectionDataset``.
        config: hyper-parameters (defaults: :class:`QATConfig`).
        eval_fn: ``eval_fn(model) -> AP`` run after every epoch on the model in eval mode; the best epoch's weights
            are returned. Without it, the last epoch's.
        progress: show a per-epoch progress bar and print a line per epoch.

    Returns:
        A :class:`QATResult`; ``result.model`` is ``qmodel`` (eval mode) holding the chosen weights; amax unchanged,
        or the chosen epoch's learned ranges with ``config.learn_amax``.

    Raises:
        ConfigError: an uncalibrated / unquantized student, or a recipe the model does not support.

    Example:
        >>> result = run_qat(qmodel, float_model, "data/", QATConfig(epochs=5, distill="mse"), eval_fn=my_ap)
        >>> save_quantized(result.model, "qat.safetensors", qat=config.to_dict())
    """
    config = config or QATConfig()
    _check_student(qmodel)
    loss_fn = QATLoss(qmodel, config)
    dataset = _train_dataset(data, config)
    if len(dataset) == 0:
        raise ConfigError("the QAT training set is empty")
    torch.manual_seed(config.seed)
    optimizers = _optimizers(qmodel, config)
    history: list[dict[str, Any]] = []
    best_ap, best_epoch, best_state = None, config.epochs, None
    for epoch in range(config.epochs):
        factor = cosine_factor(epoch, config.epochs, config.lrf)  # per epoch, no warm-up
        for optimizer, initial_lr in optimizers:
            for group in optimizer.param_groups:
                group["lr"] = initial_lr * factor
        lr = config.lr * factor
        tick = time.perf_counter()
        bar = _progress_bar(progress, f"qat {epoch + 1}/{config.epochs}")
        loader = _loader(dataset, config, epoch)
        stats = _train_epoch(qmodel, teacher, loss_fn, [o for o, _ in optimizers], loader, config, epoch, bar)
        record = {"epoch": epoch + 1, **stats}
        record |= {"lr": lr, "seconds": round(time.perf_counter() - tick, 2)}
        if eval_fn is not None:
            ap = float(eval_fn(qmodel.eval()))
            record["ap"] = ap
            if best_ap is None or ap > best_ap:
                best_ap, best_epoch, best_state = ap, epoch + 1, copy.deepcopy(qmodel.state_dict())
        history.append(record)
        if progress:
            shown = {k: round(v, 5) for k, v in record.items() if k in ("loss", "det", "kd_cls", "cwd", "mse", "ap")}
            print(f"qat epoch {epoch + 1}/{config.epochs}: {shown}", flush=True)
    if best_state is not None:
        qmodel.load_state_dict(best_state)
    _freeze_ranges(qmodel)
    return QATResult(history=history, best_ap=best_ap, model=qmodel.eval(), best_epoch=best_epoch)


def _progress_bar(enabled: bool, description: str) -> Callable:
    if not enabled:
        return lambda loader: loader
    from tqdm import tqdm

    return lambda loader: tqdm(loader, desc=description, leave=False, dynamic_ncols=True, mininterval=2.0)
