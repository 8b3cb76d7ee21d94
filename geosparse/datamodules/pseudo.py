r"""Data module for stage 2 of instances from points: imagery and pseudo masks.

Stage 1 (:class:`~geosparse.trainers.PointInstanceTask`) turns one point per object
into instance masks; ``geosparse predict --points`` writes them as an instance COG.
Stage 2 trains an instance model that needs no points on new imagery (TorchGeo's
Mask R-CNN, :class:`~geosparse.trainers.MaskRCNNTask`) on those masks. This module
pairs the imagery with them:

- ``masks_path``: the pseudo-mask raster (the instance COG: band 1 id, band 2
  class, band 3 uncertainty; nodata :math:`2^{32} - 1` is background), any
  single-band integer instance raster (e.g. a ground-truth mask), or a polygons
  file (GeoPackage, GeoJSON, GeoParquet, ..., rasterised per window by
  :class:`~geosparse.datasets.InstancePolygons`, ``id_column`` and
  ``class_column`` as there);
- ``fit`` draws random windows (TorchGeo's
  :class:`~torchgeo.samplers.RandomGeoSampler`) over the imagery; validation, test
  and prediction windows tile it (:class:`~geosparse.samplers.CoverGeoSampler`).
  Validation uses the same masks (or ``val_masks_path``, e.g. ground truth, if
  given).

Batches are those of TorchGeo's instance segmentation task in 0.8.1 and 0.10
(:func:`~geosparse.datasets.pseudo.collate_instances`): ``image`` ``(B, C, H, W)``
float32 raw values (the task normalises: its checkpoint then predicts raw imagery),
``bbox_xyxy`` a list of ``B`` ``(N_b, 4)`` float32 pixel-edge boxes, ``label`` a
list of ``(N_b,)`` int64 (the class band's majority under the object, else 1),
``mask`` a list of ``(N_b, H, W)`` uint8, and ``instances`` ``(B, H, W)`` int64 (the
window's instance map, for scoring), plus the georeference keys (kept on the way to
the device, :class:`~geosparse.batch.KeepGeoKeys`). An object cut by the window edge
keeps its visible part (``min_pixels`` drops smaller slivers); a window without
objects has ``N_b = 0`` (torchvision's Mask R-CNN learns background from it).

``max_uncertainty``: pixels whose stage-1 uncertainty (band 3 / 254, the margin
uncertainty of the learned distance) exceeds it leave their object, so that the
mask and box shrink to the confident part (an object left without pixels is
dropped); Mask R-CNN has no "ignore" label, so those pixels count as background.
Off (None) by default; only the 3-band COG carries the band.

Augmentation (``augment=True``): random horizontal and vertical flips of training
batches after transfer (:class:`~geosparse.transforms.RandomFlipWithBoxes`): the
image, ``instances``, every mask and box move together.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import rasterio
import torch
from torchgeo.datamodules import GeoDataModule
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import RandomGeoSampler

from ..batch import KeepGeoKeys
from ..datasets.coarse import ImageryDataset
from ..datasets.instances import InstancePolygons
from ..datasets.pseudo import InstanceRaster, collate_instances, require_instances
from ..errors import InputError
from ..samplers import CoverGeoSampler
from ..transforms import RandomFlipWithBoxes

__all__ = ['VECTOR_SUFFIXES', 'PseudoMaskDataModule']

#: Suffixes of ``masks_path`` read as polygons (everything else is a raster).
VECTOR_SUFFIXES = ('.gpkg', '.geojson', '.json', '.shp', '.parquet', '.fgb', '.gml')


class PseudoMaskDataModule(KeepGeoKeys, GeoDataModule):
    """Imagery & instance masks (stage-1 pseudo masks), see the module doc.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        image_paths: str | Sequence[str],
        masks_path: str,
        val_masks_path: str | None = None,
        id_column: str | None = None,
        class_column: str | None = None,
        max_uncertainty: float | None = None,
        min_pixels: int = 4,
        res: float | None = None,
        patch_size: int = 128,
        batch_size: int = 4,
        length: int = 200,
        eval_size: int | None = None,
        augment: bool = True,
        seed: int = 0,
        num_workers: int = 0,
        image_glob: str = '*.tif',
    ) -> None:
        """Describe the data.

        Args:
            image_paths: imagery files or folders.
            masks_path: the pseudo masks: instance COG of ``geosparse predict
                --points``, a single-band integer instance raster, or polygons.
            val_masks_path: masks for validation (default: ``masks_path``).
            id_column: polygons' instance ids (default: row number + 1).
            class_column: polygons' classes (default: 1).
            max_uncertainty: drop pixels whose stage-1 uncertainty exceeds this
                from their object (None: keep all).
            min_pixels: objects with fewer visible pixels in a window are left out.
            res: resolution of the samples in CRS units (default: the imagery's).
            patch_size: training window size in pixels.
            batch_size: windows per batch.
            length: training windows per epoch.
            eval_size: validation, test and prediction tile size in pixels
                (default ``patch_size``).
            augment: random horizontal and vertical flips of training batches.
            seed: seed of the training sampler.
            num_workers: data loader workers.
            image_glob: imagery file pattern.
        """
        super().__init__(ImageryDataset, batch_size, patch_size, length, num_workers)
        self.save_hyperparameters()
        self.aug = None  # type: ignore[assignment]  # the task normalises inputs
        self.train_aug = (
            RandomFlipWithBoxes(keys=('image', 'instances')) if augment else None
        )
        self.collate_fn = functools.partial(
            collate_instances,
            max_uncertainty=max_uncertainty,
            min_pixels=min_pixels,
        )

    # ------------------------------------------------------------ reading
    def read_masks(self, path: str, image: ImageryDataset) -> GeoDataset:
        """The masks (raster or polygons) on the imagery, checked.

        Raises:
            InputError: if the file does not overlap the imagery or holds no
                instance (one line naming the file and the fix).
        """
        hp = self.hparams
        x, y, _ = image.bounds
        extent = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        footprint = image.index.union_all()
        if not Path(path).exists():
            raise InputError(f'{path}: no such file (masks_path).')
        masks: GeoDataset
        if Path(path).suffix.lower() in VECTOR_SUFFIXES:
            masks = InstancePolygons(
                path,
                hp['id_column'],
                hp['class_column'],
                crs=image.crs,
                res=image.res,
                extent=extent,
            )
            assert isinstance(masks, InstancePolygons)
            hits = masks.frame.sindex.query(footprint, predicate='intersects')
            if len(hits) == 0:
                raise InputError(
                    f'{path}: none of its {len(masks)} polygons overlaps the imagery '
                    f'{hp["image_paths"]}; pass polygons of the objects on this '
                    'imagery (check their CRS).'
                )
            return masks
        try:
            masks = InstanceRaster(path, crs=image.crs, res=image.res)
        except rasterio.errors.RasterioIOError as err:
            raise InputError(
                f'{path}: not a readable raster ({err}); pass the instance COG of '
                '`geosparse predict --points`, an instance raster or polygons.'
            ) from None
        if not masks.index.union_all().intersects(footprint) or (
            masks.index.union_all().intersection(footprint).area <= 0
        ):
            raise InputError(
                f'{path}: the pseudo-mask raster does not overlap the imagery '
                f'{hp["image_paths"]}; pass the masks predicted on this imagery '
                '(`geosparse predict --points ... IMAGE`).'
            )
        require_instances(path)
        return masks

    # ------------------------------------------------------------ setup
    def setup(self, stage: str) -> None:
        """Read the imagery and masks; build the samplers."""
        hp = self.hparams
        image = ImageryDataset(hp['image_paths'], glob=hp['image_glob'], res=hp['res'])
        self.image = image
        self.masks = self.read_masks(hp['masks_path'], image)
        size = (
            self.patch_size if isinstance(self.patch_size, int) else self.patch_size[0]
        )
        data = image & self.masks
        if stage == 'fit':
            self.train_dataset = data
            self.train_sampler = RandomGeoSampler(
                data,
                size,
                hp['length'],
                generator=torch.Generator().manual_seed(hp['seed']),
            )
        eval_size = hp['eval_size'] or size
        val = data
        if hp['val_masks_path']:
            val = image & self.read_masks(hp['val_masks_path'], image)
        self.val_dataset = self.test_dataset = val
        self.val_sampler = self.test_sampler = CoverGeoSampler(val, eval_size)
        self.predict_dataset = data
        self.predict_sampler = CoverGeoSampler(data, eval_size)

    def on_after_batch_transfer(
        self, batch: dict[str, Any], dataloader_idx: int
    ) -> dict[str, Any]:
        """Flip training batches (``train_aug``); others pass unchanged."""
        if self.trainer and self.trainer.training and self.train_aug is not None:
            batch = self.train_aug(batch)
        return batch
