"""Augmentations that move every spatial key of a sample together.

Kornia's augmentation containers only move ``image*`` and ``mask*`` keys; coarse
labels and block ids must move with them, so geosparse applies its own dihedral
(flip and 90-degree rotation) augmentation to every tensor whose last two
dimensions match the image's.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ['RandomDihedral']


class RandomDihedral(nn.Module):
    """Random element of the dihedral group D4, one per sample, on all spatial keys."""

    def __init__(self, keys: tuple[str, ...] = ('image', 'mask', 'coarse', 'block')):
        """Choose the keys to transform (missing keys are skipped)."""
        super().__init__()
        self.keys = keys

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Transform the batch in place and return it.

        The batch's ``transform`` still describes the un-augmented window.
        """
        image = batch['image']
        b = image.shape[0]
        ops = torch.randint(0, 8, (b,)).tolist()
        for key in self.keys:
            value = batch.get(key)
            if not isinstance(value, torch.Tensor) or value.shape[0] != b:
                continue
            if value.shape[-2:] != image.shape[-2:]:
                continue
            out = []
            for i, op in enumerate(ops):
                v = value[i]
                if op & 4:
                    v = v.flip(-1)
                k = op & 3 if v.shape[-1] == v.shape[-2] else op & 2
                v = torch.rot90(v, k, dims=(-2, -1))
                out.append(v)
            batch[key] = torch.stack(out)
        return batch
