"""Quicklooks: imagery, coarse labels, predicted classes, uncertainty and truth."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

__all__ = ['plot_landcover', 'rgb_quicklook']


def rgb_quicklook(image: np.ndarray, bands: Sequence[int] = (0, 1, 2)) -> np.ndarray:
    """``(H, W, 3)`` RGB in 0..1 from ``(C, H, W)`` imagery, 2-98 % stretched.

    .. versionadded:: 0.1
    """
    rgb = image[list(bands)].astype(np.float32).transpose(1, 2, 0)
    lo, hi = np.percentile(rgb, (2, 98))
    return np.clip((rgb - lo) / max(hi - lo, 1e-6), 0, 1)


def plot_landcover(
    image: np.ndarray,
    prediction: np.ndarray,
    names: Sequence[str],
    colors: Sequence[tuple[int, int, int, int]],
    uncertainty: np.ndarray | None = None,
    coarse: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    title: str | None = None,
) -> Figure:
    """One row of panels: imagery, coarse labels, prediction, uncertainty, truth.

    .. versionadded:: 0.1

    Args:
        image: ``(C, H, W)`` imagery.
        prediction: ``(H, W)`` class indices.
        names: class names.
        colors: RGBA (0-255) per class.
        uncertainty: ``(H, W)`` values in 0..1.
        coarse: ``(H, W)`` coarse codes.
        truth: ``(H, W)`` class indices (negative = nodata).
        title: figure title.

    Returns:
        The figure.
    """
    cmap = ListedColormap(np.array(colors, dtype=float)[:, :3] / 255)
    panels = [('imagery', None)]
    if coarse is not None:
        panels.append(('coarse labels', None))
    panels.append(('prediction', None))
    if uncertainty is not None:
        panels.append(('uncertainty', None))
    if truth is not None:
        panels.append(('truth', None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    axes = np.atleast_1d(axes)
    k = len(names)
    for ax, (name, _) in zip(axes, panels, strict=True):
        ax.set_title(name)
        ax.set_axis_off()
        if name == 'imagery':
            ax.imshow(rgb_quicklook(image))
        elif name == 'coarse labels':
            ax.imshow(coarse, cmap='tab20', interpolation='nearest')
        elif name == 'prediction':
            ax.imshow(
                prediction, cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation='nearest'
            )
        elif name == 'uncertainty':
            im = ax.imshow(uncertainty, cmap='magma', vmin=0, vmax=1)
            fig.colorbar(im, ax=ax, fraction=0.046)
        else:
            shown = np.ma.masked_less(truth, 0)  # type: ignore[arg-type]
            ax.imshow(
                shown, cmap=cmap, vmin=-0.5, vmax=k - 0.5, interpolation='nearest'
            )
    handles = [Rectangle((0, 0), 1, 1, color=np.array(c[:3]) / 255) for c in colors]
    fig.legend(handles, list(names), loc='lower center', ncol=len(names), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig
