"""The layers of YOLOv7: RepConv, ELAN plumbing (MP, SP, ReOrg, DownC, SPPCSPC, Concat, Shortcut), YOLOR
implicit knowledge and the anchor-based heads (IDetect, IAuxDetect, Detect).

Paper: "YOLOv7: Trainable bag-of-freebies sets new state-of-the-art for real-time object detectors"
(arXiv:2207.02696). Module and attribute names follow the official implementation
(https://github.com/WongKinYiu/yolov7, commit a207844) so that its state_dicts load unchanged
(``RepConv.rbr_dense.0.weight``, ``IDetect.ia.0.implicit``, ...). Every BatchNorm uses ``eps=1e-3,
momentum=0.03`` (the official ``initialize_weights``). The fusion math lives in :mod:`.fuse`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .boxes import make_anchor_points
from .fuse import conv_bn_kernel_bias, fused_conv, identity_bn_kernel_bias, pad_kernel
from .layers import ConvModule, batch_norm, make_activation
from .shapes import batch_dim, static_size

__all__ = [
    "DEFAULT_ACTIVATION",
    "autopad",
    "Conv",
    "RepConv",
    "MP",
    "SP",
    "ReOrg",
    "Concat",
    "Shortcut",
    "DownC",
    "SPPCSPC",
    "ImplicitA",
    "ImplicitM",
    "Detect",
    "IDetect",
    "IAuxDetect",
]


DEFAULT_ACTIVATION = "silu"  # the official Conv.default_act


def autopad(kernel_size: int, padding: int | None = None, dilation: int = 1) -> int:
    """'Same' padding of a (dilated) square kernel, unless ``padding`` is given."""
    if padding is not None:
        return padding
    return (dilation * (kernel_size - 1) + 1) // 2


class Conv(ConvModule):
    """Conv2d -> BatchNorm2d -> activation, with the official argument order ``(c_in, c_out, k, s, p, g, d)``.

    Keys ``conv.weight``, ``bn.*``; ``reparameterize()`` folds the BN into a biased ``conv``.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: square kernel size.
        stride: conv stride.
        padding: conv padding; None means 'same'.
        groups: conv groups.
        dilation: conv dilation.
        activation: activation name, or None for none.
        inference_mode: build the fused form directly.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        dilation: int = 1,
        activation: str | None = DEFAULT_ACTIVATION,
        inference_mode: bool = False,
    ) -> None:
        padding = autopad(kernel_size, padding, dilation)
        super().__init__(
            in_channels, out_channels, kernel_size, stride, activation, padding, groups, inference_mode=inference_mode
        )
        if dilation != 1:
            bias = self.conv.bias is not None
            self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias)


