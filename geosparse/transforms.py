r"""Augmentations that move every spatial key of a batch together.

Kornia's augmentation containers only move ``image*`` and ``mask*`` keys; coarse
labels, block ids, points and Gaussian covariances must move with them, so geosparse
has its own:

- :class:`RandomDihedral` (label super-resolution): flips and 90-degree rotations of
  every tensor whose last two dimensions match the image's;
- :class:`RandomFlipWithPoints` (counting): horizontal and vertical flips of the
  images, the points ``(row, col)`` and each point's covariance
  (:func:`flip_batch`);
- :class:`RandomRadiometry` (label super-resolution): a random tone curve per band
  and sample, so that a model trained on one acquisition meets others;
- :class:`RandomFlipWithBoxes` (instance segmentation): horizontal and vertical
  flips of the images, the instance maps, and each window's list of object masks
  and pixel-edge boxes (TorchGeo's ``mask`` and ``bbox_xyxy``).

All are a data module's ``train_aug``, applied to training batches only in
``on_after_batch_transfer``, the TorchGeo way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    'RandomDihedral',
    'RandomFlipWithBoxes',
    'RandomFlipWithPoints',
    'RandomRadiometry',
    'flip_batch',
]


class RandomDihedral(nn.Module):
    """Random element of the dihedral group D4, one per sample, on all spatial keys.

    .. versionadded:: 0.1
    """

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


class RandomRadiometry(nn.Module):
    r"""A random tone curve per band and sample, on the raw ``image`` of a batch.

    Two acquisitions of the same ground differ band by band in gain, offset and
    tone curve (sensor, sun, season, the vendor's colour balancing). With
    :math:`s` the full scale of the raw values (255 for 8-bit NAIP), each band
    :math:`b` of each sample becomes

    .. math::
        x'_b = s\,\operatorname{clip}\bigl(g_b\,(x_b/s)^{\gamma_b} + o_b,\ 0,\ 1\bigr),
        \qquad \log g_b,\ \log\gamma_b \sim \mathcal{U}(-r, r),\quad
        o_b \sim \mathcal{U}(-r/4, r/4),

    drawn independently per band, so the relation between bands changes too (as
    between sensors), not only the brightness. ``strength`` is :math:`r`; 0 is the
    identity. NaN (nodata) stays NaN. It acts on raw values, before the task's own
    normalisation, so it composes with any ``standardize`` setting.

    .. versionadded:: 0.1
    """

    def __init__(self, strength: float = 0.2, scale: float = 255.0) -> None:
        """Set the range of the random changes.

        Args:
            strength: :math:`r`, the largest change of log gain and log gamma.
            scale: full scale :math:`s` of the raw values.

        Raises:
            ValueError: if ``strength`` is negative or ``scale`` not positive.
        """
        super().__init__()
        if strength < 0 or scale <= 0:
            raise ValueError(
                f'RandomRadiometry(strength={strength}, scale={scale}): strength '
                'must be ≥ 0 (0: off) and scale > 0 (255 for 8-bit imagery).'
            )
        self.strength = float(strength)
        self.scale = float(scale)

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Change ``batch['image']`` (float) and return the batch."""
        image = batch['image']
        if self.strength == 0:
            return batch
        b, c = image.shape[:2]
        r = self.strength

        def draw(low: float, high: float) -> Tensor:
            u = torch.rand(b, c, 1, 1, device=image.device)
            return low + (high - low) * u

        gain, gamma = draw(-r, r).exp(), draw(-r, r).exp()
        offset = draw(-r / 4, r / 4)
        x = (image.float() / self.scale).clamp(min=0)
        x = (gain * x.pow(gamma) + offset).clamp(0, 1) * self.scale
        batch['image'] = x
        return batch


def flip_batch(
    batch: dict[str, Any],
    horizontal: Tensor,
    vertical: Tensor,
    keys: Sequence[str] = ('image', 'mask'),
) -> None:
    r"""Flip images, points and covariances of a batch in place, per sample.

    Points are continuous pixel coordinates :math:`(r, c)` of the window (pixel
    :math:`k` spans :math:`[k, k + 1)`, its centre is :math:`k + 0.5`). Mirroring an
    axis of :math:`L` pixels maps the coordinate :math:`u \to L - u`, which takes the
    pixel :math:`k` under a point to :math:`L - 1 - k`, where the image's flip puts
    that pixel; the covariance :math:`\Sigma` becomes :math:`F \Sigma F` with
    :math:`F = \mathrm{diag}(\pm 1, \pm 1)`, i.e. :math:`\Sigma_{rc} \to
    -\Sigma_{rc}` per mirrored axis, :math:`\Sigma_{rr}` and :math:`\Sigma_{cc}`
    unchanged. Padded points (``valid`` false) are moved too and stay padding.

    .. versionadded:: 0.1

    Args:
        batch: with ``image`` ``(B, C, H, W)`` and optionally other image-shaped
            ``keys``, ``points`` ``(B, N, 2)`` and ``covariances`` ``(B, N, 3)``
            (:math:`\Sigma_{rr}, \Sigma_{rc}, \Sigma_{cc}` in pixels²).
        horizontal: ``(B,)`` bool, mirror left-right (:math:`c \to W - c`).
        vertical: ``(B,)`` bool, mirror top-bottom (:math:`r \to H - r`).
        keys: image-shaped keys to flip (missing ones are skipped).
    """
    h, w = batch['image'].shape[-2:]
    points = batch.get('points')
    covs = batch.get('covariances')
    for flag, axis, size, dim in ((horizontal, 1, w, -1), (vertical, 0, h, -2)):
        idx = torch.nonzero(flag).flatten()
        if len(idx) == 0:
            continue
        for key in keys:
            value = batch.get(key)
            if isinstance(value, Tensor):
                value[idx] = value[idx].flip(dim)
        if points is not None:
            points[idx, :, axis] = size - points[idx, :, axis]
        if covs is not None:
            covs[idx, :, 1] = -covs[idx, :, 1]


class RandomFlipWithPoints(nn.Module):
    r"""Random horizontal and vertical flips of images, points and covariances.

    Each sample is mirrored left-right with probability ``p`` and, independently,
    top-bottom with probability ``p`` (:func:`flip_batch`: :math:`c \to W - c`,
    :math:`r \to H - r`, :math:`\Sigma_{rc} \to -\Sigma_{rc}` per flip).

    Why not kornia: ``AugmentationSequential(..., data_keys=[..., 'keypoints'])``
    moves keypoints ``(x, y)`` by :math:`x \to W - 1 - x`, the convention of points
    at integer pixel centres; geosparse's points have their centres at
    :math:`k + 0.5`, so kornia would put every point one pixel off its object, and
    it has no notion of a point's covariance.

    .. versionadded:: 0.1
    """

    def __init__(self, p: float = 0.5, keys: tuple[str, ...] = ('image', 'mask')):
        """Choose the flip probability and the image-shaped keys to flip.

        Args:
            p: probability of each of the two flips, per sample.
            keys: image-shaped keys flipped with the points (missing ones skipped).
        """
        super().__init__()
        self.p = p
        self.keys = keys

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Flip a batch and return it; its tensors are copied, not changed in place.

        The batch's ``transform`` and ``bounds`` still describe the un-augmented
        window; ``valid`` and ``labelled`` are unchanged (points keep their order).
        """
        b = batch['image'].shape[0]
        horizontal = torch.rand(b) < self.p
        vertical = torch.rand(b) < self.p
        for key in (*self.keys, 'points', 'covariances'):
            value = batch.get(key)
            if isinstance(value, Tensor):
                batch[key] = value.clone()
        flip_batch(batch, horizontal, vertical, self.keys)
        return batch


class RandomFlipWithBoxes(nn.Module):
    r"""Random horizontal and vertical flips of images, object masks and boxes.

    Each window is mirrored left-right with probability ``p`` and, independently,
    top-bottom with probability ``p``: its image-shaped ``keys`` (:func:`flip_batch`),
    each of its object masks (``mask``, a list of ``(N_b, H, W)`` tensors) and its
    pixel-edge boxes (``bbox_xyxy``, a list of ``(N_b, 4)`` tensors ``(x_0, y_0,
    x_1, y_1)``): :math:`(x_0, x_1) \to (W - x_1, W - x_0)` left-right,
    :math:`(y_0, y_1) \to (H - y_1, H - y_0)` top-bottom, which is exact for boxes
    on pixel edges (:func:`~geosparse.datasets.pseudo.instance_targets`).

    .. versionadded:: 0.1
    """

    def __init__(self, p: float = 0.5, keys: tuple[str, ...] = ('image', 'instances')):
        """Choose the flip probability and the stacked image-shaped keys.

        Args:
            p: probability of each of the two flips, per window.
            keys: stacked ``(B, ..., H, W)`` keys flipped (missing ones skipped).
        """
        super().__init__()
        self.p = p
        self.keys = keys

    def forward(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Flip a batch and return it; its tensors are copied, not changed in place."""
        b = batch['image'].shape[0]
        h, w = batch['image'].shape[-2:]
        horizontal = torch.rand(b) < self.p
        vertical = torch.rand(b) < self.p
        for key in self.keys:
            value = batch.get(key)
            if isinstance(value, Tensor):
                batch[key] = value.clone()
        flip_batch(batch, horizontal, vertical, self.keys)
        masks = batch.get('mask')
        boxes = batch.get('bbox_xyxy')
        if isinstance(masks, list):
            batch['mask'] = [
                m.flip(-1) if bool(horizontal[i]) else m for i, m in enumerate(masks)
            ]
            batch['mask'] = [
                m.flip(-2) if bool(vertical[i]) else m
                for i, m in enumerate(batch['mask'])
            ]
        if isinstance(boxes, list):
            out = []
            for i, box in enumerate(boxes):
                box = box.clone()
                if bool(horizontal[i]):
                    box[:, [0, 2]] = w - box[:, [2, 0]]
                if bool(vertical[i]):
                    box[:, [1, 3]] = h - box[:, [3, 1]]
                out.append(box)
            batch['bbox_xyxy'] = out
        return batch
