"""Digests of what geosparse writes, at fixed seeds: a check that a refactor changed nothing.

Builds small synthetic scenes, trains each geosparse task for a few steps through
Lightning's ``Trainer`` and the package's data modules (plus untrained TorchGeo
segmentation and regression tasks), predicts every output the predictor can write
(class maps with and without coarse labels and probabilities, NPP with and without
revealed points with the re-fitted and the trained kernel, a regression with a given kernel, density and
point maps) through :func:`geosparse.inference.predict.predict_raster`, and prints one JSON
object ``{name: {"pixels": sha256, "tags": {...}}}``: the SHA-256 of every band's
pixels and the COG's tags. Run it before and after a change and diff the two
outputs::

    python benchmarks/output_digests.py --out before.json
    python benchmarks/output_digests.py --out after.json
    diff before.json after.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import rasterio
import torch

from geosparse.console import quiet, verbose_option
from geosparse.datamodules import (
    CountingDataModule,
    LabelSuperResolutionDataModule,
    NPPDataModule,
)
from geosparse.datasets import make_scene
from geosparse.datasets.synthetic import make_object_scene, make_point_labels
from geosparse.inference import Predictor
from geosparse.inference.predict import predict_raster, probability_path
from geosparse.io.points import read_points
from geosparse.trainers import (
    DensityTask,
    LabelSuperResolutionTask,
    NPPTask,
    PointMapTask,
)


def _digest(path: Path) -> dict[str, Any]:
    with rasterio.open(path) as ds:
        data = ds.read()
        tags = ds.tags()
        tags.pop('geosparse_version', None)
        return {
            'pixels': hashlib.sha256(data.tobytes()).hexdigest(),
            'dtype': ds.dtypes[0],
            'descriptions': list(ds.descriptions),
            'scales': list(ds.scales),
            'nodata': None if ds.nodata is None else repr(ds.nodata),
            'tags': tags,
            'band_tags': [ds.tags(i + 1) for i in range(ds.count)],
            'colormap': (
                {str(k): list(v) for k, v in ds.colormap(1).items() if k < 8}
                if tags.get('kind') == 'segmentation'
                else None
            ),
        }


def _fit(task: pl.LightningModule, dm: pl.LightningDataModule, steps: int) -> None:
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=-1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        accelerator='cpu',
        deterministic=True,
    )
    trainer.fit(task, datamodule=dm)


def main() -> None:
    """Write every output at fixed seeds and print their digests."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--steps', type=int, default=4, help='training steps per task')
    parser.add_argument('--out', type=Path, help='also write the JSON here')
    verbose_option(parser)
    args = parser.parse_args()
    with quiet(args.verbose):
        warnings.filterwarnings('ignore')
        torch.set_num_threads(1)
        out: dict[str, Any] = {}
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            scene = make_scene(root / 'scene', size=192, seed=3)

            def predict(name: str, predictor: Predictor, **kw: Any) -> None:
                path = root / f'{name}.tif'
                predict_raster(
                    predictor,
                    scene.image,
                    path,
                    block=128,
                    halo=16,
                    progress=False,
                    **kw,
                )
                out[name] = _digest(path)
                if probability_path(path).exists():
                    out[f'{name}_probabilities'] = _digest(probability_path(path))

            # Label super-resolution.
            pl.seed_everything(0, verbose=False)
            lsr = LabelSuperResolutionTask(loss='lsr', backbone='resnet18')
            dm = LabelSuperResolutionDataModule(
                image_paths=str(scene.image),
                coarse_paths=str(scene.coarse),
                patch_size=64,
                batch_size=2,
                length=2 * args.steps,
                val_fraction=0.0,
                seed=0,
            )
            _fit(lsr, dm, args.steps)
            predict('lsr', Predictor(lsr))
            predict('lsr_coarse', Predictor(lsr), coarse_path=scene.coarse)
            predict('lsr_probs', Predictor(lsr, probabilities=True))

            # TorchGeo tasks, untrained (seeded).
            from geosparse.compat import PixelwiseRegression, SemanticSegmentation

            pl.seed_everything(1, verbose=False)
            seg = SemanticSegmentation(
                model='unet', backbone='resnet18', in_channels=4, num_classes=3
            )
            predict(
                'tg_seg', Predictor(seg, probabilities=True, std=[255, 255, 255, 200])
            )
            pl.seed_everything(2, verbose=False)
            reg = PixelwiseRegression(
                model='unet', backbone='resnet18', in_channels=4, num_outputs=1
            )
            predict('tg_reg', Predictor(reg))

            # Neural Point Processes.
            labels = make_point_labels(scene, n=200, seed=0)
            pl.seed_everything(0, verbose=False)
            npp = NPPTask(model='fcn', in_channels=4, num_filters=8, lengthscale=4.0)
            ndm = NPPDataModule(
                str(scene.image),
                str(labels),
                value='height',
                block_size=32.0,
                patch_size=64,
                batch_size=2,
                length=2 * args.steps,
                seed=0,
            )
            _fit(npp, ndm, args.steps)
            with rasterio.open(scene.image) as ds:
                crs = ds.crs
            xy, values = read_points(labels, 'height', crs=crs)
            predict('npp', Predictor(npp))
            predict('npp_reveal', Predictor(npp, reveal=(xy[::2], values[::2])))
            predict(
                'npp_trained_kernel',
                Predictor(npp, reveal=(xy[1::2], values[1::2]), refit=False),
            )
            predict(
                'reg_kernel',
                Predictor(
                    reg,
                    reveal=(xy, values),
                    kernel={'lengthscale': 6.0, 'variance': 2.0, 'noise': 0.1},
                    kernel_family='matern32',
                ),
            )

            # Counting.
            objects = make_object_scene(root / 'objects', size=256, n=120, seed=0)
            for name, cls in (('density', DensityTask), ('pointmap', PointMapTask)):
                pl.seed_everything(0, verbose=False)
                task = cls(model='fcn', in_channels=3, num_filters=8)
                cdm = CountingDataModule(
                    str(objects.image),
                    str(objects.points),
                    patch_size=32,
                    batch_size=2,
                    length=2 * args.steps,
                    eval_size=32,
                    cache_dir=str(root / 'cache'),
                    fit_steps=10,
                    split=(0.5, 0.25, 0.25),
                    gaussians=cls is DensityTask,
                )
                _fit(task, cdm, args.steps)
                path = root / f'{name}.tif'
                predict_raster(
                    Predictor(task),
                    objects.image,
                    path,
                    block=64,
                    halo=16,
                    progress=False,
                )
                out[name] = _digest(path)
        text = json.dumps(out, indent=1, sort_keys=True)
        print(text)
        if args.out:
            args.out.write_text(text + '\n')


if __name__ == '__main__':
    main()
