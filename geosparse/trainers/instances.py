r"""Instance masks from one point per object, as a TorchGeo task.

:class:`PointInstanceTask` trains the learnable pixel-to-instance distance of
:class:`~geosparse.models.LearnableDistance` (ECCV 2024, "Point-Supervised Panoptic
Segmentation via Estimating Pseudo Labels from Learnable Distance") on batches of
:class:`~geosparse.datamodules.PointInstanceDataModule`: ``image``, ``points``
``(B, N, 2)``, ``valid``, and ``values`` ``(B, N, 3)`` = (instance id, class,
background). The loss, on every round's distance (deep supervision), is

.. math::

   L = \frac{1}{R + 1} \sum_{r=0}^{R} \Big( L_\mathrm{point}(D^r)
       + \beta\, L_\mathrm{pair}(D^r) \Big) + L_\mathrm{fg}(z)

with :func:`~geosparse.losses.point_query_loss`,
:func:`~geosparse.losses.affinity_loss` (weight :math:`\beta`, ``pairwise_weight``)
and, for the network's foreground head :math:`z` (``foreground='head'``, the
default), :func:`~geosparse.losses.foreground_loss` (the same points and pairwise
term). The point term is on the whole distance, as the paper has it. At a query's
own point the hand-crafted term is 0 and the others' is positive, so the term is
nearly met from the start: it keeps the appearance from overriding the hand-crafted
partition at the points, and teaches the stuff queries the background points, while
the pairwise term moves the boundaries where the colours say. (Until 0.1's head the
point term was on the appearance term alone, a contrastive embedding of the points;
on the tuning scenes, generated seeds 10-12 with the true foreground, it split the
roofs worse than the geodesic, instance IoU 0.669 against 0.759, and 0.752 on the
whole distance: ``python benchmarks/point_instances.py --synthetic --seeds 10 11 12
--foreground truth``.) The paper's ablation switches are hyperparameters:
``rounds``, ``aggregation``, ``enhancement``.

Pseudo labels (:meth:`~geosparse.trainers.PointInstanceTask.pseudo_labels`): the
pixels the foreground head calls objects, and whose nearest thing query is less than
a margin :math:`\delta` (``stuff_margin``, default 64) farther than their nearest
stuff query,

.. math::

   z_1(p) > z_0(p) \quad\text{and}\quad
   \min_{i \in \mathrm{thing}} D_i(p) - \min_{j \in \mathrm{stuff}} D_j(p) < \delta ,

take the thing query at the smallest distance of the last round (its point's id), the
others 0. The stuff distances have no hand-crafted term, so the margin bounds each
object to where its point reaches (with the default geodesic term, roughly
:math:`G_i(p) < s\sqrt{\delta / \lambda_i}`), which a foreground head trained on a
few dozen points does not: on a wooded SpaceNet suburb the head called 42 % of the
pixels buildings (4.5 % are). :math:`\delta` was chosen on the tuning scenes
(generated seeds 10 and 11, the left half of the SpaceNet tile) and checked on
others, ``docs/capabilities/instances.md``. Each object is then cut to the connected
piece of its mask that holds its point (``connected``, on by default, in
:meth:`~geosparse.trainers.PointInstanceTask.predict_instances` and validation;
:func:`~geosparse.instances.point_components`): one click marks one region, so
pieces elsewhere (where the head's foreground strays) return to the background.
The uncertainty is the margin between the two smallest distances,
:math:`u = \exp(-(D_{(2)} - D_{(1)}) / \tau) = A_{(2)} / A_{(1)} \in (0, 1]`, the
ratio of the two largest soft assignments (1: a tie, near 0: one clear query). With
``foreground='queries'`` every pixel takes the nearest query, thing or stuff (the
paper's panoptic reading).

Stage 1 is transductive, as in the paper: the distance is trained on the imagery
whose points it turns into masks. The paper's stage 2 (a panoptic model trained on
the pseudo masks, which needs no points on new imagery) is not part of this task.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from ..compat import BaseTask
from ..instances.baselines import (
    EDGE_WEIGHT,
    geodesic_instances,
    geodesic_point_distances,
    margin_uncertainty,
)
from ..instances.components import point_components
from ..instances.metrics import instance_scores
from ..losses.instances import (
    affinity_loss,
    colour_similarity,
    foreground_loss,
    point_query_loss,
)
from ..models.distance import DistanceOutput, LearnableDistance, standardise
from .utils import FiniteTraining

__all__ = ['COLOUR_SCALE', 'STUFF_MARGIN', 'InstancePrediction', 'PointInstanceTask']

#: Default :math:`\delta` of :class:`PointInstanceTask` (``stuff_margin``): see there
#: for what it bounds and ``docs/capabilities/instances.md`` for the scenes that chose it.
STUFF_MARGIN = 64.0

#: Default :math:`t` of :class:`PointInstanceTask` (``colour_scale``), the region-colour
#: term of :class:`~geosparse.models.LearnableDistance`, in standard deviations of the
#: window's bands; chosen on generated tuning scenes (``docs/capabilities/instances.md``).
COLOUR_SCALE = 0.6


@dataclass
class InstancePrediction:
    """Pseudo labels of one window (:meth:`PointInstanceTask.predict_instances`).

    .. versionadded:: 0.1

    Attributes:
        instances: ``(H, W)`` int64 instance ids (a point's id; 0 background).
        uncertainty: ``(H, W)`` float32 margin uncertainty in (0, 1] (NaN on nodata).
        foreground: ``(H, W)`` pixels whose nearest query is an object's.
        distances: ``(R + 1, Q, H, W)`` float32 distances per round, queries as
            ``ids`` followed by the learnable stuff queries.
        ids: ``(Q,)`` the id of each query (0 for stuff).
    """

    instances: np.ndarray
    uncertainty: np.ndarray
    foreground: np.ndarray
    distances: np.ndarray
    ids: np.ndarray


def _foreground_logits(out: DistanceOutput) -> Tensor:
    """The foreground head's logits of ``out``; an error if it was not run."""
    if out.foreground is None:
        raise ValueError(
            "foreground='head' needs the distance's foreground head: call the model "
            'with foreground=True.'
        )
    return out.foreground


class PointInstanceTask(FiniteTraining, BaseTask):
    """Learnable pixel-to-instance distance from points (see the module doc).

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        in_channels: int = 3,
        backbone: str = 'resnet18',
        feature_dim: int = 32,
        stuff_queries: int = 4,
        rounds: int = 2,
        aggregation: bool = True,
        enhancement: bool = True,
        scale: float = 32.0,
        prior: Literal['geodesic', 'euclidean'] = 'geodesic',
        edge_weight: float = EDGE_WEIGHT,
        edge_sigma: float = 1.0,
        temperature: float = 1.0,
        pairwise_weight: float = 1.0,
        pairwise_dilation: int = 2,
        pairwise_theta: float = 0.5,
        pairwise_threshold: float = 0.3,
        foreground: Literal['head', 'queries'] = 'head',
        stuff_margin: float = STUFF_MARGIN,
        connected: bool = True,
        separate_foreground: bool = True,
        colour_scale: float | None = COLOUR_SCALE,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        window: int | None = None,
    ) -> None:
        r"""Describe the model and its training.

        Args:
            in_channels: image bands.
            backbone: ResNet encoder of the pixel-feature U-Net.
            feature_dim: feature and query size.
            stuff_queries: learnable background queries.
            rounds: refinement rounds :math:`R` (paper: saturates at 2-3).
            aggregation: query aggregating in each round.
            enhancement: query enhancing in each round.
            scale: pixels, about an object's radius (hand-crafted term of the distance).
            prior: the hand-crafted term: ``geodesic``, the distance on image edges
                of :func:`~geosparse.instances.geodesic_point_distances` (PSPS-style
                cost), or ``euclidean``.
            edge_weight: :math:`\lambda` of the geodesic edge cost (default
                :data:`~geosparse.instances.EDGE_WEIGHT`; also what ``geosparse
                predict --split geodesic`` uses).
            edge_sigma: Gaussian smoothing (pixels) of the geodesic's edge strength.
            temperature: :math:`\tau` of the soft assignments.
            pairwise_weight: :math:`\beta`, weight of the pairwise term.
            pairwise_dilation: neighbour distance of the pairwise term, pixels.
            pairwise_theta: colour scale :math:`\theta` (standard deviations).
            pairwise_threshold: similarity :math:`\kappa` above which pairs count.
            foreground: which pixels are objects: ``head``, the network's
                foreground head (trained with
                :func:`~geosparse.losses.foreground_loss`), its objects then divided
                between the thing queries by their distances; ``queries``, the
                pixels whose nearest query is a thing query (the paper's panoptic
                reading, and this task's before 0.1's head).
            stuff_margin: :math:`\delta` of ``foreground='head'``: a pixel the head
                calls an object stays one only where its nearest thing query is
                less than :math:`\delta` farther than its nearest stuff query,
                :math:`\min_{i \in \mathrm{thing}} D_i(p) - \min_{j \in
                \mathrm{stuff}} D_j(p) < \delta` (``inf``: the head alone, as
                before the margin existed; 0: the head's objects whose nearest
                query is a thing).
                Stuff distances have no hand-crafted term, so this bounds each
                object to where its point reaches, which a head trained on a few
                points does not.
            connected: each object is cut to the connected piece of its mask that
                holds its point (:func:`~geosparse.instances.point_components`):
                an object is one region around its click, so pieces of its mask
                elsewhere go to the background. Applies to the pseudo labels of
                :meth:`predict_instances` (so to ``geosparse predict``, either
                split), where pieces that reach the window's edge stay (a window
                may be a block of a larger raster, and such a piece may join its
                point outside it), and of validation, which scores each window as a
                whole scene (no piece kept for touching its edge). Checkpoints from
                before this option load without it.
            separate_foreground: the foreground head is a U-Net of its own (the
                default) or a 1 x 1 convolution of the distance's pixel features
                (see :class:`~geosparse.models.LearnableDistance`). Checkpoints
                written before this choice existed load with the 1 x 1 head they
                were trained with.
            colour_scale: :math:`t` of the region-colour term of the distance,
                from round 1 on (standard deviations of the window's bands; default
                :data:`COLOUR_SCALE`; None: no such term); see
                :class:`~geosparse.models.LearnableDistance`. Checkpoints from before
                this option load without it.
            lr: AdamW learning rate.
            weight_decay: AdamW weight decay.
            window: side of the training windows, pixels. Set from the data module's
                ``patch_size`` when training starts (and saved in the checkpoint), so
                that prediction uses blocks of the size the distance was trained on:
                the distance learned on windows of 128 pixels did worse on larger
                windows, which hold many more queries.
        """
        super().__init__()
        if foreground not in ('head', 'queries'):
            raise ValueError(
                f"foreground={foreground!r}: choose 'head' (the foreground head) or "
                "'queries' (the nearest query decides)."
            )
        if not stuff_margin >= 0:  # also NaN
            raise ValueError(
                f'stuff_margin={stuff_margin!r}: give a margin >= 0 (inf: the '
                "foreground head alone, without the stuff queries' bound)."
            )
        if prior not in ('geodesic', 'euclidean'):
            raise ValueError(
                f"prior={prior!r}: choose 'geodesic' or 'euclidean' (the hand-crafted "
                'term of the distance).'
            )

    def configure_models(self) -> None:
        """The :class:`~geosparse.models.LearnableDistance` network."""
        hp = self.hparams
        self.model = LearnableDistance(
            in_channels=hp['in_channels'],
            backbone=hp['backbone'],
            feature_dim=hp['feature_dim'],
            stuff_queries=hp['stuff_queries'],
            rounds=hp['rounds'],
            aggregation=hp['aggregation'],
            enhancement=hp['enhancement'],
            scale=hp['scale'],
            separate_foreground=hp.get('separate_foreground', True),
            colour_scale=hp.get('colour_scale'),
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Rebuild a checkpoint from before ``separate_foreground`` with its 1 x 1 head.

        Its hyperparameters lack the key, so the task was built with the default (a
        separate U-Net), which its weights do not fit.
        """
        super().on_load_checkpoint(checkpoint)
        if 'stuff_margin' not in checkpoint.get('hyper_parameters', {}):
            self.hparams['stuff_margin'] = float('inf')  # the head alone, as trained
        if 'connected' not in checkpoint.get('hyper_parameters', {}):
            self.hparams['connected'] = False  # its masks as it made them
        if 'colour_scale' not in checkpoint.get('hyper_parameters', {}):
            self.hparams['colour_scale'] = None  # its distance as trained
            self.model.colour_scale = None
        if 'separate_foreground' not in checkpoint.get('hyper_parameters', {}):
            self.hparams['separate_foreground'] = False
            self.configure_models()

    def on_fit_start(self) -> None:
        """Remember the data module's window size (``window``) for prediction.

        A data module without background points (no ``background_column``) cannot
        teach the foreground head what background is (its cross-entropy would only
        ever say "object"): the task then falls back to ``foreground='queries'``,
        with a warning that names the fix, and saves that in its hyperparameters.
        """
        dm = getattr(self.trainer, 'datamodule', None)
        size = getattr(dm, 'patch_size', None)
        if self.hparams.get('window') is None and size is not None:
            side = size if isinstance(size, int) else size[0]
            self.hparams['window'] = int(side)
        hp = getattr(dm, 'hparams', None)
        if (
            self.hparams['foreground'] == 'head'
            and hp is not None
            and hp.get('background_column') is None
        ):
            warnings.warn(
                'PointInstanceTask: the points have no background points '
                '(background_column), so the foreground head cannot learn background; '
                "the nearest query decides instead (foreground='queries'). Give "
                'background clicks and background_column for the head.',
                stacklevel=2,
            )
            self.hparams['foreground'] = 'queries'

    def configure_optimizers(self) -> Any:
        """AdamW at a constant learning rate (stage 1 runs a fixed number of steps)."""
        return torch.optim.AdamW(
            self.parameters(),
            lr=self.hparams['lr'],
            weight_decay=self.hparams['weight_decay'],
        )

    def exclude_pixels(self, batch: dict[str, Any], bad: Tensor) -> bool:
        """Points on nodata pixels leave the loss; pairs there too (see compute_loss)."""
        batch['nodata'] = bad
        return super().exclude_pixels(batch, bad)

    def hand_crafted(
        self, image: Tensor, points: Tensor, valid: Tensor
    ) -> Tensor | None:
        """``(B, N, H, W)`` geodesic distances of the points, or None (Euclidean).

        Computed with scipy on the CPU (no gradient: a fixed input of the distance),
        for the points in ``valid`` only; the others get :math:`10^4`. Pass the
        object points: background points are stuff queries, whose distance has no
        hand-crafted term.
        """
        if self.hparams['prior'] != 'geodesic':
            return None
        b, n = valid.shape
        h, w = image.shape[-2:]
        out = np.full((b, n, h, w), 1e4, dtype=np.float32)
        img = image.detach().cpu().numpy()
        pts = points.detach().cpu().numpy()
        ok = valid.detach().cpu().numpy()
        for i in range(b):
            if ok[i].any():
                out[i, ok[i]] = geodesic_point_distances(
                    np.nan_to_num(img[i]),
                    pts[i, ok[i]],
                    edge_weight=self.hparams['edge_weight'],
                    sigma=self.hparams['edge_sigma'],
                )
        return torch.from_numpy(out).to(image.device)

    def forward_batch(self, batch: dict[str, Any]) -> DistanceOutput:
        """The network on a batch: its points, with background points as stuff."""
        values = batch['values']
        background = values[..., 2] > 0.5 if values.shape[-1] > 2 else None
        objects = batch['valid'] if background is None else batch['valid'] & ~background
        return self.model(
            batch['image'],
            batch['points'],
            batch['valid'],
            background,
            self.hparams['temperature'],
            self.hand_crafted(batch['image'], batch['points'], objects),
            foreground=self.hparams['foreground'] == 'head',
        )

    def compute_loss(
        self, batch: dict[str, Any], out: DistanceOutput
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The loss of the module doc, and its two terms (of the last round)."""
        hp = self.hparams
        tau = hp['temperature']
        sim = colour_similarity(
            standardise(batch['image']), hp['pairwise_dilation'], hp['pairwise_theta']
        )
        nodata = batch.get('nodata')
        pixel_valid = None if nodata is None else ~nodata
        total = batch['image'].new_zeros(())
        for dist in out.distances:
            lp = point_query_loss(
                dist, batch['points'], batch['valid'], out.stuff, out.query_valid, tau
            )
            la = affinity_loss(
                dist, sim, out.query_valid, hp['pairwise_threshold'], tau, pixel_valid
            )
            total = total + lp + hp['pairwise_weight'] * la
        loss = total / len(out.distances)
        terms = {'point': lp.detach(), 'pairwise': la.detach()}
        if hp['foreground'] == 'head':
            # the background points are the point queries that are stuff
            lf = foreground_loss(
                _foreground_logits(out),
                batch['points'],
                batch['valid'],
                out.stuff[:, : batch['points'].shape[1]],
                sim,
                hp['pairwise_threshold'],
                pixel_valid,
                hp['pairwise_weight'],
            )
            loss = loss + lf
            terms['foreground'] = lf.detach()
        return loss, terms

    def training_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> Tensor:
        """One step of the loss of the module doc."""
        out = self.forward_batch(batch)
        loss, terms = self.compute_loss(batch, out)
        b = batch['image'].shape[0]
        self.log('train_loss', loss, batch_size=b)
        self.log_dict({f'train_{k}_loss': v for k, v in terms.items()}, batch_size=b)
        return loss

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Validation loss, and the pseudo masks scored against the polygons.

        With ``instances`` in the batch (the data module's polygons), each window's
        pseudo labels are scored by :func:`~geosparse.instances.instance_scores`
        (``val_instance_iou``, ``val_pq``, ``val_miou``, means over windows).
        """
        out = self.forward_batch(batch)
        loss, _ = self.compute_loss(batch, out)
        b = batch['image'].shape[0]
        self.log('val_loss', loss, batch_size=b)
        if 'instances' not in batch:
            return
        ids = batch['values'][..., 0]
        pred, _ = self.pseudo_labels(
            out,
            ids,
            self.hparams['temperature'],
            self.hparams['foreground'],
            self.hparams.get('stuff_margin', float('inf')),
        )
        objects = batch['valid'] & (batch['values'][..., 2] < 0.5)
        for i in range(b):
            point_ids = ids[i][objects[i]].long().cpu().numpy()
            if not len(point_ids):
                continue
            masks = pred[i].cpu().numpy()
            if self.hparams.get('connected', False):
                points = batch['points'][i][objects[i]].cpu().numpy()
                masks = point_components(masks, points, point_ids)
            scores = instance_scores(
                masks,
                batch['instances'][i].cpu().numpy(),
                point_ids=point_ids,
            )
            self.log_dict(
                {f'val_{k}': float(scores[k]) for k in ('instance_iou', 'pq', 'miou')},
                batch_size=1,
            )

    @staticmethod
    def pseudo_labels(
        out: DistanceOutput,
        ids: Tensor,
        temperature: float = 1.0,
        foreground: Literal['head', 'queries'] = 'queries',
        stuff_margin: float = float('inf'),
    ) -> tuple[Tensor, Tensor]:
        r"""Instance ids ``(B, H, W)`` and margin uncertainty of the last round.

        With ``foreground='head'``, the pixels the foreground head calls objects
        (:math:`z_1 > z_0`) and whose nearest thing query is less than
        :math:`\delta` (``stuff_margin``) farther than their nearest stuff query
        take the nearest thing query, the others 0; the
        uncertainty is the margin between the two nearest thing queries on objects
        and the ratio of the two classes' probabilities,
        :math:`\exp(-|z_1 - z_0|)`, on background. With ``queries``, every pixel
        takes the nearest query (stuff: 0) and its margin.

        Args:
            out: the network's output.
            ids: ``(B, N)`` the points' instance ids (stuff and padding: any value).
            temperature: :math:`\tau`.
            foreground: ``head`` or ``queries`` (see above).
            stuff_margin: :math:`\delta` (``head`` only; ``inf``: the head alone).
        """
        dist = out.distances[-1]
        b, q = dist.shape[:2]
        query_ids = torch.zeros(b, q, dtype=torch.long, device=dist.device)
        n = ids.shape[1]
        query_ids[:, :n] = ids.long()
        query_ids = query_ids.masked_fill(out.stuff | ~out.query_valid, 0)
        reach = None
        if foreground == 'head':
            thing = (out.query_valid & ~out.stuff)[..., None, None]
            if math.isfinite(stuff_margin) and bool(
                (out.stuff & out.query_valid).any()
            ):
                stuff = dist.masked_fill(
                    thing | ~out.query_valid[..., None, None], float('inf')
                )
                reach = (
                    dist.masked_fill(~thing, float('inf')).amin(1) - stuff.amin(1)
                    < stuff_margin
                )
            dist = dist.masked_fill(~thing, float('inf'))
        best = dist.topk(min(2, q), dim=1, largest=False)
        nearest = best.indices[:, 0]
        instances = query_ids.gather(1, nearest.flatten(1)).view_as(nearest)
        if q > 1:
            gap = (best.values[:, 1] - best.values[:, 0]).nan_to_num(float('inf'))
            uncertainty = torch.exp(-gap / temperature)
        else:
            uncertainty = torch.zeros_like(nearest, dtype=dist.dtype)
        if foreground == 'head':
            z = _foreground_logits(out)
            objects = z[:, 1] > z[:, 0]
            if reach is not None:
                objects = objects & reach
            instances = instances.masked_fill(~objects, 0)
            uncertainty = torch.where(
                objects, uncertainty, torch.exp(-(z[:, 1] - z[:, 0]).abs())
            )
        return instances, uncertainty

    @property
    def default_split(self) -> Literal['learned', 'geodesic']:
        """How :func:`~geosparse.inference.predict_instances` divides the foreground by default.

        ``learned`` for a distance with the region-colour term (``colour_scale`` set,
        the default since 0.8): on the generated tuning scenes (seeds 10-12) its own
        split beat the geodesic split of the same foreground, 0.776 / 0.694 against
        0.768 / 0.688 (instance IoU / PQ). ``geodesic`` for a distance without it
        (older checkpoints, ``colour_scale=None``), whose geodesic split measured
        better on the scene that chose that default (``docs/capabilities/instances.md``).

        .. versionadded:: 0.8
        """
        return 'geodesic' if self.hparams.get('colour_scale') is None else 'learned'

    def _geodesic_split(
        self,
        x: Tensor,
        pts: Tensor,
        ids: Tensor,
        bg: Tensor,
        inst: Tensor,
        unc: Tensor,
        prior: Tensor | None,
    ) -> tuple[Tensor, Tensor]:
        """The task's foreground divided by the geodesic baseline (see predict_instances).

        ``prior``: the geodesic distances :meth:`hand_crafted` already computed for
        the window's points (reused for the margin), or None to compute them.
        """
        obj = ~bg
        if not bool(obj.any()):
            return inst, unc
        image = np.nan_to_num(x.cpu().numpy())
        points = pts[obj].cpu().numpy()
        foreground = (inst > 0).cpu().numpy()
        hp = self.hparams
        split = geodesic_instances(
            image,
            points,
            ids[obj].cpu().numpy(),
            foreground,
            edge_weight=hp['edge_weight'],
            sigma=hp['edge_sigma'],
        )
        if prior is not None:
            dist = prior[0][obj].cpu().numpy()
        else:
            dist = geodesic_point_distances(
                image, points, edge_weight=hp['edge_weight'], sigma=hp['edge_sigma']
            )
        margin = margin_uncertainty((dist / hp['scale']) ** 2)
        new_unc = np.where(foreground, margin, unc.cpu().numpy())
        return (
            torch.from_numpy(split).to(inst.device),
            torch.from_numpy(new_unc.astype(np.float32)).to(unc.device),
        )

    @staticmethod
    def _connected(
        inst: Tensor, unc: Tensor, pts: Tensor, ids: Tensor, out: DistanceOutput
    ) -> tuple[Tensor, Tensor]:
        """``inst`` (H, W) cut to each point's piece, by point_components.

        Pieces at the window's edge stay (a window may be a block of a larger
        raster); removed pixels get the head's background uncertainty (or keep
        theirs without a head).
        """
        before = inst.cpu().numpy()
        cut = point_components(
            before, pts.cpu().numpy(), ids.cpu().numpy(), keep_edge=True
        )
        removed = torch.from_numpy((before > 0) & (cut == 0)).to(inst.device)
        if out.foreground is not None:
            z = _foreground_logits(out)[0]
            unc = torch.where(removed, torch.exp(-(z[1] - z[0]).abs()), unc)
        return torch.from_numpy(cut).to(inst.device), unc

    @torch.no_grad()
    def predict_instances(
        self,
        image: Tensor | np.ndarray,
        points: Tensor | np.ndarray,
        ids: Tensor | np.ndarray,
        background: Tensor | np.ndarray | None = None,
        split: Literal['learned', 'geodesic'] = 'learned',
    ) -> InstancePrediction:
        """Pseudo labels of one window from its points.

        Args:
            image: ``(C, H, W)`` raw window (NaN: nodata).
            points: ``(N, 2)`` (row, col) in the window's pixels, centres at +0.5.
            ids: ``(N,)`` instance ids (ignored for background points).
            background: ``(N,)`` background points (default: none).
            split: how the foreground is divided between the objects: ``learned``,
                the query at the smallest learned distance; ``geodesic``, the
                task's foreground divided by
                :func:`~geosparse.instances.geodesic_instances` (the hand-crafted
                split), with the margin uncertainty of the squared scaled geodesic
                distances :math:`(G_i / s)^2` there. :attr:`default_split` says which
                measured better for this distance.

        Returns:
            The window's :class:`InstancePrediction`.
        """
        self.eval()
        device = next(self.parameters()).device
        x = torch.as_tensor(np.asarray(image), dtype=torch.float32, device=device)
        pts = torch.as_tensor(np.asarray(points), dtype=torch.float32, device=device)
        pts = pts.reshape(-1, 2)
        idt = torch.as_tensor(np.array(ids), device=device).long().reshape(-1)
        bg = (
            torch.zeros(len(pts), dtype=torch.bool, device=device)
            if background is None
            else torch.as_tensor(np.asarray(background), device=device).bool()
        )
        valid = torch.ones(1, len(pts), dtype=torch.bool, device=device)
        tau = self.hparams['temperature']
        prior = self.hand_crafted(x[None], pts[None], valid & ~bg[None])
        out = self.model(
            x[None],
            pts[None],
            valid,
            bg[None],
            tau,
            prior,
            foreground=self.hparams['foreground'] == 'head',
        )
        instances, uncertainty = self.pseudo_labels(
            out,
            idt[None],
            tau,
            self.hparams['foreground'],
            self.hparams.get('stuff_margin', float('inf')),
        )
        nodata = ~torch.isfinite(x).all(0)
        inst = instances[0].masked_fill(nodata, 0)
        unc = uncertainty[0].float().masked_fill(nodata, float('nan'))
        if split == 'geodesic':
            inst, unc = self._geodesic_split(x, pts, idt, bg, inst, unc, prior)
        elif split != 'learned':
            raise ValueError(f"split={split!r}: choose 'learned' or 'geodesic'.")
        if self.hparams.get('connected', False):
            inst, unc = self._connected(inst, unc, pts[~bg], idt[~bg], out)
        q = out.distances[0].shape[1]
        query_ids = torch.zeros(q, dtype=torch.long, device=device)
        query_ids[: len(idt)] = idt
        query_ids = query_ids.masked_fill(out.stuff[0], 0)
        return InstancePrediction(
            instances=inst.cpu().numpy().astype(np.int64),
            uncertainty=unc.cpu().numpy().astype(np.float32),
            foreground=(inst > 0).cpu().numpy(),
            distances=torch.stack(out.distances, 0)[:, 0].cpu().numpy(),
            ids=query_ids.cpu().numpy(),
        )
