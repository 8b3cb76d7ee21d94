r"""Stage 2 of instances from points: TorchGeo's Mask R-CNN task on pseudo masks.

Stage 1 (:class:`~geosparse.trainers.PointInstanceTask`) needs a point on every
object. Stage 2 trains an instance model on its pseudo masks
(:class:`~geosparse.datamodules.PseudoMaskDataModule`) that finds the objects on
new imagery without points. It is TorchGeo's own instance segmentation task
(:data:`~geosparse.compat.InstanceSegmentation`, under its 0.8.1 or 0.10 name:
torchvision's Mask R-CNN with
TorchGeo's batches, training, validation and prediction steps), subclassed only
where it does not serve here:

- **metrics**: its validation and test metric, torchmetrics'
  ``MeanAveragePrecision(iou_type=('bbox', 'segm'))``, needs ``pycocotools`` or
  ``faster-coco-eval``; without them (TorchGeo 0.8.1's environment here) the task
  cannot even be built. This task scores with geosparse's
  :func:`~geosparse.instances.instance_scores` instead: each window's detections
  painted into an instance map (higher scores on top, masks > 0.5, scores >=
  ``score_threshold``) against the window's ``instances``: ``val_pq`` (panoptic
  quality at IoU 0.5, the monitored metric), ``val_sq``, ``val_rq`` and
  ``val_miou``;
- **normalisation**: TorchGeo disables Mask R-CNN's own normalisation and leaves it
  to the data module's ``Normalize`` augmentation, which a checkpoint does not
  record, so a checkpoint alone cannot predict raw imagery. Here the model's
  transform normalises, :math:`(x - \mathrm{mean}) / \mathrm{std}` per band with
  the ``mean`` and ``std`` hyperparameters (default 0 and 255: raw uint8 imagery;
  give per-band values for uint16), so batches carry raw values as in every
  geosparse data module and ``geosparse predict`` needs nothing but the checkpoint
  (images are still never resized, as in TorchGeo);
- **backbone and anchors**: TorchGeo builds only ``resnet50``, whose Mask R-CNN
  takes seconds per step on a CPU; this task takes ``resnet18``, ``resnet34`` or
  ``resnet50`` (torchvision's ResNet-FPN, random weights with trainable batch
  norm, ``in_channels`` bands), and anchor sizes for small objects (default 8 to
  128 pixels over the five FPN levels instead of 32 to 512: roofs of 6 to 40
  pixels at 0.5 m);
- **weights**: never downloaded (random initialisation; 0.8.1's ``weights=True``
  and 0.10's weight enums would fetch ImageNet or COCO weights, which the
  transformed first layer and other backbones would not fit anyway);
- **optimiser**: AdamW at a constant learning rate (stage 2 runs a fixed number of
  steps; TorchGeo's ReduceLROnPlateau would need a validation metric every epoch).

Everything else (the training step's loss, the sum of Mask R-CNN's five losses;
``forward``; the batch format) is TorchGeo's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchvision
from torch import Tensor, nn
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..compat import InstanceSegmentation
from ..instances import instance_scores

__all__ = ['BACKBONES', 'Detections', 'MaskRCNNTask', 'paint_detections']

#: Backbones of :class:`MaskRCNNTask` (torchvision ResNets with an FPN).
BACKBONES = ('resnet18', 'resnet34', 'resnet50')


class _NormaliseNoResize(GeneralizedRCNNTransform):
    """Mask R-CNN's transform that normalises but never resizes (as TorchGeo's)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__(
            min_size=0, max_size=0, image_mean=list(mean), image_std=list(std)
        )

    def resize(
        self, image: Tensor, target: dict[str, Tensor] | None = None
    ) -> tuple[Tensor, dict[str, Tensor] | None]:
        """Keep the image's size."""
        return image, target


@dataclass
class Detections:
    """Objects found in one window, best first.

    .. versionadded:: 0.1

    Attributes:
        boxes: ``(N, 4)`` float ``(x0, y0, x1, y1)`` pixel boxes of the window.
        labels: ``(N,)`` int64 classes (>= 1).
        scores: ``(N,)`` float detection scores in [0, 1].
        masks: ``(N, H, W)`` bool masks (probability > 0.5).
    """

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    masks: np.ndarray


