r"""Random windows drawn inversely to the frequency of their coarse classes.

Malkin et al. (ICLR 2019, Sec. 5.1) sample training patches so that rare coarse
classes (e.g. NLCD's developed classes) are seen as often as common ones. This
sampler draws a pool of random windows, reads each window's coarse labels at low
resolution, and then samples windows with probability

.. math:: w(W) \propto \left(\sum_z h_z(W) / f_z\right)^{\gamma}

where :math:`h_z(W)` is the fraction of window :math:`W` in coarse class :math:`z`,
:math:`f_z` the fraction of class :math:`z` over the whole pool and :math:`\gamma`
(``power``) tempers the balancing (0: uniform, 1: fully inverse).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import RandomGeoSampler
from torchgeo.samplers.utils import _to_tuple

from ..compat import GeoSampler
from ..datasets.coarse import CoarseLabels

__all__ = ['CoarseBalancedGeoSampler']


class CoarseBalancedGeoSampler(GeoSampler):
    """Random windows, balanced over coarse classes.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: GeoDataset,
        coarse: CoarseLabels,
        size: int | tuple[int, int],
        length: int,
        pool: int | None = None,
        power: float = 1.0,
        probe: int = 16,
        generator: torch.Generator | None = None,
    ) -> None:
        r"""Draw the pool and weigh it.

        Args:
            dataset: the dataset to sample (e.g. imagery & coarse labels).
            coarse: the coarse labels inside ``dataset`` (read at low resolution).
            size: window size in pixels.
            length: windows per epoch.
            pool: candidate windows (default ``min(max(2 * length, 128), 512)``).
            power: balancing exponent :math:`\gamma`.
            probe: pixels per side at which a window's coarse labels are read.
            generator: random generator.
        """
        super().__init__(dataset)
        self.length = length
        self.generator = generator
        n_pool = pool or min(max(2 * length, 128), 512)
        base = RandomGeoSampler(dataset, size, length=n_pool, generator=generator)
        self.candidates = list(base)
        _sy, _sx = _to_tuple(size)
        hist = []
        codes: dict[int, int] = {}
        for x, y, t in self.candidates:
            step = ((x.stop - x.start) / probe, (y.stop - y.start) / probe)
            win = coarse[
                slice(x.start, x.stop, step[0]), slice(y.start, y.stop, step[1]), t
            ]['coarse'].numpy()
            vals, counts = np.unique(win, return_counts=True)
            h: dict[int, float] = {}
            for v, c in zip(vals.tolist(), counts.tolist(), strict=True):
                if coarse.nodata is not None and v == coarse.nodata:
                    continue
                codes.setdefault(v, len(codes))
                h[codes[v]] = c / win.size
            hist.append(h)
        mat = np.zeros((len(hist), max(len(codes), 1)))
        for i, h in enumerate(hist):
            for k, v in h.items():
                mat[i, k] = v
        freq = mat.sum(0) / max(mat.sum(), 1e-12)
        inv = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
        score = (mat * inv).sum(1)
        weights = np.where(score > 0, score**power, 0.0)
        if weights.sum() == 0:
            raise ValueError(
                'CoarseBalancedGeoSampler: no window of the dataset holds a coarse '
                'label (all nodata); check the coarse rasters and their nodata value.'
            )
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.class_frequency = {c: float(freq[i]) for c, i in codes.items()}

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``length`` windows drawn by weight (with replacement)."""
        idx = torch.multinomial(
            self.weights, self.length, replacement=True, generator=self.generator
        )
        for i in idx.tolist():
            yield self.candidates[i]

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.length
