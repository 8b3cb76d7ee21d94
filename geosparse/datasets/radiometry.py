r"""Radiometric change between two acquisitions, fitted from real imagery.

Two NAIP acquisitions of the same ground differ in sensor, sun, season and the
vendor's tone curves, band by band and not linearly. A model trained on one tile
meets such a change on every other tile. With labelled imagery of one acquisition
only, a faithful stand-in for a second one is a monotone map per band fitted from
the pixel distributions of real imagery of another acquisition: quantile mapping
(histogram matching with one fixed map for a whole tile). For band :math:`b` with
empirical distribution functions :math:`F_b` of the source acquisition (all its
pixels pooled) and :math:`G_b` of the target,

.. math::
    T_b(x) = G_b^{-1}\bigl(F_b(x)\bigr),

evaluated by linear interpolation between ``quantiles`` matched quantiles. Every
patch of the source tile goes through the same :math:`T`, so land cover keeps its
truth and only the radiometry changes. The map also carries the difference in land
cover between the two images it was fitted on (a target scene of bright fields makes
the source's forest brighter): it is a harsh shift, not the mildest one.

:class:`RadiometricShift` fits and applies the map; :func:`shift_folder` writes a
shifted copy of a folder of patches (the labels copied unchanged);
:func:`harmonize_folder` maps a folder of another acquisition onto a reference one
(for training on imagery of two acquisitions together).

.. versionadded:: 0.1
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from ..errors import InputError
from ..io.raster import atomic_path, atomic_write_raster

__all__ = [
    'DISPLACEMENT_THRESHOLD',
    'RadiometricShift',
    'harmonize_folder',
    'sample_rasters',
    'shift_folder',
]

#: Largest band displacement (:meth:`RadiometricShift.displacement`) still taken as
#: the same acquisition. Set on the Chesapeake tuning fold: a patch of the training
#: tile gives at most 0.22, the mild simulated acquisition 0.30-0.31 (raw bands serve
#: it best), the harsh one 0.99-1.02 (matching serves it best).
DISPLACEMENT_THRESHOLD = 0.5


def _band_values(
    images: Sequence[np.ndarray], band: int, nodata: float | None
) -> np.ndarray:
    """The valid values of one band over several ``(C, H, W)`` images."""
    out = []
    for image in images:
        v = np.asarray(image[band], dtype=np.float64).ravel()
        keep = np.isfinite(v)
        if nodata is not None:
            keep &= v != nodata
        out.append(v[keep])
    return np.concatenate(out)


@dataclass(frozen=True)
class RadiometricShift:
    r"""A monotone map per band, :math:`T_b = G_b^{-1} \circ F_b` (quantile mapping).

    Attributes:
        source: ``(C, Q)`` quantiles of each band in the source acquisition.
        target: ``(C, Q)`` the same quantiles in the target acquisition.
        name: where the target came from (for reports).

    .. versionadded:: 0.1
    """

    source: np.ndarray
    target: np.ndarray
    name: str = ''

    @classmethod
    def fit(
        cls,
        source: Sequence[np.ndarray],
        target: Sequence[np.ndarray],
        quantiles: int = 101,
        nodata: float | None = None,
        name: str = '',
    ) -> RadiometricShift:
        """Fit the map from the pixels of the source and the target images.

        Args:
            source: ``(C, H, W)`` images of the source acquisition (pooled).
            target: ``(C, H, W)`` images of the target acquisition (pooled).
            quantiles: number of matched quantiles, from 0 to 1.
            nodata: a value that is no pixel in either (NaN always is none).
            name: a label for reports.

        Returns:
            The fitted shift.

        Raises:
            InputError: if the images disagree in band count or a band has no valid
                pixel.
        """
        if not source or not target:
            raise InputError(
                'RadiometricShift.fit: give at least one source and one target image.'
            )
        bands = {int(np.shape(a)[0]) for a in [*source, *target]}
        if len(bands) != 1:
            raise InputError(
                f'RadiometricShift.fit: the images have {sorted(bands)} bands; the '
                'source and target acquisitions must have the same bands.'
            )
        if quantiles < 2:
            raise InputError(f'RadiometricShift.fit: quantiles={quantiles}; use ≥ 2.')
        q = np.linspace(0.0, 1.0, quantiles)
        src, tgt = [], []
        for b in range(bands.pop()):
            s, t = _band_values(source, b, nodata), _band_values(target, b, nodata)
            if s.size == 0 or t.size == 0:
                raise InputError(
                    f'RadiometricShift.fit: band {b + 1} has no valid pixel in the '
                    f'{"source" if s.size == 0 else "target"} images.'
                )
            src.append(np.quantile(s, q))
            tgt.append(np.quantile(t, q))
        return cls(np.stack(src), np.stack(tgt), name)

    @classmethod
    def from_files(
        cls,
        source: Iterable[str | os.PathLike[str]],
        target: Iterable[str | os.PathLike[str]],
        quantiles: int = 101,
    ) -> RadiometricShift:
        """:meth:`fit` on the pixels of raster files (their nodata excluded)."""
        target = list(target)
        name = ', '.join(Path(p).name for p in target)
        read = sample_rasters
        return cls.fit(read(source), read(target), quantiles, name=name)

    @classmethod
    def to_reference(
        cls,
        images: Sequence[np.ndarray],
        reference: np.ndarray,
        nodata: float | None = None,
        name: str = 'training imagery',
    ) -> RadiometricShift:
        """The map from the pixels of ``images`` onto reference quantiles.

        Args:
            images: ``(C, H, W)`` images of the acquisition to map (pooled).
            reference: ``(C, Q)`` values at ``Q`` evenly spaced quantiles (e.g.
                :meth:`~geosparse.trainers.radiometry.RadiometryReference.reference_quantiles`).
            nodata: a value that is no pixel (NaN never is one).
            name: what the reference is (for reports).
        """
        reference = np.asarray(reference, dtype=np.float64)
        if reference.ndim != 2 or reference.shape[1] < 2:
            raise InputError(
                f'RadiometricShift.to_reference: reference of shape {reference.shape}; '
                'give (bands, quantiles).'
            )
        bands = {int(np.shape(a)[0]) for a in images}
        if bands != {reference.shape[0]}:
            raise InputError(
                f'RadiometricShift.to_reference: the images have {sorted(bands)} '
                f'bands, the reference {reference.shape[0]}.'
            )
        q = np.linspace(0.0, 1.0, reference.shape[1])
        src = []
        for b in range(reference.shape[0]):
            v = _band_values(images, b, nodata)
            if v.size == 0:
                raise InputError(
                    f'RadiometricShift.to_reference: band {b + 1} has no valid pixel.'
                )
            src.append(np.quantile(v, q))
        return cls(np.stack(src), reference, name)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Apply the map to a ``(C, H, W)`` image; NaN stays NaN.

        Integer images are rounded and clipped to their type's range.
        """
        image = np.asarray(image)
        if image.shape[0] != self.source.shape[0]:
            raise InputError(
                f'RadiometricShift: the image has {image.shape[0]} bands, the shift '
                f'was fitted on {self.source.shape[0]}.'
            )
        out = np.empty(image.shape, dtype=np.float64)
        for b in range(image.shape[0]):
            # Ties among the source quantiles (integer data): average their targets.
            xs, inverse = np.unique(self.source[b], return_inverse=True)
            ys = np.bincount(inverse, weights=self.target[b]) / np.bincount(inverse)
            out[b] = np.interp(image[b].astype(np.float64), xs, ys)
            out[b][~np.isfinite(image[b])] = np.nan
        if np.issubdtype(image.dtype, np.integer):
            info = np.iinfo(image.dtype)
            return np.clip(np.rint(out), info.min, info.max).astype(image.dtype)
        return out.astype(image.dtype)

    def displacement(self, resolution: float = 0.0) -> np.ndarray:
        r"""``(C,)`` how far each band moves, over the target's 5–95 % range.

        The 1-Wasserstein distance between the source and target distributions,
        over the target's spread:

        .. math::
            d_b = \frac{\int_0^1 \lvert F_b^{-1}(q) - G_b^{-1}(q)\rvert\,dq}
            {G_b^{-1}(0.95) - G_b^{-1}(0.05)},

        the mean over the stored quantiles. 0 for identical distributions; 0.5
        moves a band's values by half the target's range on average. On the
        Chesapeake patches, a patch of the training tile against the training
        patches gives at most 0.22, two held-out patches under the simulated mild
        second acquisition (California) 0.30–0.31, under the harsh one (Michigan)
        0.99–1.02 (``displacement`` of ``benchmarks/lsr_chesapeake.py``).

        The spread is taken as at least ``resolution``, the finest the target
        resolves (for a training histogram, one bin): otherwise a band that never
        varied in the target would divide by 0. Where the floored spread is still
        0, the band gives 0 if the source is the same constant and ``inf`` if it
        moved at all.

        .. versionadded:: 0.3
        """
        spread = (
            self.target[:, round(0.95 * (self.target.shape[1] - 1))]
            - (self.target[:, round(0.05 * (self.target.shape[1] - 1))])
        )
        spread = np.maximum(spread, resolution)
        moved = np.abs(self.source - self.target).mean(1)
        flat = spread <= 0
        out = moved / np.where(flat, 1.0, spread)
        out[flat] = np.where(moved[flat] > 0, np.inf, 0.0)
        return out

    def summary(self) -> dict[str, Any]:
        """Median, 5 % and 95 % quantile of each band before and after."""
        q = self.source.shape[1]
        at = {
            'p05': round(0.05 * (q - 1)),
            'p50': (q - 1) // 2,
            'p95': round(0.95 * (q - 1)),
        }
        return {
            'target': self.name,
            'bands': [
                {
                    k: [
                        round(float(self.source[b, i]), 1),
                        round(float(self.target[b, i]), 1),
                    ]
                    for k, i in at.items()
                }
                for b in range(self.source.shape[0])
            ],
        }


