"""RepOptimizer: train a plain RealVGG model as if it were the multi-branch block (YOLOv6 §2.5.1).

Paper: Ding et al., "Re-parameterizing Your Optimizers rather than Architectures", arXiv:2205.15242.
Reference: https://github.com/meituan/YOLOv6/blob/main/yolov6/utils/RepOptimizer.py (``extract_scales``,
``RepVGGOptimizer.reinitialize`` / ``generate_gradient_masks`` / ``step``).

The workflow has three stages:

1. Train a hyper-search model (``training_mode="hyper_search"``, e.g. ``yolov6n_hs``). Its ``LinearAddBlock`` learns
   per-channel scales of the 3x3, 1x1 and identity branches.
2. Extract the scales with :func:`extract_scales` and store them with :func:`save_scales`
   (CLI: ``yolodeploy repopt-scales``).
3. Train the plain model (``training_mode="repopt"``, e.g. ``yolov6n_opt``, with ``RealVGGBlock``). When training from
   scratch, first call :func:`reinit_from_scales_`. Then optimize with :func:`build_repopt_optimizer`, an SGD whose
   RealVGG conv gradients are multiplied by the masks of :func:`grad_masks`.

Why this works: in the CSLA block ``s_conv * conv3x3(x) + s_1x1 * conv1x1(x) + s_id * x``, the conv scales are
constants, and the kernels and the identity scale are trained. One plain SGD step on it, re-fused, equals one SGD
step on the fused kernel whose gradient is multiplied by ``s_conv**2``, plus ``s_1x1**2`` at the centre tap, plus 1
at the identity (diagonal) centre taps. ``tests/train/test_repopt.py`` checks this identity.

Example:
    >>> scales = extract_scales(create_model("yolov6n_hs", num_classes=4))  # in practice: a trained one
    >>> model = create_model("yolov6n_opt", num_classes=4)
    >>> reinit_from_scales_(model, scales)  # training from scratch only
    >>> optimizer = build_repopt_optimizer(model, scales, lr=0.01)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..core.fuse import identity_kernel, pad_kernel
from ..core.layers import LinearAddBlock, RealVGGBlock
from ..errors import CheckpointError, ConfigError
from ..utils.io import atomic_path

__all__ = [
    "RepOptScales",
    "extract_scales",
    "save_scales",
    "load_scales",
    "check_scales_match",
    "equivalent_kernel",
    "gradient_mask",
    "reinit_from_scales_",
    "grad_masks",
    "default_param_groups",
    "RepOptimizer",
    "build_repopt_optimizer",
    "SCALES_FORMAT",
    "SCALES_FORMAT_VERSION",
]

SCALES_FORMAT = "yolodeploy-repopt-scales"
SCALES_FORMAT_VERSION = 1
_META_KEY = "yolodeploy_repopt"


class RepOptScales(dict):
    """The scales of a hyper-search model: ``{block name: [scale tensors]}``, plus the architecture name.

    Each value is in the official order: ``[scale_identity, scale_1x1, scale_conv]`` for a block with an identity
    branch (stride 1, equal channels), ``[scale_1x1, scale_conv]`` otherwise. Every tensor is 1-D float32 with one
    entry per output channel.
    """

    def __init__(self, *args: Any, arch: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arch = arch


# ---------------------------------------------------------------------------------------------------- scales


def extract_scales(hs_model: nn.Module) -> RepOptScales:
    """The branch scales of every ``LinearAddBlock`` of a hyper-search model, keyed by module name.

    Raises:
        ConfigError: the model has no ``LinearAddBlock`` (it is not a ``training_mode="hyper_search"`` model).

    Example:
        >>> scales = extract_scales(load_checkpoint("yolov6n_hs_trained.safetensors"))
        >>> scales["backbone.stem"]  # [scale_1x1, scale_conv] (stride 2: no identity)
    """
    scales = RepOptScales(arch=getattr(hs_model, "arch", None))
    for name, block in hs_model.named_modules():
        if not isinstance(block, LinearAddBlock):
            continue
        branches = [block.scale_1x1, block.scale_conv]
        if hasattr(block, "scale_identity"):
            branches.insert(0, block.scale_identity)
        scales[name] = [branch.weight.detach().to("cpu", torch.float32).clone() for branch in branches]
    if not scales:
        raise ConfigError(
            f"{getattr(hs_model, 'arch', None) or type(hs_model).__name__} has no LinearAddBlock: scales come from "
            "a hyper-search model (training_mode 'hyper_search', e.g. yolov6n_hs)"
        )
    return scales


def save_scales(scales: dict[str, list[Tensor]], path: str | os.PathLike) -> Path:
    """Write ``scales`` to a ``.safetensors`` file atomically (tensors ``"{name}.{i}"`` + JSON metadata).

    The metadata records the hyper-search architecture (``scales.arch`` of a :class:`RepOptScales`) and the number of
    scales of each block, in order.

    Example:
        >>> save_scales(extract_scales(hs_model), "yolov6n_scales.safetensors")
    """
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {
        f"{name}.{index}": tensor.detach().to("cpu", torch.float32).contiguous().clone()
        for name, branch_scales in scales.items()
        for index, tensor in enumerate(branch_scales)
    }
    metadata = {
        "format": SCALES_FORMAT,
        "format_version": SCALES_FORMAT_VERSION,
        "arch": getattr(scales, "arch", None),
        "blocks": {name: len(branch_scales) for name, branch_scales in scales.items()},
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={_META_KEY: json.dumps(metadata)})
    return path


def load_scales(path: str | os.PathLike) -> RepOptScales:
    """Read a scales file written by :func:`save_scales`.

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or not a scales file.

    Example:
        >>> scales = load_scales("yolov6n_scales.safetensors")
    """
    from ..models.checkpoint import _read_tensors, check_format_version, read_json_metadata

    path, meta = read_json_metadata(
        path,
        _META_KEY,
        missing=f"not a RepOpt scales file (no {_META_KEY} metadata); write one with "
        "'yolodeploy repopt-scales HS_CHECKPOINT -o FILE'",
        corrupt="corrupt RepOpt scales metadata ({exc}); re-create the file",
    )
    if not isinstance(meta, dict) or meta.get("format") != SCALES_FORMAT or not isinstance(meta.get("blocks"), dict):
        raise CheckpointError(f"{path}: metadata is not a {SCALES_FORMAT} document; re-create the file")
    check_format_version(path, meta, SCALES_FORMAT_VERSION)
    tensors = _read_tensors(path, "cpu")
    scales = RepOptScales(arch=meta.get("arch"))
    for name, count in meta["blocks"].items():
        keys = [f"{name}.{index}" for index in range(count)] if count in (2, 3) and type(count) is int else []
        if not keys or any(key not in tensors or tensors[key].dim() != 1 for key in keys):
            raise CheckpointError(f"{path}: scales of block {name!r} are missing or malformed; re-create the file")
        scales[name] = [tensors[key].float() for key in keys]
    return scales


def check_scales_match(model: nn.Module, scales: dict[str, list[Tensor]]) -> None:
    """Check that every ``RealVGGBlock`` of ``model`` has scales of its shape, and no scales are left over.

    A block with stride 1 and equal channels needs three scales (identity, 1x1, 3x3), any other block two; each
    scale has one entry per output channel.

    Raises:
        ConfigError: ``model`` has no ``RealVGGBlock``, or the first block (or scale entry) that does not match.
    """
    blocks = dict(_realvgg_blocks(model))
    model_name = getattr(model, "arch", None) or type(model).__name__
    if not blocks:
        raise ConfigError(
            f"{model_name} has no RealVGGBlock: RepOptimizer trains a training_mode 'repopt' model (e.g. yolov6n_opt)"
        )
    problem = _first_mismatch(blocks, scales)
    if problem:
        source = getattr(scales, "arch", None) or "an unknown architecture"
        raise ConfigError(
            f"scales file is for another architecture ({source}, model {model_name}): {problem}; extract the scales "
            "from the hyper-search twin of the model (e.g. yolov6n_hs for yolov6n_opt)"
        )


def _first_mismatch(blocks: dict[str, RealVGGBlock], scales: dict[str, list[Tensor]]) -> str | None:
    for name, block in blocks.items():
        count, channels = (3 if _has_identity(block.conv) else 2), block.conv.out_channels
        got = scales.get(name)
        if got is None:
            return f"no scales for block {name}"
        sizes = [int(t.numel()) for t in got]
        if len(got) != count or any(size != channels for size in sizes):
            return f"block {name} needs {count} scales of {channels} channels, the file has {len(got)} of {sizes}"
    extra = [name for name in scales if name not in blocks]
    return f"scales for {extra[0]}, which is not a RealVGGBlock of the model" if extra else None


# ---------------------------------------------------------------------------------------------------- math


def equivalent_kernel(kernel: Tensor, kernel_1x1: Tensor, scales: list[Tensor]) -> Tensor:
    """The single kernel of ``s_conv * conv(x) + s_1x1 * conv1x1(x) (+ s_id * x)`` (official reinit rule).

    Args:
        kernel: the ``k x k`` kernel ``(out, in, k, k)``.
        kernel_1x1: the 1x1 kernel ``(out, in, 1, 1)``, padded to the centre tap.
        scales: ``[s_id, s_1x1, s_conv]`` or ``[s_1x1, s_conv]`` (official order), each of ``out`` entries.

    Returns:
        The equivalent ``(out, in, k, k)`` kernel.
    """
    *identity_scale, scale_1x1, scale_conv = scales
    size = kernel.shape[-1]
    fused = kernel * _per_out(scale_conv, kernel) + pad_kernel(kernel_1x1, size) * _per_out(scale_1x1, kernel)
    if identity_scale:
        out_channels = kernel.shape[0]
        if kernel.shape[1] != out_channels:
            raise ConfigError(f"an identity scale needs in == out channels, the kernel is {tuple(kernel.shape)}")
        eye = identity_kernel(out_channels, 1, size, dtype=kernel.dtype, device=kernel.device)
        fused = fused + eye * _per_out(identity_scale[0], kernel)
    return fused


def gradient_mask(kernel_shape: torch.Size | tuple[int, ...], scales: list[Tensor]) -> Tensor:
    """The official gradient multiplier of a fused kernel: ``s_conv**2`` everywhere, ``+ s_1x1**2`` at the centre
    tap, ``+ 1`` at the identity (diagonal) centre taps when the block has an identity branch."""
    *identity_scale, scale_1x1, scale_conv = (scale.detach().to("cpu", torch.float32) for scale in scales)
    out_channels, in_channels, height, width = kernel_shape
    mask = (scale_conv**2).view(-1, 1, 1, 1).expand(out_channels, in_channels, height, width).clone()
    mask[:, :, height // 2, width // 2] += (scale_1x1**2).view(-1, 1)
    if identity_scale:
        mask = mask + identity_kernel(out_channels, 1, height)
    return mask


def _per_out(scale: Tensor, like: Tensor) -> Tensor:
    return scale.detach().to(like.device, like.dtype).view(-1, 1, 1, 1)


def _has_identity(conv: nn.Conv2d) -> bool:
    return conv.in_channels == conv.out_channels and tuple(conv.stride) == (1, 1)


def _realvgg_blocks(model: nn.Module) -> list[tuple[str, RealVGGBlock]]:
    return [(name, module) for name, module in model.named_modules() if isinstance(module, RealVGGBlock)]


# ---------------------------------------------------------------------------------------------------- model


@torch.no_grad()
def reinit_from_scales_(
    model: nn.Module, scales: dict[str, list[Tensor]], *, generator: torch.Generator | None = None
) -> None:
    """Re-initialize every RealVGG conv as the CSLA block it stands for (official ``reinitialize``).

    Each conv becomes :func:`equivalent_kernel` of its current (random) kernel, a freshly drawn 1x1 kernel (PyTorch's
    default conv init, ``kaiming_uniform_(a=sqrt(5))``) and the scales. The identity branch uses the trained
    identity scale (the official ``use_identity_scales_for_reinit=True``). Call it only when training from scratch:
    the official skips it when starting from pretrained weights.

    Args:
        model: a RepOpt model (``training_mode="repopt"``), freshly created.
        scales: from :func:`extract_scales` / :func:`load_scales`.
        generator: random generator of the 1x1 kernels (default: the global one).

    Raises:
        ConfigError: the scales do not match the model (see :func:`check_scales_match`).

    Example:
        >>> reinit_from_scales_(create_model("yolov6n_opt", num_classes=4), load_scales("scales.safetensors"))
    """
    check_scales_match(model, scales)
    for name, block in _realvgg_blocks(model):
        conv = block.conv
        kernel_1x1 = torch.empty(conv.out_channels, conv.in_channels, 1, 1, dtype=conv.weight.dtype)
        nn.init.kaiming_uniform_(kernel_1x1, a=math.sqrt(5), generator=generator)
        conv.weight.copy_(equivalent_kernel(conv.weight, kernel_1x1.to(conv.weight.device), scales[name]))


def grad_masks(model: nn.Module, scales: dict[str, list[Tensor]]) -> dict[nn.Parameter, Tensor]:
    """The gradient mask of every RealVGG conv weight (see :func:`gradient_mask`), on the weight's device/dtype.

    Raises:
        ConfigError: the scales do not match the model (see :func:`check_scales_match`).
    """
    check_scales_match(model, scales)
    masks = {}
    for name, block in _realvgg_blocks(model):
        weight = block.conv.weight
        masks[weight] = gradient_mask(weight.shape, scales[name]).to(weight.device, weight.dtype)
    return masks


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The official YOLOv6 groups (BN weights and biases without decay); the trainer's own :func:`param_groups`."""
    from .optim import param_groups

    return param_groups(model, weight_decay)


# ---------------------------------------------------------------------------------------------------- optimizer


class RepOptimizer(torch.optim.SGD):
    """SGD that multiplies the gradient of each masked parameter by its mask before the update.

    The order follows the official ``RepVGGOptimizer.step``: the masked gradient gets weight decay added (decay is
    not masked), then momentum / Nesterov as in ``torch.optim.SGD``, whose update it reuses. The masking is a step
    pre-hook registered first (a post-hook puts back ``p.grad`` as the backward pass wrote it), so ``step()``,
    ``zero_grad()``, ``state_dict()`` / ``load_state_dict()``, LR schedulers and ``GradScaler.step`` work as for SGD.
    The masks are not optimizer state: on resume, build the optimizer again from the same scales, then
    ``load_state_dict``. ``step(closure)`` is not supported (the closure's fresh gradients would miss the masks).

    Args:
        params: parameters or param groups, as for ``torch.optim.SGD``.
        masks: ``{parameter: mask}``, from :func:`grad_masks`; every key must be in ``params``.
        lr: learning rate.
        momentum: momentum factor (official 0.937).
        dampening: momentum dampening (official 0).
        weight_decay: default decay of the groups without their own ``weight_decay`` (official 0).
        nesterov: Nesterov momentum (official True).

    Raises:
        ConfigError: a masked parameter is not optimized, or a mask does not have its parameter's shape.

    Example:
        >>> optimizer = RepOptimizer(default_param_groups(model, 5e-4), grad_masks(model, scales), lr=0.01)
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter] | Iterable[dict[str, Any]],
        masks: dict[nn.Parameter, Tensor],
        lr: float,
        momentum: float = 0.937,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = True,
    ) -> None:
        super().__init__(
            params, lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov
        )
        optimized = {id(p) for group in self.param_groups for p in group["params"]}
        for param, mask in masks.items():
            if id(param) not in optimized:
                raise ConfigError(
                    f"a masked parameter of shape {tuple(param.shape)} is in no param group: RepOptimizer must "
                    "optimize every RealVGG conv weight"
                )
            if mask.shape != param.shape:
                raise ConfigError(f"gradient mask of shape {tuple(mask.shape)} for a parameter {tuple(param.shape)}")
        self.masks = dict(masks)
        self._raw_grads: dict[nn.Parameter, Tensor] = {}
        self.register_step_pre_hook(_mask_gradients)
        self.register_step_post_hook(_restore_gradients)


def _mask_gradients(optimizer: RepOptimizer, args: tuple, kwargs: dict) -> None:
    if kwargs.get("closure") is not None or any(callable(arg) for arg in args):  # args: (optimizer[, closure])
        raise NotImplementedError("RepOptimizer.step(closure): call backward() first, then step() without closure")
    with torch.no_grad():
        for param, mask in optimizer.masks.items():
            if param.grad is None:
                continue
            if mask.device != param.device or mask.dtype != param.dtype:  # the model moved after the build
                mask = optimizer.masks[param] = mask.to(param.device, param.dtype)
            optimizer._raw_grads[param] = param.grad
            param.grad = param.grad * mask


def _restore_gradients(optimizer: RepOptimizer, args: tuple, kwargs: dict) -> None:
    for param, grad in optimizer._raw_grads.items():
        param.grad = grad
    optimizer._raw_grads.clear()


def build_repopt_optimizer(
    model: nn.Module,
    scales: dict[str, list[Tensor]],
    *,
    lr: float,
    momentum: float = 0.937,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    param_groups: list[dict[str, Any]] | None = None,
) -> RepOptimizer:
    """The RepOptimizer of a RepOpt model: SGD with the gradient masks of ``scales`` (no re-initialization).

    Args:
        model: a RepOpt model (``training_mode="repopt"``).
        scales: from :func:`extract_scales` / :func:`load_scales`.
        lr: learning rate.
        momentum: SGD momentum (official 0.937).
        weight_decay: decay of the conv/linear weights in the default groups, and of any group in ``param_groups``
            without its own ``weight_decay`` (the official trainer first scales it by ``batch_size * accumulate / 64``;
            pass the scaled value).
        nesterov: Nesterov momentum (official True).
        param_groups: the trainer's own groups (e.g. BN weights and biases with ``"weight_decay": 0.0``), as for
            ``torch.optim.SGD``. Default: :func:`default_param_groups`.

    Raises:
        ConfigError: the scales do not match the model, or a RealVGG conv weight is in no group.

    Example:
        >>> model = create_model("yolov6n_opt", num_classes=4)
        >>> optimizer = build_repopt_optimizer(model, load_scales("scales.safetensors"), lr=0.01)
        >>> loss.backward(); optimizer.step(); optimizer.zero_grad()
    """
    masks = grad_masks(model, scales)
    groups = param_groups if param_groups is not None else default_param_groups(model, weight_decay)
    return RepOptimizer(groups, masks, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
