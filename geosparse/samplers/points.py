"""Random windows that contain labelled points.

With sparse point labels most random windows hold none. This sampler picks a
labelled point at random and places a window of ``size`` pixels around it at a
uniformly random offset (clipped to the dataset's bounds and snapped to the raster's
pixel grid, given by ``origin``), so every window holds at least that point and,
where points cluster, its neighbours too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torchgeo.datasets import GeoDataset
from torchgeo.samplers.utils import _to_tuple

from ..compat import GeoSampler
from ..datasets.points import SparsePoints

__all__ = ['PointGeoSampler']


class PointGeoSampler(GeoSampler):
    """Windows of ``size`` pixels, each around a randomly drawn labelled point.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: GeoDataset,
        points: SparsePoints,
        size: int | tuple[int, int],
        length: int,
        generator: torch.Generator | None = None,
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> None:
        """Prepare the sampler.

        Args:
            dataset: the dataset to sample (e.g. imagery & points).
            points: the points inside ``dataset``.
            size: window size in pixels (rows, cols), at ``dataset.res``.
            length: windows per epoch.
            generator: random generator.
            origin: a corner ``(x, y)`` of the raster's pixel grid (e.g. its
                top-left); windows are snapped to the grid through it. The default
                puts pixel edges at multiples of the resolution (NAIP and most UTM
                products); rasters like NEON's 0.1 m tiles need their own origin.

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
        self.origin = (float(origin[0]), float(origin[1]))
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
            # The point's pixel (on the grid through ``origin``) lands in a random
            # row and column of the window.
            c = int(torch.randint(cols, (1,), generator=self.generator))
            r = int(torch.randint(rows, (1,), generator=self.generator))
            ox, oy = self.origin
            x0 = ox + (math.floor((float(self.xy[i, 0]) - ox) / xres) - c) * xres
            y1 = oy + (math.ceil((float(self.xy[i, 1]) - oy) / yres) + r) * yres
            # Keep the window inside the dataset, still on the grid.
            x0 = min(
                x0, ox + math.floor((right - self.width - ox) / xres + 1e-9) * xres
            )
            x0 = max(x0, ox + math.ceil((left - ox) / xres - 1e-9) * xres)
            y1 = max(
                y1, oy + math.ceil((bottom + self.height - oy) / yres - 1e-9) * yres
            )
            y1 = min(y1, oy + math.floor((top - oy) / yres + 1e-9) * yres)
            yield (
                slice(x0, x0 + self.width, xres),
                slice(y1 - self.height, y1, yres),
                self.t,
            )

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.length
