"""Weight randomization that makes equivalence checks meaningful on untrained models.

A freshly initialised detector has BatchNorms with identity statistics and zero-initialised prediction
convs: its outputs are nearly constant, so a broken fusion could still compare equal. These helpers give a
model the kind of statistics a trained one has (the same recipe the reference fixtures used).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["randomize_bn_", "randomize_constants_", "randomize_for_verification_"]


def randomize_bn_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every BatchNorm2d random running stats (mean ~ N(0, 0.1^2), var ~ U(0.5, 1.5)) and affine
    params (weight ~ U(0.5, 1.5), bias ~ N(0, 0.1^2)), module by module in ``modules()`` order."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                if module.weight is not None:
                    module.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                    module.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return model


def randomize_constants_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Re-draw every trainable parameter whose elements are all equal (zero-initialised prediction convs,
    residual ``alpha``, scale layers...): one element ~ U(0.5, 1.5), else N(0, 0.1^2)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad and param.numel() and bool((param == param.flatten()[0]).all()):
                if param.numel() == 1:
                    param.copy_(torch.rand(param.shape, generator=gen) + 0.5)
                else:
                    param.copy_(torch.randn(param.shape, generator=gen) * 0.1)
    return model


def randomize_for_verification_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Both of the above: an untrained model whose outputs carry signal through every branch."""
    return randomize_constants_(randomize_bn_(model, seed), seed)
