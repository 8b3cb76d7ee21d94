r"""Leave-one-out calibration of the GP's variance on the revealed points of a raster.

The kernel learnt in training describes the residuals at *training* points, which
the network has partly fitted, so its variance can be too small (or too large) for
new places. :func:`calibrate` computes the network's mean at every revealed point
on the same windows as the blocks of prediction (so it is the value of the written
map), then the factor :math:`c` of
:func:`~geosparse.gp.loo_variance_scale` (Rasmussen and Williams, 2006,
Sec. 5.4.2): with :math:`s^2` and :math:`\sigma_0^2` scaled by :math:`c`, the
standardised leave-one-out residuals of the revealed points have unit variance. The
posterior mean does not change; the std scales by :math:`\sqrt c`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..console import progress as progress_bar
from ..gp import KernelParams, loo_variance_scale
from ..io.source import ImageSource

if TYPE_CHECKING:
    from .predictor import Predictor

__all__ = ['calibrate']


def calibrate(
    predictor: Predictor,
    source: ImageSource,
    block: int,
    halo: int,
    progress: bool = False,
    max_points: int = 4000,
) -> float:
    r"""The factor :math:`c` of the kernel's variance and noise on ``source``.

    .. versionadded:: 0.1

    Args:
        predictor: a predictor with revealed points (already in the source's CRS,
            see :meth:`~geosparse.inference.Predictor.for_crs`).
        source: the imagery about to be predicted.
        block: block size of the prediction.
        halo: halo of the prediction.
        progress: show a progress bar over the blocks that hold points.
        max_points: at most this many points (a random subset, seed 0) enter the
            leave-one-out, which inverts a points x points matrix.

    Returns:
        :math:`c`.

    Raises:
        ValueError: if fewer than two revealed points lie on valid pixels.
    """
    conditioning = predictor.conditioning
    assert conditioning is not None and conditioning.points is not None
    grid = source.grid
    xy, values = conditioning.points.xy, conditioning.points.values
    exact = np.stack(grid.to_pixels(xy), 1)
    rows, cols, inside = grid.pixel_of(xy)
    keys = grid.block_of(rows, cols, block)
    windows = grid.blocks(block)
    pts: list[np.ndarray] = []
    resid: list[float] = []
    kernel: KernelParams | None = None
    task_kernel = getattr(predictor.head, 'kernel_params', None)
    groups = np.unique(keys[inside])
    for key in progress_bar(groups, desc='calibrate', unit='block', enabled=progress):
        sel = np.flatnonzero(inside & (keys == key))
        window = grid.with_halo(windows[int(key)], halo)
        (r_top, _), (c_left, _) = window.toranges()
        image, invalid = source.read(window)
        image = image.astype(np.float32)
        mean = predictor.window_mean(image)
        r, c = rows[sel] - r_top, cols[sel] - c_left
        ok = np.ones(len(sel), bool) if invalid is None else ~invalid[r, c]
        # Exact positions, as the posterior uses them (the residual is read at the
        # pixel that holds the point, as there too).
        pts.append(exact[sel][ok])
        resid.extend((values[sel][ok] - mean[r[ok], c[ok]]).tolist())
        if kernel is None:
            kernel = conditioning.params(
                image, grid.window_transform(window), task_kernel
            )
    if len(resid) < 2 or kernel is None:
        raise ValueError(
            f'{", ".join(source.paths)}: calibrate needs at least two revealed '
            f'points on valid pixels, found {len(resid)}; drop --calibrate.'
        )
    all_pts, all_resid = np.concatenate(pts), np.asarray(resid)
    if len(all_resid) > max_points:  # the LOO needs a P x P inverse
        keep = np.random.default_rng(0).choice(len(all_resid), max_points, False)
        all_pts, all_resid = all_pts[keep], all_resid[keep]
    return loo_variance_scale(
        torch.from_numpy(all_pts), torch.from_numpy(all_resid), kernel
    )
