"""Fake-quantization modules: ``TensorQuantizer`` and ``QuantConv2d``.

Layer three of ``primitives -> calibrators -> quantizer`` (YOLOv6 paper §2.5, issue 6). A ``TensorQuantizer``
holds its clipping range in an ``amax`` buffer (in the state_dict, so checkpoints carry it) and is in one of
three states, switched outside ``forward``:

* disabled (the default): ``forward`` is the identity;
* calibrating: ``forward`` records statistics (a ``Histogram`` per tensor, a running max per channel) and
  returns its input unchanged; ``stop_calibration`` turns them into ``amax``;
* enabled: ``forward`` is one fake-quant op (``torch.fake_quantize_per_{tensor,channel}_affine``), which exports
  to ONNX as QuantizeLinear/DequantizeLinear. There is no data-dependent branch.

An uncalibrated quantizer has an empty ``amax`` (shape ``(0,)``); a calibrated one has shape ``()`` per tensor
or ``(C,)`` per channel. Loading a state_dict resizes ``amax`` to the stored shape.

**Unsigned activations.** A per-tensor quantizer whose calibration data held no negative value (a ReLU output,
a Concat or MaxPool of ReLU outputs, the image) becomes *unsigned*: range 0..255 with scale ``amax / 255``
and zero point 0, exported as uint8. That is twice the resolution of symmetric int8 on the same range, and it
is the form ONNX Runtime's x86 kernels need to fold the ReLU into the int8 conv (its Relu+Q fusion requires
the zero point to be the type's minimum). ONNX Runtime's own ``quantize_static`` makes the same data-driven
choice (its asymmetric range starts at the observed minimum, clamped to 0). TensorRT takes symmetric int8
only: :func:`yolodeploy.quant.model.for_flavour` turns unsigned quantizers back into signed ones (same amax,
scale ``amax / 127``) for the TensorRT export. The flag is the ``unsigned`` buffer, so checkpoints carry it.

``QuantConv2d`` keeps the original ``nn.Conv2d`` as its child ``conv`` (so its float parameters are
``conv.weight``/``conv.bias``, and ``to_conv()`` gives it back unchanged) and adds the children
``input_quantizer`` (per tensor) and ``weight_quantizer`` (per output channel, axis 0). A wrapper rather than a
``Conv2d`` subclass, so passes that look for ``nn.Conv2d`` (BN folding, reparameterization) never mistake it for
a plain conv and drop its quantizers.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .calibrators import CalibMethod, Histogram, compute_amax, per_channel_amax
from .primitives import MIN_SCALE, fake_quantize_scaled, learnable_fake_quantize, qrange

__all__ = ["QuantState", "TensorQuantizer", "QuantConv2d", "QuantSiLU", "SIGMOID_SCALE"]


class QuantState(str, Enum):
    """What ``TensorQuantizer.forward`` does."""

    DISABLED = "disabled"
    CALIBRATING = "calibrating"
    ENABLED = "enabled"


class TensorQuantizer(nn.Module):
    """Symmetric int8 fake quantization of one tensor, per tensor (``axis=None``) or per channel along ``axis``.

    Example:
        >>> quantizer = TensorQuantizer()
        >>> quantizer.start_calibration()
        >>> for batch in batches:
        ...     quantizer(batch)
        >>> quantizer.stop_calibration("entropy")  # sets amax and enables
        >>> y = quantizer(x)  # fake-quantized
    """

    amax: Tensor

    unsigned: Tensor

    def __init__(self, axis: int | None = None, num_bits: int = 8, num_bins: int = 2048) -> None:
        super().__init__()
        self._signed_max = qrange(num_bits)[1]
        self.axis = axis
        self.num_bits = num_bits
        self.num_bins = num_bins
        self.state = QuantState.DISABLED
        self.register_buffer("amax", torch.empty(0))
        self.register_buffer("unsigned", torch.tensor(False))
        self._unsigned = False  # Python mirror of the buffer: export traces must not branch on a tensor
        self._histogram: Histogram | None = None
        self._running_max: Tensor | None = None
        self._min_seen = math.inf

    @property
    def is_unsigned(self) -> bool:
        """Whether the range is 0..2**b - 1 (uint8) rather than symmetric int8."""
        return self._unsigned

    @property
    def quant_max(self) -> int:
        """The largest code: 255 unsigned, 127 signed (8 bits); ``scale = amax / quant_max``."""
        return 2 * self._signed_max + 1 if self.is_unsigned else self._signed_max

    def set_unsigned_(self, unsigned: bool) -> None:
        """Switch between unsigned (0..255) and signed (-128..127) codes; ``amax`` is kept.

        Raises:
            ConfigError: a per-channel quantizer (weights are always signed).
        """
        if unsigned and self.axis is not None:
            raise ConfigError("per-channel (weight) quantizers are always signed")
        self.unsigned.fill_(bool(unsigned))
        self._unsigned = bool(unsigned)

    @property
    def is_calibrated(self) -> bool:
        """Whether ``amax`` has been set."""
        return self.amax.numel() > 0

    def enable(self) -> None:
        """Fake-quantize in ``forward``.

        Raises:
            ConfigError: the quantizer has no amax yet.
        """
        if not self.is_calibrated:
            raise ConfigError("cannot enable an uncalibrated quantizer: calibrate it (or load its amax) first")
        self.state = QuantState.ENABLED

    def disable(self) -> None:
        """Pass inputs through unchanged in ``forward``."""
        self.state = QuantState.DISABLED

    def start_calibration(self) -> None:
        """Forget earlier statistics and record those of every following ``forward`` input."""
        self._histogram = Histogram(self.num_bins) if self.axis is None else None
        self._running_max = None
        self._min_seen = math.inf
        self.state = QuantState.CALIBRATING

    def stop_calibration(
        self,
        method: CalibMethod | str = CalibMethod.ENTROPY,
        enable: bool = True,
        allow_unsigned: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """Set ``amax`` from the recorded statistics, drop them, and enable (or disable) the quantizer.

        Args:
            method: "max", "percentile", "entropy" or "mse" (per-channel quantizers support only "max").
            enable: enable the quantizer afterwards; else disable it.
            allow_unsigned: a per-tensor quantizer that saw no negative value becomes unsigned (0..255); the
                entropy / MSE search then optimizes for 256 levels. False: always signed.
            **kwargs: passed to the amax search, e.g. ``percentile=99.99``.

        Returns:
            The new amax.

        Raises:
            ConfigError: not calibrating, no data seen, or a method the granularity does not support.
        """
        method = CalibMethod.parse(method)
        if self.state is not QuantState.CALIBRATING:
            raise ConfigError("stop_calibration called without start_calibration")
        if self.axis is not None:
            if method is not CalibMethod.MAX:
                raise ConfigError(f"per-channel quantizers calibrate with 'max' only, got {method.value!r}")
            if self._running_max is None:
                raise ConfigError("no calibration data: run forward passes between start_ and stop_calibration")
            amax = self._running_max
        else:
            if self._histogram is None or self._histogram.num_values == 0:
                raise ConfigError("no calibration data: run forward passes between start_ and stop_calibration")
            unsigned = allow_unsigned and self._min_seen >= 0
            self.set_unsigned_(unsigned)
            if unsigned and method in (CalibMethod.ENTROPY, CalibMethod.MSE):
                kwargs = {"num_bits": self.num_bits, "unsigned": True, **kwargs}
            amax = torch.tensor(compute_amax(self._histogram, method, **kwargs))
        self._histogram, self._running_max = None, None
        self.set_amax_(amax)
        self.state = QuantState.ENABLED if enable else QuantState.DISABLED
        return self.amax

    def set_amax_(self, amax: Tensor | float) -> None:
        """Store ``amax`` (a scalar per tensor, one value per channel otherwise) in the buffer.

        Values are floored at ``quant_max * MIN_SCALE`` (an all-zero tensor or channel still gets a positive scale), so
        ``forward`` computes the scale with one division, which the ONNX exporter folds into a constant.

        Raises:
            ConfigError: a per-channel amax that is not 1-D, or negative / non-finite values.
        """
        amax = torch.as_tensor(amax, dtype=torch.float32).detach().clone()
        amax = amax.reshape(()) if self.axis is None else amax.reshape(-1)
        if not bool(torch.isfinite(amax).all()) or bool((amax < 0).any()):
            raise ConfigError(f"amax must be finite and >= 0, got {amax}")
        self.amax = amax.clamp(min=MIN_SCALE * self.quant_max).to(self.amax.device)

    def calibrate_weight_(self, weight: Tensor) -> None:
        """Set ``amax`` to ``max |weight|`` (per channel along ``axis``, or over the whole tensor)."""
        if self.axis is None:
            self.set_amax_(weight.detach().abs().max())
        else:
            self.set_amax_(per_channel_amax(weight, self.axis))

    @property
    def learns_amax(self) -> bool:
        """Whether the range is trainable now (between :meth:`learn_amax_` and :meth:`freeze_amax_`)."""
        return "log_amax" in self._parameters

    def learn_amax_(self, shared: nn.Parameter | None = None) -> nn.Parameter:
        """Make the range trainable (LSQ): a ``log_amax`` parameter that ``forward`` uses instead of ``amax``.

        The parameter is the log of the range, so an optimizer step changes it by a relative amount whatever the
        tensor's magnitude, and it stays positive. ``amax`` keeps the calibrated value until :meth:`freeze_amax_`.
        ``shared``: use another quantizer's parameter (quantizers of one tensor must keep one range, or the export
        cannot merge them and ONNX Runtime cannot fuse the conv that produces the tensor).

        Raises:
            ConfigError: the quantizer has no amax yet, or ``shared`` has another shape.
        """
        if not self.is_calibrated:
            raise ConfigError("cannot learn the range of an uncalibrated quantizer: calibrate it first")
        if shared is not None:
            if shared.shape != self.amax.shape:
                raise ConfigError(f"shared log_amax of shape {tuple(shared.shape)} for amax {tuple(self.amax.shape)}")
            self.log_amax = shared
        elif not self.learns_amax:
            self.log_amax = nn.Parameter(self.amax.detach().clone().log())
        return self.log_amax

    def freeze_amax_(self) -> None:
        """Store the learned range in ``amax`` and drop the parameter (no-op when not learning)."""
        if self.learns_amax:
            with torch.no_grad():
                amax = self._parameters.pop("log_amax").exp()
            self.set_amax_(amax)

    def _collect(self, x: Tensor) -> None:
        """Record the statistics of one calibration input."""
        if self.axis is None:
            self._histogram.collect(x)
            if x.numel():
                self._min_seen = min(self._min_seen, float(x.detach().min()))
            return
        batch_max = per_channel_amax(x, self.axis)
        self._running_max = batch_max if self._running_max is None else torch.maximum(self._running_max, batch_max)

    def forward(self, x: Tensor) -> Tensor:
        if self.state is QuantState.ENABLED:
            if self.learns_amax:
                scale = self.log_amax.exp() / self.quant_max
                return learnable_fake_quantize(x, scale, self.axis, self.num_bits, self.is_unsigned)
            return fake_quantize_scaled(x, self.amax / self.quant_max, self.axis, self.num_bits, self.is_unsigned)
        if self.state is QuantState.CALIBRATING:
            self._collect(x)
        return x

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        stored = state_dict.get(prefix + "amax")
        if stored is not None and stored.shape != self.amax.shape:
            self.amax = torch.empty(stored.shape, dtype=self.amax.dtype, device=self.amax.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self.set_unsigned_(bool(self.unsigned))  # sync the mirror; a per-channel one cannot load unsigned
        with torch.no_grad():
            self.amax.clamp_(min=MIN_SCALE * self.quant_max)

    def extra_repr(self) -> str:
        granularity = "per_tensor" if self.axis is None else f"per_channel(axis={self.axis})"
        amax = "uncalibrated" if not self.is_calibrated else f"amax_shape={tuple(self.amax.shape)}"
        sign = ", unsigned" if self.is_unsigned else ""
        learned = ", learning amax" if self.learns_amax else ""
        return f"{granularity}, num_bits={self.num_bits}{sign}, state={self.state.value}, {amax}{learned}"


class QuantConv2d(nn.Module):
    """An ``nn.Conv2d`` whose input (per tensor) and weight (per output channel) are fake-quantized.

    An optional third quantizer, ``output_quantizer`` (per tensor), quantizes the conv's output. It is used only
    where ``quantize_output`` is set (by :func:`yolodeploy.quant.model.quantize_model`: convs whose output does
    not go straight into a ReLU, e.g. before a SiLU or a prediction conv) and only once calibrated: ONNX
    Runtime runs a conv in int8 only when its output is quantized too (DQ -> Conv -> Q). ``enable`` turns it on
    iff it has an amax, so an uncalibrated output quantizer (the TensorRT-style model) stays the identity.

    Example:
        >>> qconv = QuantConv2d.from_conv(conv)  # weight amax set, both quantizers disabled
        >>> qconv.input_quantizer.start_calibration()
        >>> qconv(calibration_batch)
        >>> qconv.input_quantizer.stop_calibration("entropy")
        >>> qconv.enable()
    """

    def __init__(
        self,
        conv: nn.Conv2d,
        input_quantizer: TensorQuantizer | None = None,
        weight_quantizer: TensorQuantizer | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(conv, nn.Conv2d):
            raise ConfigError(f"QuantConv2d wraps an nn.Conv2d, got {type(conv).__name__}")
        self.conv = conv
        self.input_quantizer = input_quantizer if input_quantizer is not None else TensorQuantizer()
        self.weight_quantizer = weight_quantizer if weight_quantizer is not None else TensorQuantizer(axis=0)
        self.output_quantizer = TensorQuantizer()
        self.quantize_output = False

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, calibrate_weight: bool = True) -> QuantConv2d:
        """Wrap ``conv`` (its parameters are shared, not copied); set the weight amax unless told not to."""
        module = cls(conv)
        if calibrate_weight:
            module.weight_quantizer.calibrate_weight_(conv.weight)
        return module

    def to_conv(self) -> nn.Conv2d:
        """The wrapped float conv."""
        return self.conv

    def enable(self) -> None:
        """Enable the input and weight quantizers (each must be calibrated), and the output one if calibrated."""
        self.input_quantizer.enable()
        self.weight_quantizer.enable()
        if self.output_quantizer.is_calibrated:
            self.output_quantizer.enable()

    def disable(self) -> None:
        """Disable every quantizer: ``forward`` then equals the float conv exactly."""
        self.input_quantizer.disable()
        self.weight_quantizer.disable()
        self.output_quantizer.disable()

    def quantizers(self) -> dict[str, TensorQuantizer]:
        """The activation quantizers that calibration sets: ``input``, and ``output`` where ``quantize_output``."""
        found = {"input": self.input_quantizer}
        if self.quantize_output:
            found["output"] = self.output_quantizer
        return found

    def forward(self, x: Tensor) -> Tensor:
        weight = self.weight_quantizer(self.conv.weight)
        return self.output_quantizer(self.conv._conv_forward(self.input_quantizer(x), weight, self.conv.bias))


#: The fixed scale of a quantized sigmoid gate: uint8 codes 0..255 over its whole range [0, 1].
SIGMOID_SCALE = 1.0 / 255.0


class QuantSiLU(nn.Module):
    """``x * sigmoid(x)`` whose sigmoid gate is fake-quantized to uint8 with the fixed scale 1/255, zero point 0.

    It replaces the ``nn.SiLU`` that reads the output of an output-quantized ``QuantConv2d`` (see
    :func:`yolodeploy.quant.model.quantize_model`). The export is DQ -> Sigmoid -> Q -> DQ -> Mul -> Q, which ONNX
    Runtime runs as QLinearSigmoid + QLinearMul (a lookup table and an int8 product) instead of dequantizing
    every element, a float sigmoid and multiply and a re-quantization (ONNX Runtime fuses these only for uint8,
    which the ``ort`` flavour gives every activation). The gate needs no calibration: its range is [0, 1].

    The gate is quantized exactly while ``source`` (the output quantizer of the conv the SiLU reads) is enabled:
    a float (disabled) layer, a calibrating model and the TensorRT form (no output quantizers; TensorRT fuses the
    SiLU into the conv itself) all compute the float SiLU.

    Example:
        >>> act = QuantSiLU(qconv.output_quantizer)
        >>> y = act(qconv(x))
    """

    def __init__(self, source: TensorQuantizer | None = None) -> None:
        super().__init__()
        self._source = [source] if source is not None else []  # a list: a reference, not a child module
        # not persistent: a constant, so checkpoints neither carry it nor miss it
        self.register_buffer("gate_scale", torch.tensor(SIGMOID_SCALE, dtype=torch.float32), persistent=False)

    @property
    def active(self) -> bool:
        """Whether the gate is quantized now (its source quantizer is enabled)."""
        return bool(self._source) and self._source[0].state is QuantState.ENABLED

    def forward(self, x: Tensor) -> Tensor:
        if not self.active:
            return nn.functional.silu(x)  # bit-identical to the nn.SiLU it replaced
        return x * fake_quantize_scaled(torch.sigmoid(x), self.gate_scale.float(), None, 8, unsigned=True)

    def extra_repr(self) -> str:
        return f"gate=uint8(scale=1/255), {'active' if self.active else 'float'}"
