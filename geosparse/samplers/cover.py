"""Windows that cover every raster exactly, without overhang."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from torchgeo.datasets import GeoDataset
from torchgeo.samplers.utils import _to_tuple

from ..compat import GeoSampler

__all__ = ['CoverGeoSampler', 'cover_offsets']


def cover_offsets(length: float, size: float, stride: float) -> list[float]:
    """Offsets of windows of ``size`` covering ``[0, length]`` with ``stride``.

    The last window is shifted back to end at ``length`` (TorchGeo's GridGeoSampler
    lets it overhang the raster instead, which pads with nodata).

    .. versionadded:: 0.1

    Args:
        length: extent to cover.
        size: window size.
        stride: distance between window starts.

    Returns:
        Window starts, increasing, the last one at ``max(0, length - size)``.
    """
    if length <= size:
        return [0.0]
    n = math.ceil((length - size) / stride) + 1
    starts = [min(i * stride, length - size) for i in range(n)]
    return sorted(set(starts))


class CoverGeoSampler(GeoSampler):
    """Grid of windows over each indexed raster, last row/column kept inside.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        dataset: GeoDataset,
        size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        rois: Sequence[tuple[float, float, float, float]] | None = None,
    ) -> None:
        """Build the windows.

        Args:
            dataset: dataset to cover.
            size: window size in pixels.
            stride: stride in pixels (default: ``size``).
            rois: cover only these boxes ``(xmin, ymin, xmax, ymax)`` (dataset CRS)
                of each raster, each on its own grid of windows.
        """
        super().__init__(dataset)
        sy, sx = _to_tuple(size)
        st = _to_tuple(stride or size)
        rx, ry = self.res
        self.windows: list[tuple[slice, slice, slice]] = []
        for i in range(len(self.index)):
            bounds = self.index.geometry.iloc[i].bounds
            t = self.index.index[i]
            for roi in rois or [bounds]:
                xmin, ymin = max(bounds[0], roi[0]), max(bounds[1], roi[1])
                xmax, ymax = min(bounds[2], roi[2]), min(bounds[3], roi[3])
                if xmax <= xmin or ymax <= ymin:
                    continue
                for oy in cover_offsets(ymax - ymin, sy * ry, st[0] * ry):
                    for ox in cover_offsets(xmax - xmin, sx * rx, st[1] * rx):
                        x0 = xmin + ox
                        y1 = ymax - oy
                        self.windows.append(
                            (
                                slice(x0, x0 + sx * rx),
                                slice(y1 - sy * ry, y1),
                                slice(t.left, t.right),
                            )
                        )

    def __iter__(self) -> Iterator[tuple[slice, slice, slice]]:
        """Yield the windows."""
        yield from self.windows

    def __len__(self) -> int:
        """Number of windows."""
        return len(self.windows)
