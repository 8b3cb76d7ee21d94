r"""Point-supervised density losses with a precomputed transport kernel: GST and Bayesian Loss.

Both losses push a predicted density map :math:`\zeta` (flattened over the density
grid, one value per cell :math:`j`) through a kernel :math:`K'` whose column
:math:`j` is the posterior probability that cell :math:`j` belongs to annotation
:math:`i = 1..N` or to the background (row :math:`N + 1`), and compare the result
with the annotation masses (one object each):

.. math::
    L = \sum_{i=1}^N \lvert 1 - (K'\zeta)_i \rvert + \lvert (K'\zeta)_{\mathrm{bg}} \rvert.

- **GST** (Shang and Hong, "2D Gaussians Spatial Transport for Point-supervised
  Density Regression"): :math:`K'` is a softmax over the Gaussian log-likelihoods
  :math:`\log \mathcal N(x_j; \mu_i, \Sigma_i)` of the fitted Gaussians
  (:mod:`geosparse.gaussians`) and a background term: the log-likelihood of the
  nearest annotation's Gaussian at Mahalanobis radius ``cutoff``, so a cell belongs
  to the background once it is further than ``cutoff`` from every Gaussian.
- **Bayesian Loss** (Ma, Wei, Hong and Gong, "Bayesian Loss for Crowd Count
  Estimation with Point Supervision", ICCV 2019): fixed isotropic Gaussians of std
  :math:`\sigma` and a background at distance
  :math:`\max(d - \min_i \lVert x_j - z_i \rVert, 0)` with :math:`d` a fraction of
  the image size (their "BL+").

The kernel is computed once per sample; the loss step is one matrix product.

Their baseline, the optimal-transport loss of **DM-Count** (Wang, Liu, Samaras and
Nguyen, "Distribution Matching for Crowd Counting", NeurIPS 2020), solves an
entropic OT problem per sample at every step instead (:func:`ot_loss`,
:func:`dm_count_loss`).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor

from ..gaussians import GaussianFit

__all__ = [
    'bayesian_kernel',
    'dm_count_loss',
    'gst_kernel',
    'kernel_shares',
    'ot_loss',
    'transport_loss',
]


def _cells(shape: tuple[int, int], stride: int, dtype: torch.dtype) -> Tensor:
    """Centres ``(J, 2)`` (row, col, image pixels) of the density grid's cells."""
    h, w = shape
    rr, cc = torch.meshgrid(
        (torch.arange(math.ceil(h / stride), dtype=dtype) + 0.5) * stride,
        (torch.arange(math.ceil(w / stride), dtype=dtype) + 0.5) * stride,
        indexing='ij',
    )
    return torch.stack([rr.reshape(-1), cc.reshape(-1)], 1)