def sample_rasters(
    paths: Iterable[str | os.PathLike[str]], max_pixels: int = 1_000_000
) -> list[np.ndarray]:
    """Each raster read at reduced resolution (its overviews when it has them).

    At most about ``max_pixels`` pixels per raster, nearest-neighbour, as float64
    with nodata and non-finite values NaN: enough for band distributions.
    """
    out = []
    for path in paths:
        with rasterio.open(path) as src:
            step = max(1.0, float(np.sqrt(src.height * src.width / max_pixels)))
            shape = (
                src.count,
                max(1, round(src.height / step)),
                max(1, round(src.width / step)),
            )
            data = src.read(out_shape=shape, masked=True).astype(np.float64)
        image = data.filled(np.nan)
        image[~np.isfinite(image)] = np.nan
        out.append(image)
    return out


def shift_folder(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    shift: RadiometricShift,
    image_glob: str = '*_naip.tif',
    copy_globs: Sequence[str] = ('*_nlcd.tif', '*_lc.tif'),
) -> list[Path]:
    """Write a copy of a folder of patches with the imagery shifted.

    Every ``image_glob`` raster goes through ``shift`` (same georeference, type and
    nodata; band interpretation ``MINISBLACK``, so four bands stay four bands and do
    not become RGB + alpha); files matching ``copy_globs`` (the labels) are copied
    unchanged. Each file is written atomically.

    Args:
        source: folder of patches.
        out: new folder (created; must differ from ``source``).
        shift: the radiometric map.
        image_glob: imagery file pattern.
        copy_globs: patterns of files copied unchanged.

    Returns:
        The shifted images.

    Raises:
        InputError: if ``out`` is ``source`` or no image matches.
    """
    source, out = Path(source), Path(out)
    if out.resolve() == source.resolve():
        raise InputError(
            f'shift_folder: out={out} is the source folder; give a new one.'
        )
    images = sorted(source.glob(image_glob))
    if not images:
        raise InputError(f'shift_folder: {source} holds no {image_glob} file.')
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in images:
        with rasterio.open(path) as src:
            data, profile = src.read(), src.profile
        nodata = profile.get('nodata')
        shifted = shift(data)
        if nodata is not None:
            shifted = np.where(data == nodata, data, shifted)
        profile.update(photometric='MINISBLACK')
        written.append(atomic_write_raster(out / path.name, shifted, profile))
    for pattern in copy_globs:
        for path in sorted(source.glob(pattern)):
            with atomic_path(out / path.name, suffix=path.suffix) as tmp:
                shutil.copyfile(path, tmp)
    return written