class RepConv(nn.Module):
    """Re-parameterizable 3x3 conv: act(BN(conv3x3) + BN(conv1x1) + BN(x)), identity only when shapes allow.

    The identity branch exists for stride 1 and equal channels; its kernel is built per group, so grouped
    RepConvs fuse exactly (the official fusion assumes ``groups=1`` there). ``reparameterize()`` merges all
    branches into one biased 3x3 conv ``rbr_reparam`` (the official deploy layout).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: must be 3.
        stride: conv stride.
        padding: must be 1 (or None).
        groups: conv groups.
        activation: activation name (the official default is SiLU).
        inference_mode: build the fused ``rbr_reparam`` directly (to load fused weights).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        activation: str | None = "silu",
        inference_mode: bool = False,
    ) -> None:
        super().__init__()
        if kernel_size != 3 or padding not in (None, 1):
            raise ValueError(f"RepConv needs kernel_size=3 and padding 1 (got {kernel_size}, {padding})")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.act = make_activation(activation)
        if inference_mode:
            self.rbr_reparam = nn.Conv2d(in_channels, out_channels, 3, stride, 1, groups=groups, bias=True)
            return
        has_identity = in_channels == out_channels and stride == 1
        self.rbr_identity = batch_norm(in_channels) if has_identity else None
        self.rbr_dense = _conv_bn(in_channels, out_channels, 3, stride, 1, groups)
        self.rbr_1x1 = _conv_bn(in_channels, out_channels, 1, stride, 0, groups)

    @property
    def is_reparameterized(self) -> bool:
        return "rbr_reparam" in self._modules

    def forward(self, x: Tensor) -> Tensor:
        if self.is_reparameterized:
            return self.act(self.rbr_reparam(x))
        out = self.rbr_dense(x) + self.rbr_1x1(x)
        if self.rbr_identity is not None:
            out = out + self.rbr_identity(x)
        return self.act(out)

    def _get_kernel_bias(self) -> tuple[Tensor, Tensor]:
        kernel, bias = conv_bn_kernel_bias(self.rbr_dense[0], self.rbr_dense[1])
        kernel_1x1, bias_1x1 = conv_bn_kernel_bias(self.rbr_1x1[0], self.rbr_1x1[1])
        kernel, bias = kernel + pad_kernel(kernel_1x1, kernel.shape[-1]), bias + bias_1x1
        if self.rbr_identity is not None:
            kernel_id, bias_id = identity_bn_kernel_bias(self.rbr_identity, self.groups, kernel.shape[-1], kernel)
            kernel, bias = kernel + kernel_id, bias + bias_id
        return kernel, bias

    def reparameterize(self) -> None:
        """Merge the branches into ``rbr_reparam`` (no-op when already merged)."""
        if self.is_reparameterized:
            return
        kernel, bias = self._get_kernel_bias()
        self.rbr_reparam = fused_conv(self.rbr_dense[0], kernel, bias)
        for name in ("rbr_identity", "rbr_dense", "rbr_1x1"):
            delattr(self, name)


def _conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int, groups: int):
    """``Sequential(Conv2d, BatchNorm2d)``: the official RepConv branch (keys ``0.weight``, ``1.*``)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=False),
        batch_norm(out_channels),
    )


class MP(nn.Module):
    """Max-pool downsampling by ``kernel_size`` (kernel = stride)."""

    def __init__(self, kernel_size: int = 2) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=kernel_size, stride=kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


class SP(nn.Module):
    """Same-size max pool (the SPP branches of YOLOv7-tiny)."""

    def __init__(self, kernel_size: int = 3, stride: int = 1) -> None:
        super().__init__()
        self.m = nn.MaxPool2d(kernel_size=kernel_size, stride=stride, padding=kernel_size // 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.m(x)


class ReOrg(nn.Module):
    """Space-to-depth (B, C, H, W) -> (B, 4C, H/2, W/2), the P6 models' stem; channel blocks are the pixels
    (even row, even col), (odd row, even col), (even row, odd col), (odd row, odd col)."""

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)


class Concat(nn.Module):
    """Concatenate a list of maps along ``dimension``."""

    def __init__(self, dimension: int = 1) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        return torch.cat(list(x), self.d)


class Shortcut(nn.Module):
    """Sum of two maps (the E-ELAN merge of YOLOv7-E6E); ``dimension`` is unused, kept for the layer tables."""

    def __init__(self, dimension: int = 0) -> None:
        super().__init__()
        self.d = dimension

    def forward(self, x: Sequence[Tensor]) -> Tensor:
        return x[0] + x[1]


