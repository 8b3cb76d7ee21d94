r"""Output heads for TorchGeo's own tasks, and the head of any task.

geosparse's tasks are their own heads (:class:`~geosparse.trainers.heads.OutputHead`).
TorchGeo's :class:`~torchgeo.tasks.SemanticSegmentation` and
:class:`~torchgeo.tasks.PixelwiseRegression` get adapters here. They receive imagery
normalised as TorchGeo's data modules do, :math:`x' = (x - m)/s` (:math:`m = 0`,
:math:`s = 255` by default; other values from ``mean``/``std``):

- segmentation (multiclass, or binary with :math:`p = \sigma(f(x))`): the class map
  of :func:`~geosparse.trainers.heads.class_specs`;
- regression: one ``mean`` band per output of the network (float32, NaN nodata).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from lightning.pytorch import LightningModule
from torch import Tensor

from ..io.spec import BandSpec, OutputSpec
from ..trainers.heads import (
    OutputHead,
    class_bands,
    class_specs,
    forward_padded,
    pad_multiple,
)

__all__ = ['TorchGeoRegressionHead', 'TorchGeoSegmentationHead', 'head_for']


class _TorchGeoHead:
    """Normalisation and the padded forward of a TorchGeo task."""

    def __init__(
        self,
        task: LightningModule,
        mean: Sequence[float] | float | None = None,
        std: Sequence[float] | float | None = None,
    ) -> None:
        self.task = task
        self.mean = 0.0 if mean is None else mean
        self.std = 255.0 if std is None else std
        self.pad_multiple = pad_multiple(task.hparams)
        self.outputs = self._outputs(task.hparams)

    def _outputs(self, hparams: Mapping[str, Any]) -> int:
        """Number of classes or outputs the head writes."""
        raise NotImplementedError

    def normalize(self, x: Tensor) -> Tensor:
        """:math:`(x - m)/s`, per band or for all bands.

        Raises:
            ValueError: if ``mean``/``std`` have neither one value nor one per band.
        """
        x = x.float()
        c = x.shape[1]
        mean = torch.as_tensor(self.mean, dtype=x.dtype).reshape(-1)
        std = torch.as_tensor(self.std, dtype=x.dtype).reshape(-1)
        if mean.numel() not in (1, c) or std.numel() not in (1, c):
            raise ValueError(
                f'mean/std have {mean.numel()}/{std.numel()} values for {c} bands; '
                'give one value or one per band.'
            )
        return (x - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1)

    def network(self, image: Tensor) -> Tensor:
        """Network output of a raw window."""
        model: Any = self.task.model
        with torch.no_grad():
            return forward_padded(model, self.normalize(image), self.pad_multiple)


class TorchGeoSegmentationHead(_TorchGeoHead):
    """Class map of a TorchGeo segmentation task (multiclass or binary).

    .. versionadded:: 0.1

    Raises:
        ValueError: for multilabel segmentation (no single class per pixel).
    """

    def _outputs(self, hparams: Mapping[str, Any]) -> int:
        mode = hparams.get('task', 'multiclass')
        if mode == 'multilabel':
            raise ValueError(
                'multilabel segmentation is not supported by predict; train a '
                'multiclass or binary task.'
            )
        self.binary = mode == 'binary'
        return 2 if self.binary else int(hparams['num_classes'])

    def output_specs(
        self, names: Sequence[str] | None = None, probabilities: bool = False
    ) -> tuple[OutputSpec, ...]:
        """Class map (and probabilities) with ``class_0``, ``class_1``, ... by default."""
        if names is None:
            names = [f'class_{i}' for i in range(self.outputs)]
        _check_names(names, self.outputs)
        return class_specs(type(self.task).__name__, names, probabilities)

    def predict_window(
        self, image: Tensor, coarse: Tensor | None = None, probabilities: bool = False
    ) -> Tensor:
        """Class bands of a raw window (softmax, or sigmoid for binary tasks)."""
        out = self.network(image)
        if self.binary:
            q = out.sigmoid()
            p = torch.cat([1 - q, q], dim=1)
        else:
            p = out.softmax(dim=1)
        return class_bands(p[0], probabilities)


class TorchGeoRegressionHead(_TorchGeoHead):
    """The outputs of a TorchGeo regression task, one ``mean`` band each.

    .. versionadded:: 0.1
    """

    def _outputs(self, hparams: Mapping[str, Any]) -> int:
        return int(hparams['num_outputs'])

    def output_specs(
        self, names: Sequence[str] | None = None, probabilities: bool = False
    ) -> tuple[OutputSpec, ...]:
        """``mean`` (one output) or ``mean_<name>`` bands, float32 with NaN nodata."""
        if names is None:
            names = [f'output_{i}' for i in range(self.outputs)]
        _check_names(names, self.outputs)
        single = len(names) == 1
        bands = tuple(
            BandSpec(
                'mean' if single else f'mean_{n}',
                'network output (no uncertainty without --reveal)',
            )
            for n in names
        )
        return (
            OutputSpec(
                task=type(self.task).__name__,
                kind='regression',
                bands=bands,
                dtype='float32',
                nodata=float('nan'),
                names=tuple(names),
            ),
        )

    def predict_window(
        self, image: Tensor, coarse: Tensor | None = None, probabilities: bool = False
    ) -> Tensor:
        """The network's outputs ``(K, h, w)`` of a raw window."""
        return self.network(image)[0]


def _check_names(names: Sequence[str], n: int) -> None:
    if len(names) != n:
        raise ValueError(
            f'class_names has {len(names)} names but the model has {n} outputs.'
        )


def head_for(
    task: LightningModule,
    mean: Sequence[float] | float | None = None,
    std: Sequence[float] | float | None = None,
) -> OutputHead:
    """The output head of a task: the task itself, or an adapter for TorchGeo's.

    .. versionadded:: 0.1

    Args:
        task: a geosparse task, or TorchGeo's segmentation or regression task.
        mean: TorchGeo tasks: per-band (or one) mean of the normalisation.
        std: TorchGeo tasks: per-band (or one) divisor.

    Returns:
        The head.
    """
    if isinstance(task, OutputHead):
        return task
    if 'num_outputs' in task.hparams:
        return TorchGeoRegressionHead(task, mean, std)
    return TorchGeoSegmentationHead(task, mean, std)