def harmonize_folder(
    source: str | os.PathLike[str],
    reference: str | os.PathLike[str],
    out: str | os.PathLike[str],
    mode: str = 'auto',
    threshold: float = DISPLACEMENT_THRESHOLD,
    image_glob: str = '*_naip.tif',
    copy_globs: Sequence[str] = ('*_nlcd.tif', '*_lc.tif'),
) -> dict[str, Any]:
    r"""Map a folder's imagery onto a reference folder's acquisition, if it is another.

    For training on imagery of two acquisitions together, such as the paper's HR+SR
    (fine labels from one region, coarse labels from the region to map): fits the
    per-band quantile map :math:`T_b = R_b^{-1}\circ F_b` from the ``source``
    imagery (pooled, :math:`F_b`) to the ``reference`` imagery (pooled,
    :math:`R_b`) and, when some band's :meth:`RadiometricShift.displacement`
    exceeds ``threshold`` (``mode='auto'``) or always (``'match'``), writes the
    mapped copy with :func:`shift_folder`. Train on ``out`` then; at prediction the
    predictor's ``radiometry='auto'`` maps a raw raster of the source acquisition
    onto the training imagery the same way.

    Args:
        source: folder of patches of the other acquisition.
        reference: folder of patches of the reference acquisition.
        out: new folder for the mapped copy (written only if mapped).
        mode: ``auto`` or ``match``.
        threshold: ``auto``: the largest displacement still left alone.
        image_glob: imagery file pattern (in both folders).
        copy_globs: patterns of files copied unchanged (the labels).

    Returns:
        ``mode``, per band ``displacement``, whether it was ``matched`` and, if so,
        the ``out`` folder.

    Raises:
        InputError: if ``mode`` is unknown or a folder holds no imagery.

    .. versionadded:: 0.3
    """
    if mode not in ('auto', 'match'):
        raise InputError(f"harmonize_folder: mode={mode!r}; choose 'auto' or 'match'.")
    images = {}
    for name, folder in (('source', Path(source)), ('reference', Path(reference))):
        images[name] = sorted(folder.glob(image_glob))
        if not images[name]:
            raise InputError(
                f'harmonize_folder: {name}={folder} holds no {image_glob} file.'
            )
    shift = RadiometricShift.from_files(images['source'], images['reference'])
    moved = shift.displacement()
    matched = mode == 'match' or float(moved.max()) > threshold
    report: dict[str, Any] = {
        'mode': mode,
        'displacement': [round(float(d), 3) for d in moved],
        'matched': bool(matched),
    }
    if matched:
        shift_folder(source, out, shift, image_glob, copy_globs)
        report['out'] = str(out)
    return report
