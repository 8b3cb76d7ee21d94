"""Random windows inside given boxes (e.g. the training part of a spatial split).

TorchGeo's :class:`~torchgeo.samplers.RandomGeoSampler` takes one region of
interest; spatial splits of one scene give several boxes per split (one per raster),
and semi-supervised training gives labelled and unlabelled boxes. This sampler draws
windows that lie wholly inside one of the boxes, the box chosen with probability
proportional to its number of window positions, each window on the dataset's pixel
grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torchgeo.datasets import GeoDataset
from torchgeo.samplers import GeoSampler
from torchgeo.samplers.utils import _to_tuple

__all__ = ['Box', 'RegionGeoSampler']

#: ``(xmin, ymin, xmax, ymax)`` in the dataset's CRS.
Box = tuple[float, float, float, float]


class RegionGeoSampler(GeoSampler):
    """``length`` random windows of ``size`` pixels, each wholly inside one box."""

    def __init__(
        self,
        dataset: GeoDataset,
        size: int | tuple[int, int],
        length: int,
        boxes: Sequence[Box],
        generator: torch.Generator | None = None,
    ) -> None:
        """Prepare the sampler.

        Args:
            dataset: the dataset to sample.
            size: window size in pixels (rows, cols), at ``dataset.res``.
            length: windows per epoch.
            boxes: regions the windows must lie in (dataset CRS).
            generator: random generator.

        Raises:
            ValueError: if no box can hold a window of ``size`` (the message gives
                the sizes).
        """
        super().__init__(dataset)
        self.length = length
        self.generator = generator
        self.size = _to_tuple(size)
        _, _, self.t = dataset.bounds
        xres, yres = dataset.res
        self.res = (float(xres), float(yres))
        rows, cols = self.size
        self.boxes: list[
            tuple[int, int, int, int]
        ] = []  # grid col0, row0 (top), nx, ny
        for xmin, ymin, xmax, ymax in boxes:
            c0, c1 = math.ceil(xmin / xres - 1e-9), math.floor(xmax / xres + 1e-9)
            r0, r1 = math.ceil(ymin / yres - 1e-9), math.floor(ymax / yres + 1e-9)
            nx, ny = c1 - c0 - cols + 1, r1 - r0 - rows + 1
            if nx > 0 and ny > 0:
                self.boxes.append((c0, r0, nx, ny))
        if not self.boxes:
            raise ValueError(
                f'RegionGeoSampler: none of the {len(boxes)} regions holds a window of '
                f'{rows} x {cols} pixels at resolution {self.res}; use a smaller '
                'patch_size or larger regions.'
            )
        self.weights = torch.tensor(
            [nx * ny for _, _, nx, ny in self.boxes], dtype=torch.float64
        )

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield ``length`` windows."""
        xres, yres = self.res
        rows, cols = self.size
        for _ in range(self.length):
            k = int(torch.multinomial(self.weights, 1, generator=self.generator))
            c0, r0, nx, ny = self.boxes[k]
            c = c0 + int(torch.randint(nx, (1,), generator=self.generator))
            r = r0 + int(torch.randint(ny, (1,), generator=self.generator))
            yield (
                slice(c * xres, (c + cols) * xres, xres),
                slice(r * yres, (r + rows) * yres, yres),
                self.t,
            )

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.length