class DownC(nn.Module):
    """Downsampling by ``kernel_size``: concat(conv3x3/s(conv1x1(x)), conv1x1(maxpool(x))), half the output
    channels each. Its convs always use SiLU, as in the official code.

    Args:
        in_channels: input channels (also the hidden width).
        out_channels: output channels (even).
        repeats: unused (the layer tables pass a depth to every CSP-like module).
        kernel_size: stride of the conv and size/stride of the pool.
    """

    def __init__(self, in_channels: int, out_channels: int, repeats: int = 1, kernel_size: int = 2) -> None:
        super().__init__()
        self.cv1 = Conv(in_channels, in_channels, 1, 1)
        self.cv2 = Conv(in_channels, out_channels // 2, 3, kernel_size)
        self.cv3 = Conv(in_channels, out_channels // 2, 1, 1)
        self.mp = nn.MaxPool2d(kernel_size=kernel_size, stride=kernel_size)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat((self.cv2(self.cv1(x)), self.cv3(self.mp(x))), dim=1)


class SPPCSPC(nn.Module):
    """Spatial pyramid pooling in a CSP block (YOLOv7 always uses SiLU here, as in the official code).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        repeats, shortcut, groups: unused (official signature).
        expansion: hidden channels = ``2 * out_channels * expansion``.
        pool_sizes: the parallel max-pool kernel sizes.
        activation: activation name of every conv.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        repeats: int = 1,
        shortcut: bool = False,
        groups: int = 1,
        expansion: float = 0.5,
        pool_sizes: Sequence[int] = (5, 9, 13),
        activation: str | None = DEFAULT_ACTIVATION,
    ) -> None:
        super().__init__()
        hidden = int(2 * out_channels * expansion)
        act = {"activation": activation}
        self.cv1 = Conv(in_channels, hidden, 1, 1, **act)
        self.cv2 = Conv(in_channels, hidden, 1, 1, **act)
        self.cv3 = Conv(hidden, hidden, 3, 1, **act)
        self.cv4 = Conv(hidden, hidden, 1, 1, **act)
        self.m = nn.ModuleList(nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2) for k in pool_sizes)
        self.cv5 = Conv(4 * hidden, hidden, 1, 1, **act)
        self.cv6 = Conv(hidden, hidden, 3, 1, **act)
        self.cv7 = Conv(2 * hidden, out_channels, 1, 1, **act)

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.cv4(self.cv3(self.cv1(x)))
        y1 = self.cv6(self.cv5(torch.cat([x1] + [pool(x1) for pool in self.m], 1)))
        return self.cv7(torch.cat((y1, self.cv2(x)), dim=1))


class ImplicitA(nn.Module):
    """YOLOR additive implicit knowledge: ``x + implicit`` (one learned value per channel)."""

    def __init__(self, channels: int, mean: float = 0.0, std: float = 0.02) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: Tensor) -> Tensor:
        return self.implicit + x


class ImplicitM(nn.Module):
    """YOLOR multiplicative implicit knowledge: ``x * implicit`` (one learned value per channel)."""

    def __init__(self, channels: int, mean: float = 1.0, std: float = 0.02) -> None:
        super().__init__()
        self.implicit = nn.Parameter(torch.empty(1, channels, 1, 1))
        nn.init.normal_(self.implicit, mean=mean, std=std)

    def forward(self, x: Tensor) -> Tensor:
        return self.implicit * x


class Detect(nn.Module):
    """Anchor-based YOLO head (the deploy form): one 1x1 conv ``m[i]`` per level, ``A * (5 + C)`` channels.

    Buffers (official layout): ``anchors`` (levels, A, 2) in grid units, ``anchor_grid`` (levels, 1, A, 1, 1, 2)
    in pixels. Decoding per anchor: centre = (2 sigmoid(t_xy) - 0.5 + cell) * stride, size =
    (2 sigmoid(t_wh))^2 * anchor, objectness and class probabilities = sigmoid.

    Args:
        in_channels: channels of each input map (lead levels; for :class:`IAuxDetect` then the auxiliary ones).
        num_classes: number of classes C.
        anchors: per level the anchor (w, h) pairs in pixels, flattened.
        strides: stride of each level in input pixels.

    Forward: eval -> (B, N, 4 + C) predictions, boxes xyxy in input pixels then objectness x class probability,
    N ordered level, anchor, row, column; training -> the raw per-level maps of :meth:`forward_train`.
    """

    _implicit = False
    _auxiliary = False

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int = 80,
        anchors: Sequence[Sequence[float]] = (),
        strides: Sequence[float] = (8, 16, 32),
    ) -> None:
        super().__init__()
        levels = len(anchors)
        if levels == 0 or len(strides) != levels or len(in_channels) != levels * (2 if self._auxiliary else 1):
            raise ValueError(
                f"{type(self).__name__}: {len(in_channels)} inputs, {levels} anchor levels and {len(strides)} "
                "strides do not match"
            )
        self.num_classes, self.num_outputs = num_classes, num_classes + 5
        self.num_levels, self.num_anchors = levels, len(anchors[0]) // 2
        self.strides = tuple(float(s) for s in strides)
        pixels = torch.tensor(anchors, dtype=torch.float32).view(levels, -1, 2)
        self.register_buffer("anchors", pixels / torch.tensor(self.strides).view(-1, 1, 1))
        self.register_buffer("anchor_grid", pixels.clone().view(levels, 1, -1, 1, 1, 2))
        channels = self.num_anchors * self.num_outputs
        self.m = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels[:levels])
        if self._auxiliary:
            self.m2 = nn.ModuleList(nn.Conv2d(c, channels, 1) for c in in_channels[levels:])
        if self._implicit:
            self.ia = nn.ModuleList(ImplicitA(c) for c in in_channels[:levels])
            self.im = nn.ModuleList(ImplicitM(channels) for _ in range(levels))
        self.initialize_biases_()

    @torch.no_grad()
    def initialize_biases_(self) -> None:
        """Official prior init of the output biases: objectness ~8 objects per 640 image, classes ~0.6 / C."""
        for name in ("m", "m2"):
            for output, stride in zip(getattr(self, name, ()), self.strides):
                bias = output.bias.view(self.num_anchors, -1)
                bias[:, 4] += math.log(8 / (640 / stride) ** 2)
                bias[:, 5:] += math.log(0.6 / (self.num_classes - 0.99))

    def _level_logits(self, index: int, x: Tensor) -> Tensor:
        return self.m[index](x)

    def _to_anchor_maps(self, x: Tensor) -> Tensor:
        """(B, A * (5 + C), H, W) -> (B, A, H, W, 5 + C)."""
        height, width = static_size(x)
        x = x.view(batch_dim(x), self.num_anchors, self.num_outputs, height, width)
        return x.permute(0, 1, 3, 4, 2).contiguous()

    def forward_raw(self, features: Sequence[Tensor]) -> list[Tensor]:
        """Per lead level the pre-sigmoid outputs (B, A, H, W, 5 + C): t_x, t_y, t_w, t_h, objectness, classes."""
        return [self._to_anchor_maps(self._level_logits(i, x)) for i, x in enumerate(features[: self.num_levels])]

    def forward_train(self, features: Sequence[Tensor]) -> list[Tensor]:
        """The official training output: :meth:`forward_raw` maps (for :class:`IAuxDetect` then the auxiliary ones)."""
        return self.forward_raw(features)

    def decode(self, raw: Sequence[Tensor]) -> Tensor:
        """(B, N, 4 + C) predictions (xyxy pixels, objectness x class probability) from :meth:`forward_raw`."""
        predictions = []
        for index, level in enumerate(raw):
            height, width = int(level.shape[2]), int(level.shape[3])  # plain ints, see ``static_size``
            points, _ = make_anchor_points([(height, width)], [1], offset=0.0, dtype=level.dtype, device=level.device)
            grid = points.view(1, 1, height, width, 2)
            y = level.sigmoid()
            centre = (y[..., 0:2] * 2.0 - 0.5 + grid) * self.strides[index]
            size = (y[..., 2:4] * 2) ** 2 * self.anchor_grid[index]
            scores = y[..., 5:] * y[..., 4:5]
            boxes = torch.cat((centre - size / 2, centre + size / 2, scores), -1)
            predictions.append(boxes.reshape(batch_dim(boxes), self.num_anchors * height * width, 4 + self.num_classes))
        return torch.cat(predictions, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor | list[Tensor]:
        if self.training:
            return self.forward_train(features)
        return self.decode(self.forward_raw(features))


class IDetect(Detect):
    """:class:`Detect` with YOLOR implicit knowledge around each output conv: ``im[i](m[i](ia[i](x)))``.

    The deploy conversion folds ``ia``/``im`` into ``m`` (:func:`yolodeploy.core.fuse.fold_implicit`).
    """

    _implicit = True

    def _level_logits(self, index: int, x: Tensor) -> Tensor:
        return self.im[index](self.m[index](self.ia[index](x)))


class IAuxDetect(IDetect):
    """:class:`IDetect` lead head plus the auxiliary (coarse-to-fine label assignment) head ``m2`` of the P6
    models. Inputs: the lead levels, then as many auxiliary levels. Eval output: the lead head only; training:
    the lead maps followed by the auxiliary maps (plain ``m2`` convs, no implicit knowledge)."""

    _auxiliary = True

    def forward_train(self, features: Sequence[Tensor]) -> list[Tensor]:
        auxiliary = [self._to_anchor_maps(m2(x)) for m2, x in zip(self.m2, features[self.num_levels :])]
        return self.forward_raw(features) + auxiliary