def gst_kernel(
    fit: GaussianFit,
    stride: int = 1,
    cutoff: float = 3.0,
    sparse: bool = False,
    reach: float = 6.0,
    background: Literal['cutoff', 'growing'] = 'cutoff',
    background_ratio: float = 0.015,
) -> Tensor:
    r"""GST transport kernel :math:`K'` ``(N + 1, J)`` on a density grid of ``stride``.

    With :math:`m_n(x)` the Mahalanobis distance from cell :math:`x` to its nearest
    Gaussian :math:`n` and :math:`c` = ``cutoff``, the background's log-likelihood
    is

    - ``background='cutoff'`` (the paper's description): that of the nearest
      Gaussian at radius :math:`c`,
      :math:`-\tfrac12 c^2 - \tfrac12 \log|\Sigma_n| - \log 2\pi`, a constant
      per Gaussian, so the background takes a cell once :math:`m_n > c`;
    - ``background='growing'`` (the authors' public code, ``Post_Prob_GS``):
      :math:`-\tfrac12 c^2 + \tfrac12 m_n^2 - \log|\Sigma_n| + \log r - \log 2\pi`
      with :math:`r` = ``background_ratio`` (their 0.015): it grows with the
      distance, so the background takes a cell once
      :math:`m_n^2 > \tfrac12 c^2 + \tfrac12\log|\Sigma_n| - \log r` (about
      :math:`m_n > 3.3` for a 2-pixel Gaussian) and far cells more sharply.

    .. versionadded:: 0.1

    .. versionchanged:: 0.2
       ``background`` and ``background_ratio``.

    Args:
        fit: the image's fitted Gaussians (after crops and flips).
        stride: image pixels per density cell (the network's output stride).
        cutoff: Mahalanobis radius of the background term.
        sparse: return a sparse COO tensor holding, per Gaussian, only the cells
            within ``reach`` standard deviations (and the whole background row);
            the dense kernel holds N x J values (446 MB in float64 for 891 points
            on a 218 x 287 grid).
        reach: sparse only: radius in standard deviations; beyond it a Gaussian's
            posterior is below :math:`e^{-(reach^2 - cutoff^2)/2}` (1.4e-6 for 6 and 3).
        background: the background term (above).
        background_ratio: :math:`r` of the ``growing`` background.

    Returns:
        Column-stochastic kernel, last row the background.

    Raises:
        ValueError: for a fit without Gaussians (an image without points).
    """
    if len(fit.means) == 0:
        raise ValueError('gst_kernel: no annotations in this sample; skip it.')
    if background not in ('cutoff', 'growing'):
        raise ValueError(
            f"gst_kernel: background={background!r}; choose 'cutoff' or 'growing'."
        )
    growing = background == 'growing'
    log_r = math.log(background_ratio) if growing else 0.0
    dtype = torch.float64
    cells = _cells(fit.shape, stride, dtype)
    means = torch.from_numpy(fit.means).to(dtype)
    covs = torch.from_numpy(fit.covs).to(dtype)
    inv = torch.linalg.inv(covs)
    half_logdet = 0.5 * torch.logdet(covs)  # log |Sigma|^(1/2)
    if not sparse:
        d = cells[None] - means[:, None]  # N, J, 2
        m2 = torch.einsum('nji,nik,njk->nj', d, inv, d)
        loglik = -0.5 * m2 - half_logdet[:, None] - math.log(2 * math.pi)
        if growing:
            m2_min, nearest = m2.min(0)
            bg = 0.5 * (m2_min - cutoff**2) - 2 * half_logdet[nearest] + log_r
        else:
            nearest = loglik.argmax(0)
            bg = -0.5 * cutoff**2 - half_logdet[nearest]
        bg = bg - math.log(2 * math.pi)
        return torch.softmax(torch.cat([loglik, bg[None]]), dim=0)
    # Sparse: the cells of the grid within reach of each Gaussian.
    h = math.ceil(fit.shape[0] / stride)
    w = math.ceil(fit.shape[1] / stride)
    sd = torch.linalg.eigvalsh(covs)[:, -1].sqrt()
    rows, cols, vals = [], [], []
    for i in range(len(means)):
        rad = reach * float(sd[i]) / stride
        r0, r1 = (float(means[i, 0]) / stride - rad, float(means[i, 0]) / stride + rad)
        c0, c1 = (float(means[i, 1]) / stride - rad, float(means[i, 1]) / stride + rad)
        rr = torch.arange(max(0, math.floor(r0)), min(h, math.ceil(r1) + 1))
        cc = torch.arange(max(0, math.floor(c0)), min(w, math.ceil(c1) + 1))
        if len(rr) == 0 or len(cc) == 0:
            continue
        j = (rr[:, None] * w + cc[None]).reshape(-1)
        d = cells[j] - means[i]
        m2 = torch.einsum('ji,ik,jk->j', d, inv[i], d)
        keep = m2 <= reach**2
        rows.append(torch.full((int(keep.sum()),), i))
        cols.append(j[keep])
        vals.append(-0.5 * m2[keep] - half_logdet[i] - math.log(2 * math.pi))
    n, cells_n = len(means), h * w
    row = torch.cat(rows) if rows else torch.zeros(0, dtype=torch.long)
    col = torch.cat(cols) if cols else torch.zeros(0, dtype=torch.long)
    val = torch.cat(vals) if vals else torch.zeros(0, dtype=dtype)
    empty = torch.full((cells_n,), -torch.inf, dtype=dtype)
    top = empty.scatter_reduce(0, col, val, reduce='amax')  # for a stable softmax
    # The nearest Gaussian: by Mahalanobis distance (growing) or by likelihood.
    m2 = -2 * (val + half_logdet[row] + math.log(2 * math.pi))
    key = -m2 if growing else val
    best = empty.scatter_reduce(0, col, key, reduce='amax')
    nearest = torch.zeros(cells_n, dtype=torch.long)
    is_best = key == best[col]
    nearest[col[is_best]] = row[is_best]
    covered = torch.isfinite(top)
    if growing:
        m2_min = torch.where(covered, -best, torch.zeros_like(best))
        bg_log = 0.5 * (m2_min - cutoff**2) - 2 * half_logdet[nearest] + log_r
    else:
        bg_log = -0.5 * cutoff**2 - half_logdet[nearest]
    bg_log = bg_log - math.log(2 * math.pi)
    bg_log = torch.where(covered, bg_log, torch.zeros_like(bg_log))
    peak = torch.where(covered, torch.maximum(top, bg_log), bg_log)
    denom = torch.exp(bg_log - peak).index_add(0, col, torch.exp(val - peak[col]))
    prob = torch.exp(val - peak[col]) / denom[col]
    bg_prob = torch.exp(bg_log - peak) / denom
    index = torch.stack(
        [
            torch.cat([row, torch.full((cells_n,), n)]),
            torch.cat([col, torch.arange(cells_n)]),
        ]
    )
    return torch.sparse_coo_tensor(
        index, torch.cat([prob, bg_prob]), (n + 1, cells_n), check_invariants=True
    ).coalesce()


