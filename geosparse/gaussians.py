r"""2D Gaussians fitted to an image around annotated points (Gaussian splatting).

Gaussian Spatial Transport (Shang and Hong, "2D Gaussians Spatial Transport for
Point-supervised Density Regression") describes each annotated object by a 2D
Gaussian whose mean is fixed at the annotation and whose shape and colour are fitted
so that the rendered Gaussians reproduce the image around the objects. Here the
image is rendered as a background colour :math:`b` (the image's per-band median:
most pixels are background) plus
one splat per annotation,

.. math::
    \hat I(p) = b + \sum_i \exp\!\big(-\tfrac12 (p - \mu_i)^\top \Sigma_i^{-1}
    (p - \mu_i)\big)\,(c_i - b),
    \qquad \Sigma_i = R(\theta_i)\,\mathrm{diag}(s_{i,1}^2, s_{i,2}^2)\,R(\theta_i)^\top,

and :math:`\log s_i`, :math:`\theta_i` and :math:`c_i` minimise the mean squared
error to the image by Adam (pure torch, no splatting binary). *Deformity
elimination* then makes every Gaussian whose axis ratio exceeds 1.5 isotropic at
its short-axis scale.

A fit is computed once per image and annotation set and cached on disk under a key
made of both (:func:`cached_fit`); a cache built for another image or other points is
never used. The Gaussians are not refitted for windows or flips: each point carries
its covariance, which a window keeps with its points
(:class:`~geosparse.datasets.SparsePoints`, ``covariances``) and a flip mirrors
(:func:`~geosparse.transforms.flip_batch`).
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .io.raster import atomic_path

__all__ = [
    'GaussianFit',
    'cached_fit',
    'clamp_scales',
    'fit_gaussians',
    'fit_key',
    'render',
]


@dataclass(frozen=True)
class GaussianFit:
    """Fitted Gaussians of one image, in its pixel coordinates (row, col).

    .. versionadded:: 0.1

    Attributes:
        means: ``(N, 2)`` annotation positions (pixel centres at integer + 0.5).
        covs: ``(N, 2, 2)`` covariances in pixels².
        colours: ``(N, C)`` fitted colours (image units).
        background: ``(C,)`` background colour.
        shape: ``(H, W)`` of the image the fit belongs to.
    """

    means: np.ndarray
    covs: np.ndarray
    colours: np.ndarray
    background: np.ndarray
    shape: tuple[int, int]

    def save(self, path: str | os.PathLike[str], key: str) -> None:
        """Write the fit and its cache ``key`` to an ``.npz`` file (atomically)."""
        with atomic_path(path, suffix='.npz') as tmp:
            np.savez(
                tmp,
                key=np.array(key),
                means=self.means,
                covs=self.covs,
                colours=self.colours,
                background=self.background,
                shape=np.array(self.shape),
            )

    @classmethod
    def load(cls, path: str | os.PathLike[str], key: str) -> GaussianFit:
        """Read a fit written by :meth:`save`.

        Raises:
            ValueError: if the file was built for another image or other points.
        """
        with np.load(path) as data:
            if str(data['key']) != key:
                raise ValueError(
                    f'{path}: this Gaussian cache was built for another image or other '
                    'annotations; delete it (or use cached_fit, which refits).'
                )
            return cls(
                data['means'],
                data['covs'],
                data['colours'],
                data['background'],
                (int(data['shape'][0]), int(data['shape'][1])),
            )


def _covariances(log_scales: Tensor, theta: Tensor) -> Tensor:
    """``(N, 2, 2)`` from log-scales ``(N, 2)`` and rotations ``(N,)``."""
    c, s = torch.cos(theta), torch.sin(theta)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)
    scale = torch.diag_embed(torch.exp(2 * log_scales))
    return rot @ scale @ rot.transpose(-1, -2)


def render(
    means: Tensor,
    covs: Tensor,
    colours: Tensor,
    background: Tensor,
    shape: tuple[int, int],
    chunk: int = 32,
    reach: float = 4.0,
) -> Tensor:
    """Render Gaussians to a ``(C, H, W)`` image (see the module doc).

    Each Gaussian is drawn only within ``reach`` standard deviations (along its
    widest axis; Gaussians are drawn in chunks of similar width) of its mean,
    beyond which its weight is below :math:`e^{-reach^2/2}` (3e-4 for 4); the cost
    is then about N x (2 reach σ)² instead of N x H x W.

    .. versionadded:: 0.1

    Args:
        means: ``(N, 2)`` (row, col) centres.
        covs: ``(N, 2, 2)`` covariances.
        colours: ``(N, C)``.
        background: ``(C,)``.
        shape: ``(H, W)``.
        chunk: Gaussians rendered at once (of similar widths; small chunks keep
            the few wide Gaussians from widening the window of many narrow ones).
        reach: truncation radius in standard deviations (``inf``: every pixel).

    Returns:
        The rendered image.
    """
    h, w = shape
    inv = torch.linalg.inv(covs)
    out = background[:, None].expand(-1, h * w).clone()
    with torch.no_grad():
        sd = torch.linalg.eigvalsh(covs)[:, -1].clamp(min=0).sqrt()
    # Chunks of similar width, each drawn within its own radius.
    order = torch.argsort(sd)
    rr, cc = torch.meshgrid(
        torch.arange(h, dtype=means.dtype),
        torch.arange(w, dtype=means.dtype),
        indexing='ij',
    )
    grid = torch.stack([rr.reshape(-1), cc.reshape(-1)], -1) + 0.5  # HW, 2
    for start in range(0, len(means), chunk):
        idx = order[start : start + chunk]
        widest = float(sd[idx].max())
        radius = math.ceil(reach * widest) if math.isfinite(reach) else max(h, w)
        mu, icov = means[idx], inv[idx]
        if 2 * radius + 1 >= max(h, w):  # every pixel
            d = grid[None] - mu[:, None]
            weight = torch.exp(-0.5 * torch.einsum('npi,nij,npj->np', d, icov, d))
            out = out + (colours[idx] - background).T @ weight
            continue
        o = torch.arange(-radius, radius + 1)
        dr, dc = torch.meshgrid(o, o, indexing='ij')
        offsets = torch.stack([dr.reshape(-1), dc.reshape(-1)], -1)  # P, 2
        pix_i = mu.detach().floor().long()[:, None] + offsets[None]  # n, P, 2
        inside = (
            (pix_i[..., 0] >= 0)
            & (pix_i[..., 0] < h)
            & (pix_i[..., 1] >= 0)
            & (pix_i[..., 1] < w)
        )
        d = pix_i.to(means.dtype) + 0.5 - mu[:, None]  # n, P, 2
        weight = torch.exp(-0.5 * torch.einsum('npi,nij,npj->np', d, icov, d)) * inside
        index = pix_i[..., 0].clamp(0, h - 1) * w + pix_i[..., 1].clamp(0, w - 1)
        contrib = (colours[idx] - background)[:, :, None] * weight[
            :, None, :
        ]  # n, C, P
        out = out.index_add(
            1, index.reshape(-1), contrib.permute(1, 0, 2).reshape(out.shape[0], -1)
        )
    return out.reshape(-1, h, w)


def fit_gaussians(
    image: np.ndarray,
    points: np.ndarray,
    steps: int = 200,
    init_scale: float = 3.0,
    lr: float = 0.05,
    max_ratio: float = 1.5,
    seed: int = 0,
    max_scale: float | None = None,
) -> GaussianFit:
    """Fit one Gaussian per point to ``image`` and eliminate deformities.

    .. versionadded:: 0.1

    Args:
        image: ``(C, H, W)`` image (any scale; fitted in that scale).
        points: ``(N, 2)`` (row, col) positions in pixels (centres at + 0.5).
        steps: Adam steps.
        init_scale: initial std of every Gaussian, in pixels.
        lr: Adam learning rate.
        max_ratio: axis ratio above which a Gaussian is made isotropic at its
            short-axis scale (deformity elimination; the paper's 1.5).
        seed: seed of the random initial rotations.
        max_scale: largest std of a Gaussian in pixels (default: a quarter of the
            image side); a prior on the objects' size, not in the paper.

    Returns:
        The fit.

    Raises:
        ValueError: for an image without points, or points outside the image.
    """
    img = torch.as_tensor(np.asarray(image, dtype=np.float32))
    if img.ndim != 3:
        raise ValueError(f'image must be (C, H, W), got shape {tuple(img.shape)}.')
    _, h, w = img.shape
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) == 0:
        raise ValueError('fit_gaussians: the image has no points; skip it.')
    outside = (pts[:, 0] < 0) | (pts[:, 0] > h) | (pts[:, 1] < 0) | (pts[:, 1] > w)
    if outside.any():
        raise ValueError(
            f'fit_gaussians: {int(outside.sum())} of {len(pts)} points lie outside the '
            f'{h} x {w} image; crop them away first.'
        )
    gen = torch.Generator().manual_seed(seed)
    means = torch.from_numpy(pts).float()
    background = img.reshape(img.shape[0], -1).median(1).values
    r = means[:, 0].long().clamp(0, h - 1)
    c = means[:, 1].long().clamp(0, w - 1)
    colours = img[:, r, c].T.clone().requires_grad_(True)
    log_scales = torch.full((len(pts), 2), math.log(init_scale)).requires_grad_(True)
    theta = (torch.rand(len(pts), generator=gen) * math.pi).requires_grad_(True)
    opt = torch.optim.Adam([colours, log_scales, theta], lr=lr)
    for _ in range(steps):
        covs = _covariances(log_scales, theta)
        loss = (render(means, covs, colours, background, (h, w)) - img).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():  # keep splats between 0.5 px and a quarter image
            log_scales.clamp_(math.log(0.5), math.log(max_scale or max(h, w) / 4))
    with torch.no_grad():
        scales = log_scales.exp()
        short = scales.min(1).values
        deformed = scales.max(1).values / short > max_ratio
        log_scales[deformed] = short[deformed, None].log()
        covs = _covariances(log_scales, theta)
    return GaussianFit(
        pts.copy(),
        covs.double().numpy(),
        colours.detach().double().numpy(),
        background.double().numpy(),
        (h, w),
    )


def clamp_scales(covs: np.ndarray, low: float, high: float) -> np.ndarray:
    r"""Covariances ``(N, 2, 2)`` with each axis std clamped to ``[low, high]`` pixels.

    With :math:`\Sigma = U\,\mathrm{diag}(s_1^2, s_2^2)\,U^\top`, the result is
    :math:`U\,\mathrm{diag}(\bar s_1^2, \bar s_2^2)\,U^\top` with
    :math:`\bar s_k = \min(\max(s_k, low), high)`: the orientation is kept. GST's
    public code clamps the fitted scales the same way before it builds the
    transport kernel (``Post_Prob_GS``: ``post_min``, ``post_max``).

    .. versionadded:: 0.3

    Raises:
        ValueError: unless ``0 < low <= high``.
    """
    if not 0 < low <= high:
        raise ValueError(
            f'clamp_scales: need 0 < low <= high, got low={low}, high={high}.'
        )
    values, vectors = np.linalg.eigh(np.asarray(covs, dtype=np.float64))
    scales = np.clip(np.sqrt(np.clip(values, 0, None)), low, high)
    return np.einsum('nik,nk,njk->nij', vectors, scales**2, vectors)


def fit_key(image: np.ndarray, points: np.ndarray, **settings: object) -> str:
    """SHA-256 of the image's bytes, the points and the fit settings.

    .. versionadded:: 0.1
    """
    digest = hashlib.sha256()
    arr = np.ascontiguousarray(image)
    digest.update(str((arr.shape, arr.dtype.str)).encode())
    digest.update(arr.tobytes())
    digest.update(np.ascontiguousarray(points, dtype=np.float64).tobytes())
    digest.update(repr(sorted(settings.items())).encode())
    return digest.hexdigest()


def cached_fit(
    image: np.ndarray,
    points: np.ndarray,
    cache_dir: str | os.PathLike[str],
    **settings: object,
) -> GaussianFit:
    """:func:`fit_gaussians`, read from ``cache_dir`` when the same fit exists there.

    The file name is the fit's key (:func:`fit_key`: image bytes, points and
    settings), and the key is checked again on reading, so a stale cache is never
    used.

    .. versionadded:: 0.1
    """
    key = fit_key(image, points, **settings)
    path = Path(cache_dir) / f'gst-{key[:32]}.npz'
    if path.exists():
        return GaussianFit.load(path, key)
    fit = fit_gaussians(image, points, **settings)  # type: ignore[arg-type]
    fit.save(path, key)
    return fit
