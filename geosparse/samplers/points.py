"""Random windows that contain labelled points.

With sparse point labels most random windows hold none. This sampler picks a
labelled point at random and places a window of ``size`` pixels around it at a
uniformly random offset (clipped to the dataset's bounds and snapped to multiples of
its resolution), so every window holds at least that point and, where points cluster, its
neighbours too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler
from torchgeo.samplers.utils import _to_tuple

from ..datasets.points import SparsePoints

__all__ = ['PointGeoSampler']


class PointGeoSampler(GeoSampler):
    """Windows of ``size`` pixels, each around a randomly drawn labelled point."""

    def __init__(
        self,
        dataset: GeoDataset,
        points: SparsePoints,
        size: int | tuple[int, int],
        length: int,
        generator: torch.Generator | None = None,
    ) -> None:
        """Prepare the sampler.

        Args:
            dataset: the dataset to sample (e.g. imagery & points).
            points: the points inside ``dataset``.
            size: window size in pixels (rows, cols), at ``dataset.res``.
            length: windows per epoch.
            generator: random generator.

        Raises:
            ValueError: if no point lies inside the dataset's bounds.
        """
        super().__init__(dataset)
        self.length = length
        self.generator = generator
        self.size = _to_tuple(size)
        x, y, t = dataset.bounds
        self.t = t
        xres, yres = dataset.res
        self.width, self.height = self.size[1] * xres, self.size[0] * yres
        self.box = (float(x.start), float(y.start), float(x.stop), float(y.stop))
        self.res = (xres, yres)
        xy = torch.from_numpy(points.xy())
        inside = (
            (xy[:, 0] >= x.start)
            & (xy[:, 0] < x.stop)
            & (xy[:, 1] > y.start)
            & (xy[:, 1] <= y.stop)
        )
        if not bool(inside.any()):
            raise ValueError(
                f'PointGeoSampler: none of the {len(xy)} points of {points.path} lies '
                'inside the dataset (check that the points and the imagery overlap '
                'and their CRS).'
            )
        self.xy = xy[inside]

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``length`` windows."""
        left, bottom, right, top = self.box
        xres, yres = self.res
        rows, cols = self.size
        for _ in range(self.length):
            i = int(torch.randint(len(self.xy), (1,), generator=self.generator))
            # The point's pixel (edges at multiples of the resolution, the grid of
            # rasters whose origin is such a multiple, as for NAIP and most UTM
            # products) lands in a random row and column of the window.
            c = int(torch.randint(cols, (1,), generator=self.generator))
            r = int(torch.randint(rows, (1,), generator=self.generator))
            x0 = (math.floor(float(self.xy[i, 0]) / xres) - c) * xres
            y1 = (math.ceil(float(self.xy[i, 1]) / yres) + r) * yres
            # Keep the window inside the dataset, still on the grid.
            x0 = min(x0, math.floor((right - self.width) / xres) * xres)
            x0 = max(x0, math.ceil(left / xres) * xres)
            y1 = max(y1, math.ceil((bottom + self.height) / yres) * yres)
            y1 = min(y1, math.floor(top / yres) * yres)
            yield (
                slice(x0, x0 + self.width, xres),
                slice(y1 - self.height, y1, yres),
                self.t,
            )

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.length