def kernel_shares(kernel: Tensor, stds: Tensor, widest: float) -> dict[str, float]:
    r"""Where a transport kernel sends the mass: diagnostics of :math:`K'`.

    .. versionadded:: 0.2

    Args:
        kernel: ``(N + 1, J)`` kernel (dense or sparse), last row the background.
        stds: ``(N,)`` each Gaussian's largest standard deviation (pixels).
        widest: a Gaussian counts as wide if its std is at least this.

    Returns:
        ``background``: mean background probability over the cells (the share of
        a uniform density the loss pushes to zero); ``wide_gaussians``: the share
        of Gaussians that are wide; ``wide_mass``: the share of the objects'
        posterior mass :math:`\sum_j K'_{ij}` (over the annotations) that the wide
        Gaussians hold; ``cells_per_object``: mean :math:`\sum_j K'_{ij}`, the
        cells an annotation owns; ``contested_mass``: the share of the objects'
        mass in cells that no single annotation owns by half of it,
        :math:`\max_i K'_{ij} < \tfrac12 \sum_i K'_{ij}` (where objects crowd,
        each annotation's constraint :math:`\sum_j K'_{ij} \zeta_j = 1` runs over
        cells it shares with its neighbours).

    .. versionchanged:: 0.3
       ``contested_mass``.
    """
    dense = kernel.to_dense() if kernel.is_sparse else kernel
    objects = dense[:-1]
    mass = objects.sum(1)
    wide = stds >= widest
    n = max(len(stds), 1)
    total = float(mass.sum())
    per_cell = objects.sum(0)
    top = objects.max(0).values if len(objects) else per_cell
    contested = float(per_cell[top < 0.5 * per_cell].sum())
    return {
        'background': float(dense[-1].mean()),
        'wide_gaussians': float(wide.sum()) / n,
        'wide_mass': float(mass[wide].sum()) / total if total > 0 else 0.0,
        'cells_per_object': total / n,
        'contested_mass': contested / total if total > 0 else 0.0,
    }


def bayesian_kernel(
    points: Tensor,
    shape: tuple[int, int],
    stride: int = 1,
    sigma: float = 8.0,
    background_ratio: float = 0.15,
) -> Tensor:
    r"""Bayesian Loss kernel ``(N + 1, J)`` with isotropic Gaussians and a background.

    .. versionadded:: 0.1

    Args:
        points: ``(N, 2)`` (row, col) annotations in image pixels.
        shape: ``(H, W)`` of the image.
        stride: image pixels per density cell.
        sigma: std of every Gaussian in pixels.
        background_ratio: :math:`d` as a fraction of ``min(H, W)``.

    Returns:
        Column-stochastic kernel, last row the background.

    Raises:
        ValueError: for a sample without points.
    """
    if len(points) == 0:
        raise ValueError('bayesian_kernel: no annotations in this sample; skip it.')
    dtype = torch.float64
    cells = _cells(shape, stride, dtype)
    dist2 = (cells[None] - points.to(dtype)[:, None]).square().sum(-1)  # N, J
    loglik = -0.5 * dist2 / sigma**2
    d = background_ratio * min(shape)
    bg = (d - dist2.min(0).values.sqrt()).clamp(min=0)
    background = -0.5 * bg.square() / sigma**2
    return torch.softmax(torch.cat([loglik, background[None]]), dim=0)


