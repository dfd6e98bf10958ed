"""The one model-level re-parameterization pass."""

from __future__ import annotations

import copy

from torch import nn

__all__ = ["reparameterize_model"]


def reparameterize_model(model: nn.Module, inplace: bool = False) -> nn.Module:
    """Convert a model to its deploy form by calling ``reparameterize()`` on every block that has one.

    Blocks are visited parents first: a block fuses its own branches (which it reads unfused), then the
    pass descends into whatever children the fused block still has. Every block's ``reparameterize`` is
    idempotent, so the pass is too. A model may define ``reparameterize()`` itself for structural steps
    (e.g. dropping an auxiliary head); it runs first.

    Example:
        >>> deploy = reparameterize_model(create_model("yolov6n").eval())
    """
    if not inplace:
        model = copy.deepcopy(model)
    _reparameterize_tree(model)
    if hasattr(model, "form"):
        model.form = "deploy"
    return model


def _reparameterize_tree(module: nn.Module) -> None:
    reparameterize = getattr(module, "reparameterize", None)
    if callable(reparameterize):
        reparameterize()
    for child in list(module.children()):
        _reparameterize_tree(child)