def paint_detections(det: Detections, shape: tuple[int, int]) -> np.ndarray:
    """An ``(H, W)`` instance map of detections: id ``k + 1`` for the k-th, best on top.

    .. versionadded:: 0.1
    """
    out = np.zeros(shape, dtype=np.int64)
    for k in np.argsort(det.scores, kind='stable'):  # best last, so it wins
        out[det.masks[k]] = k + 1
    return out


class MaskRCNNTask(InstanceSegmentation):
    """TorchGeo's Mask R-CNN task with a CPU-sized backbone (see the module doc).

    .. versionadded:: 0.1
    """

    monitor = 'val_pq'
    mode = 'max'

    def __init__(
        self,
        model: str = 'mask-rcnn',
        backbone: str = 'resnet18',
        in_channels: int = 3,
        num_classes: int = 2,
        mean: float | Sequence[float] = 0.0,
        std: float | Sequence[float] = 255.0,
        anchor_sizes: Sequence[int] = (8, 16, 32, 64, 128),
        fpn_channels: int = 256,
        roi_samples: int = 512,
        detections_per_image: int = 300,
        score_threshold: float = 0.5,
        lr: float = 1e-3,
        patience: int = 10,
        freeze_backbone: bool = False,
    ) -> None:
        """Describe the model.

        Args:
            model: ``'mask-rcnn'`` (the only one, as in TorchGeo).
            backbone: one of :data:`BACKBONES`.
            in_channels: imagery bands.
            num_classes: object classes + 1 (the background).
            mean: per-band mean (or one for all bands) subtracted from raw values.
            std: per-band divisor (or one for all bands).
            anchor_sizes: anchor side in pixels of each of the five FPN levels.
            fpn_channels: channels of the FPN and of the heads (torchvision's 256;
                64 trains about four times faster on a CPU).
            roi_samples: proposals sampled per window to train the box and mask
                heads (torchvision's 512).
            detections_per_image: most objects Mask R-CNN returns per window.
            score_threshold: detections below this score are left out of the
                metrics and of :meth:`detect`'s default.
            lr: AdamW learning rate.
            patience: unused (TorchGeo's plateau scheduler; kept for its configs).
            freeze_backbone: train only the FPN and heads.

        Raises:
            ValueError: for another model or backbone, ``mean``/``std`` of a
                length other than 1 or ``in_channels``, or five anchor sizes not
                given.
        """
        if model != 'mask-rcnn':
            raise ValueError(f"model={model!r}: the only model is 'mask-rcnn'.")
        if backbone not in BACKBONES:
            raise ValueError(
                f'backbone={backbone!r}: choose one of {", ".join(BACKBONES)}.'
            )
        for name, value in (('mean', mean), ('std', std)):
            n = 1 if isinstance(value, int | float) else len(value)
            if n not in (1, in_channels):
                raise ValueError(
                    f'{name} has {n} values for in_channels={in_channels}; give one '
                    'per band or a single one.'
                )
        if len(anchor_sizes) != 5:
            raise ValueError(
                f'anchor_sizes has {len(anchor_sizes)} sizes; give 5 (one per FPN '
                'level).'
            )
        super().__init__(
            model=model,
            backbone=backbone,
            weights=None,
            in_channels=in_channels,
            num_classes=num_classes,
            lr=lr,
            patience=patience,
            freeze_backbone=freeze_backbone,
        )

    def configure_models(self) -> None:
        """Mask R-CNN on a ResNet-FPN, random weights, normalising transform."""
        hp = self.hparams
        c = int(hp['fpn_channels'])
        resnet = getattr(torchvision.models, hp['backbone'])(
            weights=None, norm_layer=nn.BatchNorm2d
        )
        if hp['in_channels'] != 3:
            resnet.conv1 = nn.Conv2d(
                hp['in_channels'], 64, kernel_size=7, stride=2, padding=3, bias=False
            )
        stage2 = resnet.inplanes // 8  # torchvision's resnet_fpn_backbone rule
        body = BackboneWithFPN(
            resnet,
            return_layers={f'layer{k}': str(k - 1) for k in range(1, 5)},
            in_channels_list=[stage2 * 2 ** (k - 1) for k in range(1, 5)],
            out_channels=c,
            extra_blocks=LastLevelMaxPool(),
        )
        sizes = tuple((int(s),) for s in hp['anchor_sizes'])
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
        self.model = MaskRCNN(
            body,
            num_classes=None,  # given by the predictors
            rpn_anchor_generator=anchors,
            rpn_head=RPNHead(c, anchors.num_anchors_per_location()[0]),
            box_head=TwoMLPHead(c * 7 * 7, 4 * c),
            box_predictor=FastRCNNPredictor(4 * c, hp['num_classes']),
            mask_head=MaskRCNNHeads(c, [c] * 4, 1),
            mask_predictor=MaskRCNNPredictor(c, c, hp['num_classes']),
            box_batch_size_per_image=hp['roi_samples'],
            box_detections_per_img=hp['detections_per_image'],
        )
        mean = hp['mean']
        std = hp['std']
        self.model.transform = _NormaliseNoResize(
            [float(mean)]
            if isinstance(mean, int | float)
            else [float(v) for v in mean],
            [float(std)] if isinstance(std, int | float) else [float(v) for v in std],
        )
        if hp['freeze_backbone']:
            for param in self.model.backbone.body.parameters():
                param.requires_grad = False

    def configure_metrics(self) -> None:
        """Panoptic quality of the painted detections (no pycocotools needed)."""
        self._scores: dict[str, list[dict[str, Any]]] = {'val': [], 'test': []}

    def configure_optimizers(self) -> Any:
        """AdamW at a constant learning rate (a fixed number of steps)."""
        return torch.optim.AdamW(self.parameters(), lr=self.hparams['lr'])

    # ------------------------------------------------------------ prediction
    @torch.no_grad()
    def detect(
        self, images: Tensor, score_threshold: float | None = None
    ) -> list[Detections]:
        """Objects in raw-valued windows ``(B, C, H, W)``.

        Args:
            images: raw imagery (the model normalises); NaN pixels are set to 0.
            score_threshold: lowest score kept (default: the hyperparameter).

        Returns:
            One :class:`Detections` per window, best first.
        """
        thr = (
            self.hparams['score_threshold']
            if score_threshold is None
            else score_threshold
        )
        was = self.training
        self.eval()
        x = torch.nan_to_num(images.to(self.device, torch.float32))
        out = self.model(list(x.unbind()))
        self.train(was)
        dets = []
        for pred in out:
            keep = pred['scores'] >= thr
            dets.append(
                Detections(
                    boxes=pred['boxes'][keep].cpu().numpy(),
                    labels=pred['labels'][keep].cpu().numpy().astype(np.int64),
                    scores=pred['scores'][keep].cpu().numpy(),
                    masks=(pred['masks'][keep, 0] > 0.5).cpu().numpy(),
                )
            )
        return dets

    def _score(self, batch: Any, stage: str) -> None:
        x = batch['image']
        dets = self.detect(x)
        for det, truth in zip(dets, batch['instances'], strict=True):
            pred = paint_detections(det, tuple(truth.shape[-2:]))
            scores = instance_scores(pred, truth.cpu().numpy())
            self._scores[stage].append(scores)

    def _log_scores(self, stage: str) -> None:
        rows = self._scores[stage]
        if not rows:
            return
        # the windows' TP/FP/FN and IoU sums pooled, as one scene's PQ
        tp = sum(r['tp'] for r in rows)
        fp = sum(r['fp'] for r in rows)
        fn = sum(r['fn'] for r in rows)
        iou = sum(r['sq'] * r['tp'] for r in rows if r['tp'])
        sq = iou / tp if tp else 0.0
        denom = tp + fp / 2 + fn / 2
        rq = tp / denom if denom else 1.0
        miou = float(np.mean([r['miou'] for r in rows]))
        self.log_dict(
            {
                f'{stage}_pq': sq * rq,
                f'{stage}_sq': sq,
                f'{stage}_rq': rq,
                f'{stage}_miou': miou,
            }
        )
        rows.clear()

    def validation_step(
        self, batch: Any, batch_idx: int, dataloader_idx: int = 0
    ) -> None:
        """Score the window's detections against its ``instances``."""
        self._score(batch, 'val')

    def on_validation_epoch_end(self) -> None:
        """Log ``val_pq``, ``val_sq``, ``val_rq`` and ``val_miou`` over all windows."""
        self._log_scores('val')

    def test_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        """Score the window's detections against its ``instances``."""
        self._score(batch, 'test')

    def on_test_epoch_end(self) -> None:
        """Log ``test_pq``, ``test_sq``, ``test_rq`` and ``test_miou``."""
        self._log_scores('test')