def transport_loss(density: Tensor, kernel: Tensor) -> Tensor:
    r""":math:`\sum_i |1 - (K'\zeta)_i| + |(K'\zeta)_{bg}|` for one sample.

    .. versionadded:: 0.1

    Args:
        density: ``(h, w)`` predicted density on the kernel's grid.
        kernel: ``(N + 1, h * w)`` from :func:`gst_kernel` (dense or sparse) or
            :func:`bayesian_kernel`.

    Returns:
        Scalar loss.

    Raises:
        ValueError: if the density and the kernel's grid differ.
    """
    if density.numel() != kernel.shape[1]:
        raise ValueError(
            f'density has {density.numel()} cells but the kernel {kernel.shape[1]}; '
            'build the kernel with the network output stride.'
        )
    flat = density.reshape(-1)
    if kernel.is_sparse:
        mass = torch.sparse.mm(kernel.to(density.dtype), flat[:, None])[:, 0]
    else:
        mass = kernel.to(density.dtype) @ flat
    return (1 - mass[:-1]).abs().sum() + mass[-1].abs()


def ot_loss(
    density: Tensor,
    points: Tensor,
    reg: float = 1.0,
    iterations: int = 100,
    stride: int = 1,
) -> Tensor:
    r"""DM-Count's optimal-transport term for one sample (a surrogate with its gradient).

    The normalised density :math:`\hat z = \zeta / \lVert \zeta \rVert_1` and the
    normalised annotations (mass :math:`1/N` at each point :math:`z_i`) are compared
    by the entropic OT cost :math:`W_\varepsilon(\hat z, \mathbf 1/N)` with the
    squared Euclidean cost :math:`C_{ij} = \lVert z_i - x_j \rVert^2` (pixels²,
    cell centres :math:`x_j`) and regularisation :math:`\varepsilon` = ``reg``,
    solved by ``iterations`` log-domain Sinkhorn iterations (POT's
    ``sinkhorn_log``). With :math:`\beta` the optimal dual potential of the density
    side, the gradient of the OT cost with respect to the unnormalised density is
    (DM-Count, eq. 7)

    .. math::
        \frac{\partial W}{\partial \zeta}
        = \frac{\beta}{\lVert\zeta\rVert_1}
        - \frac{\langle \beta, \zeta \rangle}{\lVert\zeta\rVert_1^2},

    and, as in the authors' code, the returned value is
    :math:`\langle \zeta, \mathrm{sg}(\partial W / \partial \zeta) \rangle`, whose
    gradient is that one (:math:`\mathrm{sg}`: no gradient through it). A constant
    added to :math:`\beta` cancels, so the potential's gauge does not matter.

    The transport runs on the density summed over cells of ``stride`` pixels (cell
    centres :math:`x_j`), as DM-Count runs it on its network's stride-8 output: the
    cost of a Sinkhorn iteration is :math:`N \times J`, so a 64-pixel window with
    50 points costs 50 x 4096 per iteration at stride 1 and a quarter of that at
    stride 2. The gradient reaches every pixel of a cell equally.

    Deviation: DM-Count uses :math:`\varepsilon = 10` in pixels² on cells of 8
    pixels, a blur :math:`\sqrt{\varepsilon}` of 0.4 cells; for small objects
    (trees of a few pixels) the default :math:`\varepsilon = 1` px² on cells of 2
    (the tasks' default ``ot_stride``) keeps a blur of half a cell.

    .. versionadded:: 0.2

    Args:
        density: ``(h, w)`` non-negative density, one cell per pixel.
        points: ``(N, 2)`` (row, col) annotations in pixels (centres at + 0.5),
            at least one.
        reg: entropic regularisation :math:`\varepsilon` in pixels².
        iterations: Sinkhorn iterations (DM-Count: 100).
        stride: pixels per transport cell (edge cells cover what is left).

    Returns:
        Scalar surrogate (its value is not the transport cost, its gradient is).

    Raises:
        ValueError: for a sample without points (the count term alone applies
            there).
    """
    import ot  # POT: its import takes a second, so only when this loss is used

    if len(points) == 0:
        raise ValueError('ot_loss: no annotations in this sample; skip it.')
    h, w = density.shape
    # Single precision: the potentials only give a gradient, and 100 iterations of
    # log-sum-exp over N x J take 60 % of the time they take in double.
    cells = _cells((h, w), stride, torch.float32).to(density.device)
    cost = torch.cdist(points.to(cells), cells).square()  # N, J
    if stride > 1:
        ph, pw = -h % stride, -w % stride
        padded = torch.nn.functional.pad(density, (0, pw, 0, ph))
        hs, ws = padded.shape[0] // stride, padded.shape[1] // stride
        flat = padded.reshape(hs, stride, ws, stride).sum((1, 3)).reshape(-1)
    else:
        flat = density.reshape(-1)
    with torch.no_grad():
        z = flat.detach().float()
        total = z.sum()
        source = z / total.clamp_min(1e-12)
        target = torch.full((len(points),), 1.0 / len(points)).to(cells)
        _, log = ot.sinkhorn(
            target,
            source.clamp_min(1e-30),  # log-domain: no zero mass
            cost,
            reg,
            method='sinkhorn_log',
            numItermax=iterations,
            stopThr=0.0,
            log=True,
            warn=False,
        )
        beta = reg * log['log_v']
        grad = beta / (total + 1e-8) - (z * beta).sum() / (total * total + 1e-8)
    return (flat * grad.to(flat.dtype)).sum()


