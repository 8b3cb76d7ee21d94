"""Random windows inside given boxes (e.g. the training part of a spatial split).

TorchGeo's :class:`~torchgeo.samplers.RandomGeoSampler` takes one region of
interest; spatial splits of one scene give several boxes per split (one per raster),
and semi-supervised training gives labelled and unlabelled boxes. This sampler draws
windows that lie wholly inside one of the boxes, the box chosen with probability
proportional to its number of window positions, each window on the boxes' pixel grid
(box edges are expected on the raster's pixel edges).

:class:`LabelledBatchGeoSampler` gives semi-supervised batches of a fixed make-up:
``labelled`` windows from the labelled boxes, then ``unlabelled`` windows from the
others, as semi-supervised counting trains on a labelled and an unlabelled batch at
every step (Lin, Zhao and Chan, CVPR 2025). Drawing both from one pool instead would
give each batch only the labelled boxes' share of labelled windows (a quarter at 25 %
labelled), so the supervised half of the loss would see far fewer labelled windows
than the labelled-only reference at the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torchgeo.datasets import GeoDataset
from torchgeo.datasets.utils import GeoSlice
from torchgeo.samplers import BatchGeoSampler
from torchgeo.samplers.utils import _to_tuple

from ..compat import GeoSampler

__all__ = ['Box', 'LabelledBatchGeoSampler', 'RegionGeoSampler', 'window_positions']

#: ``(xmin, ymin, xmax, ymax)`` in the dataset's CRS.
Box = tuple[float, float, float, float]


def window_positions(
    box: Box, res: tuple[float, float], size: tuple[int, int]
) -> tuple[int, int]:
    """Positions ``(nx, ny)`` of a ``size`` = ``(rows, cols)`` window on the box's pixel grid.

    Zero or less along a side where the box is smaller than the window.

    .. versionadded:: 0.1
    """
    xmin, ymin, xmax, ymax = box
    rows, cols = size
    nx = math.floor((xmax - xmin) / res[0] + 1e-6) - cols + 1
    ny = math.floor((ymax - ymin) / res[1] + 1e-6) - rows + 1
    return nx, ny


class RegionGeoSampler(GeoSampler):
    """``length`` random windows of ``size`` pixels, each wholly inside one box.

    .. versionadded:: 0.1
    """

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
        # Per box: its left and top edges and the number of window positions along
        # x and y. Windows start on the box's own pixel grid (box edges lie on the
        # raster's pixel edges, whose origin need not be a multiple of the
        # resolution, as for NEON's 0.1 m tiles).
        self.boxes: list[tuple[float, float, int, int]] = []
        for box in boxes:
            nx, ny = window_positions(box, self.res, self.size)
            if nx > 0 and ny > 0:
                self.boxes.append((float(box[0]), float(box[3]), nx, ny))
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
            left, top, nx, ny = self.boxes[k]
            x0 = left + int(torch.randint(nx, (1,), generator=self.generator)) * xres
            y1 = top - int(torch.randint(ny, (1,), generator=self.generator)) * yres
            yield (
                slice(x0, x0 + cols * xres, xres),
                slice(y1 - rows * yres, y1, yres),
                self.t,
            )

    def __len__(self) -> int:
        """Windows per epoch."""
        return self.length


class LabelledBatchGeoSampler(BatchGeoSampler):
    """Batches of ``labelled`` windows from some boxes and ``unlabelled`` from others.

    Each batch lists its labelled windows first. Both parts are drawn as
    :class:`RegionGeoSampler` draws them, from one generator.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: int | tuple[int, int],
        batches: int,
        labelled_boxes: Sequence[Box],
        unlabelled_boxes: Sequence[Box],
        labelled: int,
        unlabelled: int,
        generator: torch.Generator | None = None,
    ) -> None:
        """Prepare the sampler.

        Args:
            dataset: the dataset to sample.
            size: window size in pixels (rows, cols), at ``dataset.res``.
            batches: batches per epoch.
            labelled_boxes: regions of the labelled windows (dataset CRS).
            unlabelled_boxes: regions of the unlabelled windows.
            labelled: labelled windows per batch (at least 1).
            unlabelled: unlabelled windows per batch (at least 1).
            generator: random generator.

        Raises:
            ValueError: for fewer than one window of either kind per batch, or boxes
                that cannot hold a window.
        """
        super().__init__(dataset)
        if labelled < 1 or unlabelled < 1 or batches < 1:
            raise ValueError(
                f'LabelledBatchGeoSampler: labelled={labelled}, '
                f'unlabelled={unlabelled} and batches={batches} must each be >= 1.'
            )
        self.batches = batches
        self.labelled = RegionGeoSampler(
            dataset, size, batches * labelled, labelled_boxes, generator
        )
        self.unlabelled = RegionGeoSampler(
            dataset, size, batches * unlabelled, unlabelled_boxes, generator
        )
        self.sizes = (labelled, unlabelled)

    def __iter__(self) -> Iterator[list[GeoSlice]]:
        """Yield ``batches`` lists of windows, the labelled ones first."""
        lab, unl = iter(self.labelled), iter(self.unlabelled)
        nl, nu = self.sizes
        for _ in range(self.batches):
            batch: list[GeoSlice] = [next(lab) for _ in range(nl)]
            yield batch + [next(unl) for _ in range(nu)]

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.batches
