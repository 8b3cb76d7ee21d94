"""Batching that keeps every sample's georeference.

:func:`collate_geo` stacks samples and sets ``transform``, a ``(B, 6)`` float64
tensor of the affine coefficients ``(a, b, c, d, e, f)`` of each window, whatever the
TorchGeo release (see :mod:`geosparse.compat`). With TorchGeo 0.8.1, ``crs`` and
``bounds`` are lists that :class:`~torchgeo.datamodules.GeoDataModule` deletes before
moving a batch to the device; :class:`KeepGeoKeys` carries them along. With 0.10 they
are tensors (``crs`` is the dataset's) and move like the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from affine import Affine
from lightning.pytorch import LightningDataModule
from torch import Tensor
from torchgeo.datasets import stack_samples

from .compat import GEO_KEYS, window_bounds

__all__ = [
    'GEO_KEYS',
    'KeepGeoKeys',
    'collate_geo',
    'move_batch',
    'transform_from_bounds',
]


def transform_from_bounds(bounds: Any, shape: tuple[int, int]) -> Affine:
    """Affine transform of a window.

    .. versionadded:: 0.1

    Args:
        bounds: a sample's ``bounds`` (see :func:`~geosparse.compat.window_bounds`).
        shape: ``(height, width)`` in pixels.

    Returns:
        ``Affine(xres, 0, xmin, 0, -yres, ymax)``.
    """
    xmin, ymin, xmax, ymax = window_bounds(bounds)
    h, w = shape
    return Affine((xmax - xmin) / w, 0.0, xmin, 0.0, -(ymax - ymin) / h, ymax)


def collate_geo(samples: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Stack samples and add each window's affine ``transform``.

    .. versionadded:: 0.1

    Args:
        samples: samples of a GeoDataset.

    Returns:
        The batch.
    """
    batch = stack_samples(samples)
    if 'bounds' in batch:
        ref = batch.get('image', batch.get('mask'))
        if isinstance(ref, Tensor):
            shape = (int(ref.shape[-2]), int(ref.shape[-1]))
            batch['transform'] = torch.tensor(
                [tuple(transform_from_bounds(b, shape))[:6] for b in batch['bounds']],
                dtype=torch.float64,
            )
    return batch


def move_batch(
    batch: dict[str, Any], move: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Apply a tensor-moving function to a batch but keep :data:`.GEO_KEYS`.

    .. versionadded:: 0.1

    Args:
        batch: the batch.
        move: moves the tensors of a batch (e.g. Lightning's default transfer).

    Returns:
        The moved batch with ``crs`` and ``bounds`` restored.
    """
    kept = {k: batch.pop(k) for k in GEO_KEYS if k in batch}
    moved = move(batch)
    moved.update(kept)
    return moved


class KeepGeoKeys:
    """Data module mixin: batches keep ``crs`` and ``bounds`` on their way to the device.

    TorchGeo's GeoDataModule drops them in ``transfer_batch_to_device``; put this
    class before it in the bases.

    .. versionadded:: 0.1
    """

    def transfer_batch_to_device(
        self, batch: dict[str, Any], device: torch.device, dataloader_idx: int
    ) -> dict[str, Any]:
        """Move tensors, keep ``crs`` and ``bounds``."""

        def move(b: dict[str, Any]) -> dict[str, Any]:
            return LightningDataModule.transfer_batch_to_device(
                self,  # type: ignore[arg-type]
                b,
                device,
                dataloader_idx,
            )

        return move_batch(batch, move)