def dm_count_loss(
    density: Tensor,
    points: Tensor,
    reg: float = 1.0,
    iterations: int = 100,
    ot_weight: float = 0.1,
    tv_weight: float = 0.01,
    stride: int = 1,
) -> Tensor:
    r"""The whole DM-Count loss of one sample: count, OT and total-variation terms.

    .. math::
        L = \big|\lVert\zeta\rVert_1 - N\big|
        + \lambda_1\, L_{OT}(\zeta, z)
        + \lambda_2\, N \cdot \tfrac12 \big\lVert \hat z - \hat\delta \big\rVert_1,

    with :math:`L_{OT}` from :func:`ot_loss`, :math:`\hat\delta` the normalised
    map of the points (one unit per point, at its pixel), and the paper's weights
    :math:`\lambda_1 = 0.1`, :math:`\lambda_2 = 0.01`. The OT term only matches the
    *shape* of the density; the count term fixes its mass. A window without points
    has the count term alone, :math:`\lVert\zeta\rVert_1`. (The authors' code sums
    :math:`|\hat z - \hat\delta|` without the 1/2 of the TV norm; the factor is kept
    out of the weight here to follow the paper.)

    .. versionadded:: 0.2

    Args:
        density: ``(h, w)`` non-negative density.
        points: ``(N, 2)`` (row, col) annotations in pixels.
        reg: :func:`ot_loss`'s :math:`\varepsilon` in pixels².
        iterations: Sinkhorn iterations.
        ot_weight: :math:`\lambda_1`.
        tv_weight: :math:`\lambda_2`.
        stride: pixels per transport cell of the OT term (the count and TV terms
            use every pixel).

    Returns:
        Scalar loss.
    """
    total = density.sum()
    n = len(points)
    if n == 0:
        return total
    h, w = density.shape
    r = points[:, 0].floor().long().clamp(0, h - 1)
    c = points[:, 1].floor().long().clamp(0, w - 1)
    delta = torch.zeros(h * w, dtype=density.dtype, device=density.device)
    delta = delta.index_add(0, r * w + c, torch.ones_like(r, dtype=density.dtype))
    normed = density.reshape(-1) / total.clamp_min(1e-8)
    tv = 0.5 * (normed - delta / n).abs().sum() * n
    count = (total - n).abs()
    return (
        count
        + ot_weight * ot_loss(density, points, reg, iterations, stride)
        + tv_weight * tv
    )
