"""Data module for label super-resolution: imagery & coarse labels (& fine labels)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import GeoDataset, random_bbox_assignment
from torchgeo.datasets.splits import random_grid_cell_assignment

from ..batch import KeepGeoKeys, collate_geo
from ..datasets.coarse import CoarseLabels, FineLabels, ImageryDataset
from ..errors import InputError, check_counts, check_number
from ..samplers import CoarseBalancedGeoSampler, CoverGeoSampler
from ..transforms import RandomDihedral, RandomRadiometry

__all__ = ['LabelSuperResolutionDataModule']


class LabelSuperResolutionDataModule(KeepGeoKeys, GeoDataModule):
    """Imagery intersected with coarse labels, optional fine labels for evaluation.

    * training windows: :class:`~geosparse.samplers.CoarseBalancedGeoSampler`
      (random windows drawn inversely to coarse-class frequency, ``balance > 0``) or
      TorchGeo's RandomGeoSampler (``balance = 0``), with dihedral augmentation;
    * validation and test: :class:`~geosparse.samplers.CoverGeoSampler` (every pixel
      covered, no overhang);
    * spatial split: whole rasters (``split='files'``) or cells of a grid laid over
      each raster (``split='grid'``); ``auto`` picks files when there are at least
      three rasters;
    * every batch keeps ``crs``, ``bounds`` and a ``(B, 6)`` ``transform``.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        image_paths: str | Sequence[str],
        coarse_paths: str | Sequence[str],
        fine_paths: str | Sequence[str] | None = None,
        image_glob: str = '*.tif',
        coarse_glob: str = '*.tif',
        fine_glob: str = '*.tif',
        coarse_nodata: int | None = 0,
        fine_nodata: int | None = 0,
        coarse_blocks: Literal['grid', 'regions', 'cells'] = 'grid',
        cell_size: float = 30.0,
        patch_size: int = 256,
        batch_size: int = 8,
        length: int | None = 200,
        val_fraction: float = 0.2,
        split: Literal['auto', 'files', 'grid'] = 'auto',
        grid_size: int = 4,
        balance: float = 1.0,
        augment: bool = True,
        radiometric: float = 0.0,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        """Describe the data.

        Args:
            image_paths: imagery files or folders.
            coarse_paths: coarse label files or folders (any CRS and resolution).
            fine_paths: optional fine labels (metrics, ``hr`` losses).
            image_glob: imagery file pattern (e.g. ``*_naip.tif``).
            coarse_glob: coarse file pattern (e.g. ``*_nlcd.tif``).
            fine_glob: fine file pattern (e.g. ``*_lc.tif``).
            coarse_nodata: coarse value meaning "no label".
            fine_nodata: fine value meaning "no label" (the task's
                ``fine_nodata``); NaN in a floating-point fine raster becomes it.
            coarse_blocks: ``grid`` (blocks = coarse pixels), ``regions`` (one block
                per coarse class and window) or ``cells`` (regions cut by a grid of
                ``cell_size``), see :class:`~geosparse.datasets.CoarseLabels`.
            cell_size: block size of ``cells`` in CRS units.
            patch_size: window size in pixels.
            batch_size: samples per batch.
            length: training windows per epoch.
            val_fraction: share of the area held out for validation and test.
            split: ``auto``, ``files`` or ``grid``.
            grid_size: grid cells per side for ``split='grid'``.
            balance: exponent of the inverse-frequency sampling (0 = uniform).
            augment: random flips and rotations in training.
            radiometric: strength of a random tone curve per band and training
                window (:class:`~geosparse.transforms.RandomRadiometry`), for models
                that must work on other acquisitions; 0 (default) is off.
            seed: seed of the split and the samplers.
            num_workers: data loader workers.

        Raises:
            InputError: for a size, count or fraction out of range (e.g.
                ``patch_size=0``, ``val_fraction=1``).
        """
        owner = 'LabelSuperResolutionDataModule'
        check_counts(
            owner,
            patch_size,
            batch_size=batch_size,
            length=length,
            grid_size=grid_size,
        )
        check_number(owner, 'cell_size', cell_size, 0, strict=True)
        check_number(owner, 'balance', balance, 0)
        check_number(owner, 'radiometric', radiometric, 0)
        check_number(owner, 'val_fraction', val_fraction, 0)
        if val_fraction >= 1:
            raise InputError(
                f'{owner}: val_fraction={val_fraction!r} must be below 1 (some area '
                'must be left to train on).'
            )
        super().__init__(ImageryDataset, batch_size, patch_size, length, num_workers)
        self.save_hyperparameters()
        self.collate_fn = collate_geo
        self.aug = None  # type: ignore[assignment]  # the task normalises inputs
        steps: list[nn.Module] = [RandomDihedral()] if augment else []
        if radiometric > 0:
            steps.append(RandomRadiometry(radiometric))
        self.train_aug = nn.Sequential(*steps) if steps else None

    def build_dataset(self) -> tuple[GeoDataset, CoarseLabels]:
        """Intersect imagery, coarse labels and (if given) fine labels."""
        hp = self.hparams
        image = ImageryDataset(hp['image_paths'], glob=hp['image_glob'])
        coarse = CoarseLabels(
            hp['coarse_paths'],
            glob=hp['coarse_glob'],
            nodata=hp['coarse_nodata'],
            blocks=hp['coarse_blocks'],
            cell_size=hp['cell_size'],
        )
        dataset: GeoDataset | None
        try:  # TorchGeo refuses an empty intersection with a RuntimeError
            dataset = image & coarse
            if hp['fine_paths']:
                dataset = dataset & FineLabels(
                    hp['fine_paths'], glob=hp['fine_glob'], nodata=hp['fine_nodata']
                )
        except RuntimeError:
            dataset = None
        if dataset is None or len(dataset) == 0:
            raise InputError(
                f'imagery {hp["image_paths"]} ({hp["image_glob"]}) and coarse labels '
                f'{hp["coarse_paths"]} ({hp["coarse_glob"]}) do not overlap; check '
                'that they cover the same area (CRSs may differ, footprints must not).'
            )
        return dataset, coarse

    def setup(self, stage: str) -> None:
        """Split the area and build the samplers."""
        hp = self.hparams
        dataset, coarse = self.build_dataset()
        gen = torch.Generator().manual_seed(hp['seed'])
        split = hp['split']
        if split == 'auto':
            split = 'files' if len(dataset) >= 3 else 'grid'
        frac = [1 - hp['val_fraction'], hp['val_fraction']]
        if hp['val_fraction'] <= 0:
            train, val = dataset, dataset
        elif split == 'files':
            train, val = random_bbox_assignment(dataset, frac, generator=gen)
        else:
            train, val = random_grid_cell_assignment(
                dataset, frac, grid_size=hp['grid_size'], generator=gen
            )
        self.train_dataset, self.val_dataset, self.test_dataset = train, val, val
        from torchgeo.samplers import RandomGeoSampler

        if not RandomGeoSampler(train, self.patch_size, length=1).bounds:
            raise ValueError(
                f'no training area is at least patch_size={self.patch_size} pixels '
                f'wide after the {split!r} split (grid_size={hp["grid_size"]}); lower '
                'patch_size or grid_size, or give larger rasters.'
            )
        if stage in ('fit', 'train'):
            if hp['balance'] > 0:
                self.train_sampler = CoarseBalancedGeoSampler(
                    train,
                    coarse,
                    self.patch_size,
                    length=hp['length'] or 200,
                    power=hp['balance'],
                    generator=gen,
                )
            else:
                self.train_sampler = RandomGeoSampler(
                    train, self.patch_size, hp['length'], generator=gen
                )
            self.train_batch_sampler = None
        self.val_sampler = CoverGeoSampler(val, self.patch_size)
        self.test_sampler = CoverGeoSampler(val, self.patch_size)

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Augment training batches (all spatial keys move together)."""
        if self.trainer and self.trainer.training and self.train_aug is not None:
            batch = self.train_aug(batch)
        return batch

    def _dataloader_factory(self, split: str) -> DataLoader[dict[str, Any]]:
        dataset = getattr(self, f'{split}_dataset')
        sampler = getattr(self, f'{split}_sampler')
        return DataLoader(
            dataset=dataset,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            drop_last=False,
        )
