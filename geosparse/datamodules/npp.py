"""Data module for Neural Point Processes: imagery & sparse point labels."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torchgeo.datamodules import GeoDataModule

from ..batch import KeepGeoKeys
from ..datasets.coarse import ImageryDataset
from ..datasets.points import SparsePoints, collate_points, spatial_split
from ..errors import InputError
from ..samplers import PointGeoSampler

__all__ = ['NPPDataModule']


class NPPDataModule(KeepGeoKeys, GeoDataModule):
    """Imagery intersected with point labels, split by spatial blocks.

    * points are split into train, validation and test by blocks of ``block_size``
      (CRS units) with :func:`~geosparse.datasets.spatial_split`, so held-out points
      are not next to training points;
    * every window (:class:`~geosparse.samplers.PointGeoSampler`) contains points of
      its split; batches carry ``points``, ``values`` and ``valid``
      (:func:`~geosparse.datasets.collate_points`) and keep ``crs`` and ``bounds``;
    * imagery is passed raw: :class:`~geosparse.trainers.NPPTask` normalises it.

    Validation and test windows are drawn around their points with a fixed seed; a
    point that falls in several windows is scored in each.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        image_paths: str | Sequence[str],
        points_path: str,
        value: str,
        image_glob: str = '*.tif',
        x: str | None = None,
        y: str | None = None,
        points_crs: str | None = None,
        patch_size: int = 64,
        batch_size: int = 8,
        length: int | None = 200,
        split: Sequence[float] = (0.8, 0.1, 0.1),
        block_size: float | None = None,
        eval_windows: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        """Describe the data.

        Args:
            image_paths: imagery files or folders.
            points_path: points file (GPKG, GeoJSON, GeoParquet, shapefile, CSV).
            value: column of the labels.
            image_glob: imagery file pattern.
            x: CSV x / longitude column.
            y: CSV y / latitude column.
            points_crs: CRS of CSV coordinates (default EPSG:4326).
            patch_size: window size in pixels.
            batch_size: windows per batch.
            length: training windows per epoch.
            split: fractions of points for train, validation and test.
            block_size: side of the split's blocks in CRS units (default: two
                windows).
            eval_windows: validation and test windows.
            seed: seed of the split and the samplers.
            num_workers: data loader workers.
        """
        super().__init__(ImageryDataset, batch_size, patch_size, length, num_workers)
        self.save_hyperparameters()
        self.collate_fn = collate_points
        self.aug = None  # type: ignore[assignment]  # the task normalises inputs

    def setup(self, stage: str) -> None:
        """Split the points and build the samplers.

        Raises:
            ValueError: if a split is empty (the message names the parameters).
        """
        hp = self.hparams
        image = ImageryDataset(hp['image_paths'], glob=hp['image_glob'])
        everything = SparsePoints(
            hp['points_path'],
            hp['value'],
            crs=image.crs,
            res=image.res,
            x=hp['x'],
            y=hp['y'],
            points_crs=hp['points_crs'],
        )
        xy = everything.xy()
        x, y, _ = image.bounds
        inside = (
            (xy[:, 0] >= x.start)
            & (xy[:, 0] <= x.stop)
            & (xy[:, 1] >= y.start)
            & (xy[:, 1] <= y.stop)
        )
        if not inside.any():
            raise InputError(
                f'{hp["points_path"]}: none of its {len(xy)} points lies on the imagery '
                f'{hp["image_paths"]} (check points_crs for a CSV, and that they overlap).'
            )
        if not inside.all():
            warnings.warn(
                f'{hp["points_path"]}: {int((~inside).sum())} of {len(xy)} points lie '
                'outside the imagery and are never sampled.',
                stacklevel=2,
            )
        size = (
            self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0]
        )
        block = hp['block_size'] or 2 * size * image.res[0]
        parts = spatial_split(everything.xy(), hp['split'], block, hp['seed'])
        #: Point indices (rows of the points file with finite values) per split.
        self.split_indices = parts
        names = ('train', 'validation', 'test')
        for name, idx, frac in zip(names, parts, hp['split'], strict=False):
            if frac > 0 and len(idx) == 0:
                raise ValueError(
                    f'{hp["points_path"]}: no {name} points after the spatial split '
                    f'(split={list(hp["split"])}, block_size={block}); use smaller '
                    'blocks or more points.'
                )
        samplers: list[tuple[Any, Any]] = []
        for i, idx in enumerate(parts):
            if len(idx) == 0:
                samplers.append((None, None))
                continue
            points = everything.select(idx)  # the file is read once
            data = image & points
            gen = torch.Generator().manual_seed(hp['seed'] + i)
            n = (hp['length'] or 200) if i == 0 else hp['eval_windows']
            grid = (float(x.start), float(y.stop))  # the imagery's top-left corner
            samplers.append(
                (
                    data,
                    PointGeoSampler(data, points, self.patch_size, n, gen, origin=grid),
                )
            )
        (self.train_dataset, self.train_sampler) = samplers[0]
        (self.val_dataset, self.val_sampler) = (
            samplers[1] if len(samplers) > 1 else (None, None)
        )
        (self.test_dataset, self.test_sampler) = (
            samplers[2] if len(samplers) > 2 else (None, None)
        )
        self.train_batch_sampler = None

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Return the batch unchanged.

        No augmentation (as ever for NPP); a points-aware one exists,
        :class:`~geosparse.transforms.RandomFlipWithPoints` (kornia moves only
        ``image`` and ``mask`` keys, not points).
        """
        return batch
