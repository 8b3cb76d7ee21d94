r"""An object is one connected region around its point.

One click per object says more than where each object is: the object is a single
connected region, and the click lies in it. :func:`point_components` keeps, of each
instance's mask, the connected part that holds its point and returns the rest to the
background,

.. math::

   M_i' = \mathrm{CC}(M_i, p_i),

with :math:`\mathrm{CC}(M, p)` the 8-connected component of the mask :math:`M` that
holds the pixel of the point :math:`p`. Where the point's own pixel went to another
instance or to the background, the component of :math:`M_i` nearest to the point is
kept instead, so that no instance that had pixels ends up empty. In a window of a
larger raster (``keep_edge``), pieces that reach the window's edge stay too, since
they may join their point outside it. A split by distances
(nearest point, geodesic, learned) can give a point stray pieces far from it, where
the foreground is wrong or another object's point is farther still; this removes
them. Every method's masks can take it (the benchmark scores each with and without).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ['point_components']


def point_components(
    instances: np.ndarray,
    points: np.ndarray,
    ids: np.ndarray,
    keep_edge: bool = False,
) -> np.ndarray:
    """Each instance cut to its connected component that holds its point.

    .. versionadded:: 0.1

    Args:
        instances: ``(H, W)`` integer instance ids, 0 background.
        points: ``(N, 2)`` (row, col) of the instances' points in pixels (pixel
            centres at +0.5). Points outside the array are ignored, so an
            instance with none of its points inside is removed.
        ids: ``(N,)`` the points' instance ids (several points of one id keep
            each one's component).
        keep_edge: keep every piece that touches the array's edge too: where the
            array is a window of a larger raster (a block of the block predictor),
            such a piece may join its point outside the window. Pieces wholly
            inside the window without their point are removed either way.

    Returns:
        The ids with every piece that holds none of its instance's points set to 0
        (same shape and dtype).
    """
    instances = np.asarray(instances)
    ids = np.asarray(ids).reshape(-1)
    points = np.asarray(points, dtype=float).reshape(-1, 2)
    if len(points) != len(ids):
        raise ValueError(
            f'points {points.shape} and ids {ids.shape}: give one id per point.'
        )
    h, w = instances.shape
    comp = _components(instances)
    keep = np.zeros(int(comp.max()) + 1, dtype=bool)
    rc = np.floor(points).astype(np.int64)
    inside = (rc[:, 0] >= 0) & (rc[:, 0] < h) & (rc[:, 1] >= 0) & (rc[:, 1] < w)
    rc, ids = rc[inside], ids[inside]
    at = comp[rc[:, 0], rc[:, 1]]
    own = (instances[rc[:, 0], rc[:, 1]] == ids) & (ids != 0)
    keep[at[own]] = True
    for (r, c), k in zip(rc[~own], ids[~own], strict=True):
        if k == 0:
            continue
        rows, cols = np.nonzero(instances == k)
        if len(rows):
            j = int(np.argmin((rows - r) ** 2 + (cols - c) ** 2))
            keep[comp[rows[j], cols[j]]] = True
    if keep_edge:
        for edge in (comp[0], comp[-1], comp[:, 0], comp[:, -1]):
            keep[edge] = True
    keep[0] = False
    return np.where(keep[comp], instances, np.zeros_like(instances))


def _components(instances: np.ndarray) -> np.ndarray:
    """Labels 1..K of the 8-connected regions of equal nonzero id (0: background)."""
    # Each id as a label 1..V (0 stays background), whatever the ids' values.
    dense = np.unique(instances, return_inverse=True)[1].reshape(instances.shape) + 1
    dense[instances == 0] = 0
    comp = np.zeros(instances.shape, dtype=np.int64)
    eight = np.ones((3, 3), dtype=bool)
    n = 0
    for k, box in enumerate(ndimage.find_objects(dense), start=1):
        if box is None:
            continue
        lab, m = ndimage.label(dense[box] == k, structure=eight)
        comp[box] = np.where(lab > 0, lab + n, comp[box])
        n += m
    return comp
