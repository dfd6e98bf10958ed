"""The YOLOv6 efficient decoupled head (anchor-free), with its two training variants.

Layout and names follow the official ``effidehead.Detect`` (github.com/meituan/YOLOv6, commit e86a483):
per level a 1x1 ``stems`` conv, then separate 3x3 ``cls_convs`` / ``reg_convs`` and 1x1 ``cls_preds`` /
``reg_preds``. Variants (one class, selected by ``variant``):

* ``"default"``: ``reg_preds`` emits 4 * (reg_max + 1) channels: l, t, r, b distances (reg_max 0) or, with
  DFL, 17 bin logits per side (side-major), reduced to a distance by softmax and the fixed ``proj_conv``.
* ``"fuse_ab"``: adds the anchor-based training branch ``cls_preds_ab`` / ``reg_preds_ab`` (3 anchors
  per cell); inference uses the anchor-free branch only.
* ``"distill_ns"``: adds ``reg_preds_dist`` (the DFL branch, used by the self-distillation loss in
  training); ``reg_preds`` regresses the 4 distances directly and alone is used at inference.

The official head always carries ``proj`` (17,) and ``proj_conv`` (1, 17, 1, 1), constants 0..16, even without
DFL; so does this one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .boxes import decode_ltrb_channels, make_anchor_points
from .layers import ConvBNSiLU
from .shapes import batch_dim, flatten_spatial, static_size

__all__ = ["EffiDeHead", "HEAD_VARIANTS", "DFL_BINS"]

HEAD_VARIANTS = ("default", "fuse_ab", "distill_ns")
DFL_BINS = 17  # the official proj/proj_conv size (reg_max 16), whatever the config's reg_max
_PRIOR_PROB = 1e-2


class EffiDeHead(nn.Module):
    """Efficient decoupled head.

    Args:
        in_channels: channels of each input level (also the stem/conv widths).
        num_classes: number of classes.
        strides: stride of each level in input pixels.
        use_dfl: decode boxes with distribution focal loss bins (``reg_max`` must then be 16).
        reg_max: the regression branch emits ``4 * (reg_max + 1)`` channels.
        variant: one of ``HEAD_VARIANTS``.
        anchors_init: ``fuse_ab`` only: per level, anchor (w, h) pairs in pixels, flattened.

    Forward (eval): (B, N, 4 + C) with xyxy boxes in input pixels then sigmoid scores, N ordered level, row,
    column. Forward (train): see :meth:`forward_train`. Raw per-level maps: :meth:`forward_raw`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        num_classes: int,
        strides: Sequence[int],
        use_dfl: bool = False,
        reg_max: int = 0,
        variant: str = "default",
        anchors_init: Sequence[Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        _check_head_args(in_channels, strides, use_dfl, reg_max, variant, anchors_init)
        self.num_classes, self.strides = num_classes, tuple(strides)
        self.use_dfl, self.reg_max, self.variant = use_dfl, reg_max, variant
        self.proj = nn.Parameter(torch.linspace(0, DFL_BINS - 1, DFL_BINS), requires_grad=False)
        self.proj_conv = nn.Conv2d(DFL_BINS, 1, 1, bias=False)
        self.proj_conv.weight = nn.Parameter(self.proj.detach().clone().view(1, DFL_BINS, 1, 1), requires_grad=False)
        self.stems = nn.ModuleList(ConvBNSiLU(c, c, 1, 1) for c in in_channels)
        self.cls_convs = nn.ModuleList(ConvBNSiLU(c, c, 3, 1) for c in in_channels)
        self.reg_convs = nn.ModuleList(ConvBNSiLU(c, c, 3, 1) for c in in_channels)
        self.cls_preds = nn.ModuleList(nn.Conv2d(c, num_classes, 1) for c in in_channels)
        distribution_channels = 4 * (reg_max + 1)
        if variant == "distill_ns":
            self.reg_preds_dist = nn.ModuleList(nn.Conv2d(c, distribution_channels, 1) for c in in_channels)
            distribution_channels = 4
        self.reg_preds = nn.ModuleList(nn.Conv2d(c, distribution_channels, 1) for c in in_channels)
        if variant == "fuse_ab":
            anchors = torch.tensor(anchors_init, dtype=torch.float32).view(len(in_channels), -1, 2)
            self.num_anchors = anchors.shape[1]
            level_strides = torch.tensor(self.strides[: len(in_channels)], dtype=torch.float32).view(-1, 1, 1)
            self.register_buffer("anchors", anchors / level_strides, persistent=False)  # grid units
            self.cls_preds_ab = nn.ModuleList(nn.Conv2d(c, num_classes * self.num_anchors, 1) for c in in_channels)
            self.reg_preds_ab = nn.ModuleList(nn.Conv2d(c, 4 * self.num_anchors, 1) for c in in_channels)
        self.initialize_biases_()

    @torch.no_grad()
    def initialize_biases_(self) -> None:
        """Official prediction-conv init: zero weights; class bias at prior 0.01, box bias 1.0."""
        class_bias = -math.log((1 - _PRIOR_PROB) / _PRIOR_PROB)
        for name in ("cls_preds", "cls_preds_ab", "reg_preds", "reg_preds_dist", "reg_preds_ab"):
            for conv in getattr(self, name, ()):
                conv.weight.zero_()
                conv.bias.fill_(class_bias if name.startswith("cls") else 1.0)

    def _level_features(self, index: int, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        stem = self.stems[index](x)
        return stem, self.cls_convs[index](stem), self.reg_convs[index](stem)

    def forward_raw(self, features: Sequence[Tensor]) -> list[tuple[Tensor, Tensor]]:
        """Per level, the pre-activation inference maps ``(class_logits, box_output)``.

        ``class_logits`` is (B, C, H, W) before the sigmoid. ``box_output`` is (B, 4 * (reg_max + 1), H, W): the
        l, t, r, b distances in grid units, or with DFL 17 bin logits per side (side-major) before the
        softmax; for ``distill_ns`` always the 4 distances. :meth:`decode` turns them into predictions.
        """
        raw = []
        for index, x in enumerate(features):
            _, cls_feat, reg_feat = self._level_features(index, x)
            raw.append((self.cls_preds[index](cls_feat), self.reg_preds[index](reg_feat)))
        return raw

    def _distances(self, box_output: Tensor) -> Tensor:
        """(B, 4, H*W) l, t, r, b distances in grid units from one level's box output."""
        (height, width), batch = static_size(box_output), batch_dim(box_output)
        if self.use_dfl and self.variant != "distill_ns":
            logits = box_output.reshape(batch, 4, DFL_BINS, height * width).permute(0, 2, 1, 3)
            return self.proj_conv(F.softmax(logits, dim=1)).reshape(batch, 4, height * width)
        return box_output.reshape(batch, 4, height * width)

    def decode(self, raw: Sequence[tuple[Tensor, Tensor]]) -> Tensor:
        """(B, N, 4 + C) predictions (xyxy pixels, sigmoid scores) from :meth:`forward_raw` outputs."""
        scores = torch.cat([flatten_spatial(cls.sigmoid()) for cls, _ in raw], -1)
        distances = torch.cat([self._distances(box) for _, box in raw], -1)
        sizes = [static_size(cls) for cls, _ in raw]
        points, point_strides = make_anchor_points(
            sizes, list(self.strides[: len(raw)]), dtype=distances.dtype, device=distances.device
        )
        boxes = decode_ltrb_channels(distances, points, point_strides)
        return torch.cat((boxes, scores), 1).permute(0, 2, 1)

    def forward(self, features: Sequence[Tensor]) -> Tensor | tuple:
        """Eval: decoded (B, N, 4 + C) predictions. Train: the raw outputs of :meth:`forward_train`."""
        if self.training:
            return self.forward_train(features)
        return self.decode(self.forward_raw(features))

    def forward_train(self, features: Sequence[Tensor]) -> tuple:
        """The official training-mode outputs the losses consume (flattened maps are (B, N, channels)).

        * ``default``: ``(stem_features, class_scores, box_distribution)``
        * ``distill_ns``: ``(stem_features, class_scores, box_distribution, box_distances)``
        * ``fuse_ab``: ``(stem_features, class_scores_ab, box_ab, class_scores, box_distribution)``; the
          anchor-based maps are ordered level, anchor, row, column, and ``box_ab`` holds x, y offsets and the
          decoded w, h (``(2 * sigmoid) ** 2 * anchor``, grid units).

        Class scores are after the sigmoid; ``box_distribution`` is the raw ``reg_preds`` output.
        """
        stems, outputs = [], {name: [] for name in ("cls", "reg", "dist", "cls_ab", "reg_ab")}
        for index, x in enumerate(features):
            stem, cls_feat, reg_feat = self._level_features(index, x)
            stems.append(stem)
            outputs["cls"].append(_flatten(self.cls_preds[index](cls_feat).sigmoid()))
            outputs["reg"].append(_flatten(self.reg_preds[index](reg_feat)))
            if self.variant == "distill_ns":
                outputs["dist"].append(_flatten(self.reg_preds_dist[index](reg_feat)))
            if self.variant == "fuse_ab":
                cls_ab, reg_ab = self._anchor_based(index, cls_feat, reg_feat)
                outputs["cls_ab"].append(cls_ab)
                outputs["reg_ab"].append(reg_ab)
        merged = {name: torch.cat(maps, 1) for name, maps in outputs.items() if maps}
        if self.variant == "distill_ns":
            return stems, merged["cls"], merged["dist"], merged["reg"]
        if self.variant == "fuse_ab":
            return stems, merged["cls_ab"], merged["reg_ab"], merged["cls"], merged["reg"]
        return stems, merged["cls"], merged["reg"]

    def _anchor_based(self, index: int, cls_feat: Tensor, reg_feat: Tensor) -> tuple[Tensor, Tensor]:
        """Anchor-based branch of one level as (B, A*H*W, C) scores and (B, A*H*W, 4) boxes."""
        batch, _, height, width = cls_feat.shape
        anchors = self.num_anchors
        scores = self.cls_preds_ab[index](cls_feat).sigmoid()
        scores = scores.reshape(batch, anchors, -1, height, width).permute(0, 1, 3, 4, 2).flatten(1, 3)
        boxes = self.reg_preds_ab[index](reg_feat).reshape(batch, anchors, -1, height, width).permute(0, 1, 3, 4, 2)
        sizes = (boxes[..., 2:4].sigmoid() * 2) ** 2 * self.anchors[index].view(1, anchors, 1, 1, 2)
        return scores, torch.cat((boxes[..., :2], sizes), -1).flatten(1, 3)


def _flatten(x: Tensor) -> Tensor:
    """(B, C, H, W) -> (B, H*W, C)."""
    return x.flatten(2).permute(0, 2, 1)


def _check_head_args(in_channels, strides, use_dfl, reg_max, variant, anchors_init) -> None:
    if variant not in HEAD_VARIANTS:
        raise ValueError(f"unknown head variant {variant!r}; expected one of {', '.join(HEAD_VARIANTS)}")
    if len(strides) < len(in_channels):
        raise ValueError(f"{len(in_channels)} head levels but only {len(strides)} strides")
    if use_dfl and reg_max != DFL_BINS - 1:
        raise ValueError(f"use_dfl needs reg_max={DFL_BINS - 1} (the official projection), got reg_max={reg_max}")
    if variant == "fuse_ab" and (anchors_init is None or len(anchors_init) != len(in_channels)):
        raise ValueError("the fuse_ab head needs anchors_init with one (w, h, w, h, ...) entry per level")
    if variant == "distill_ns" and len(in_channels) != 3:
        raise ValueError("the distill_ns head exists for 3-level (P5) models only, as in the official repo")
