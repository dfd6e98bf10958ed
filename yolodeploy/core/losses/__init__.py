"""Detection losses as pure functions: the IoU family, VariFocal and Distribution Focal Loss."""

from yolodeploy.core.losses.classification import varifocal_loss
from yolodeploy.core.losses.dfl import bbox_to_distance, distribution_focal_loss
from yolodeploy.core.losses.iou import IoUKind, Reduction, bbox_iou, box_iou, iou_loss

__all__ = [
    "IoUKind",
    "Reduction",
    "bbox_iou",
    "bbox_to_distance",
    "box_iou",
    "distribution_focal_loss",
    "iou_loss",
    "varifocal_loss",
]
