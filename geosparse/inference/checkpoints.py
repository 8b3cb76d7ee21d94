"""Checkpoints that may come from strangers: load weights and plain data, run no code.

A Lightning checkpoint is a pickle, and unpickling can call anything the file names
(a ``__reduce__`` payload runs at load time). geosparse therefore reads every
checkpoint with torch's ``weights_only`` unpickler, which builds only tensors,
numbers, strings and containers, plus the types in :data:`SAFE_GLOBALS`; and it builds
only the task classes in :data:`~geosparse.inference.checkpoints.KNOWN_TASKS` from a
checkpoint's own ``_class_path``. A checkpoint that needs anything else is refused with
:class:`UntrustedCheckpointError`, which names the file and what it asked for; a
caller who trusts the file says so explicitly (``trust=True``,
``geosparse predict --trust-checkpoint``), and only then is it unpickled in full.
"""

from __future__ import annotations

import importlib
import os
import pickle
import re
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch import LightningModule

from ..compat import TORCHGEO_TASKS, PixelwiseRegression, SemanticSegmentation
from ..trainers.counting import DensityTask, PointMapTask
from ..trainers.instances import PointInstanceTask
from ..trainers.lsr import LabelSuperResolutionTask
from ..trainers.maskrcnn import MaskRCNNTask
from ..trainers.npp import NPPTask

__all__ = [
    'KNOWN_TASKS',
    'SAFE_GLOBALS',
    'UntrustedCheckpointError',
    'checkpoint_task_class',
    'load_task',
    'read_checkpoint',
    'task_class_for',
]

_GEOSPARSE_TASKS: tuple[type[LightningModule], ...] = (
    LabelSuperResolutionTask,
    NPPTask,
    DensityTask,
    PointMapTask,
    PointInstanceTask,
    MaskRCNNTask,
)

#: Task classes a checkpoint may name in ``_class_path`` (LightningCLI records it),
#: under the module paths they are recorded with; TorchGeo's tasks under both
#: releases' names (:data:`~geosparse.compat.TORCHGEO_TASKS`).
KNOWN_TASKS: dict[str, type[LightningModule]] = {
    **{f'geosparse.trainers.{c.__name__}': c for c in _GEOSPARSE_TASKS},
    **{f'{c.__module__}.{c.__name__}': c for c in _GEOSPARSE_TASKS},
    **TORCHGEO_TASKS,
}

#: Types besides tensors, numbers, strings and containers that geosparse's and
#: TorchGeo's checkpoints hold (their hyperparameters are plain data).
SAFE_GLOBALS: tuple[Any, ...] = ()


class UntrustedCheckpointError(ValueError):
    """A checkpoint needs code or classes that geosparse does not load untrusted.

    .. versionadded:: 0.1
    """


def read_checkpoint(
    path: str | os.PathLike[str], trust: bool = False
) -> dict[str, Any]:
    """The checkpoint's contents, unpickled without running code unless trusted.

    .. versionadded:: 0.1

    Args:
        path: the ``.ckpt`` file.
        trust: unpickle everything the file holds (it can run code: only for files
            you trust).

    Returns:
        The checkpoint dictionary (``state_dict``, ``hyper_parameters``, ...).

    Raises:
        UntrustedCheckpointError: if the file needs a global outside the allow-list.
        ValueError: if the file is not a Lightning checkpoint.
    """
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
            ckpt = torch.load(path, map_location='cpu', weights_only=not trust)
    except pickle.UnpicklingError as err:
        match = re.search(r'GLOBAL ([\w.]+)', str(err))
        if match is None:
            raise ValueError(
                f'{path}: not a checkpoint (not a valid torch pickle); pass a .ckpt '
                'written by `torchgeo fit`, `geosparse demo` or Trainer.save_checkpoint.'
            ) from None
        raise UntrustedCheckpointError(
            f'{path}: the checkpoint asks to unpickle {match.group(1)}, which could '
            'run code, so it was not loaded; if you trust this file, pass '
            '--trust-checkpoint (Predictor(trust_checkpoint=True)).'
        ) from None
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(
            f'{path}: not a readable checkpoint ({type(err).__name__}: '
            f'{str(err).splitlines()[0] if str(err) else "empty"}); pass a .ckpt '
            'written by `torchgeo fit`, `geosparse demo` or Trainer.save_checkpoint.'
        ) from None
    if not isinstance(ckpt, dict) or 'state_dict' not in ckpt:
        raise ValueError(
            f'{path}: not a Lightning checkpoint (no state_dict); pass a .ckpt '
            'written by `torchgeo fit`, `geosparse demo` or Trainer.save_checkpoint.'
        )
    return ckpt


def _import(path: str) -> type[LightningModule]:
    module, _, name = path.rpartition('.')
    cls: type[LightningModule] = getattr(importlib.import_module(module), name)
    return cls


def task_class_for(
    hparams: Mapping[str, Any], trust: bool = False
) -> type[LightningModule]:
    """The task class that wrote a checkpoint, from its hyperparameters.

    LightningCLI records ``_class_path``, which must be one of
    :data:`~geosparse.inference.checkpoints.KNOWN_TASKS` unless the checkpoint is
    trusted; otherwise the hyperparameters tell: ``priors`` →
    :class:`~geosparse.trainers.LabelSuperResolutionTask`, ``kernel`` and
    ``lengthscale`` → :class:`~geosparse.trainers.NPPTask`, ``density_scale`` →
    :class:`~geosparse.trainers.DensityTask`, ``pos_weight`` and ``radius`` →
    :class:`~geosparse.trainers.PointMapTask`, ``pairwise_weight`` →
    :class:`~geosparse.trainers.PointInstanceTask`, ``fpn_channels`` and
    ``anchor_sizes`` → :class:`~geosparse.trainers.MaskRCNNTask`, ``num_outputs`` →
    :class:`~torchgeo.tasks.PixelwiseRegression`, ``num_classes`` →
    :class:`~torchgeo.tasks.SemanticSegmentation`.

    .. versionadded:: 0.1

    Args:
        hparams: the checkpoint's ``hyper_parameters``.
        trust: import any ``_class_path`` (it runs that module's code).

    Raises:
        UntrustedCheckpointError: if ``_class_path`` names another class.
        ValueError: if none of these apply.
    """
    path = hparams.get('_class_path')
    if isinstance(path, str) and '.' in path:
        if path in KNOWN_TASKS:
            return KNOWN_TASKS[path]
        if not trust:
            raise UntrustedCheckpointError(
                f'the checkpoint names the task class {path}, which is not one of '
                "geosparse's or TorchGeo's tasks and would be imported (running its "
                f'code); if you trust it, pass --task {path} or --trust-checkpoint.'
            )
        return _import(path)
    if 'priors' in hparams:
        return LabelSuperResolutionTask
    if 'kernel' in hparams and 'lengthscale' in hparams:
        return NPPTask
    if 'density_scale' in hparams:
        return DensityTask
    if 'pos_weight' in hparams and 'radius' in hparams:
        return PointMapTask
    if 'pairwise_weight' in hparams:
        return PointInstanceTask
    if 'fpn_channels' in hparams and 'anchor_sizes' in hparams:
        return MaskRCNNTask
    if 'num_outputs' in hparams:
        return PixelwiseRegression
    if 'num_classes' in hparams:
        return SemanticSegmentation
    raise ValueError(
        'cannot tell the task from the checkpoint hyperparameters '
        f'({", ".join(sorted(hparams)) or "none"}); pass the task class '
        '(--task package.module.Class).'
    )


def checkpoint_task_class(
    path: str | os.PathLike[str],
    task_class: str | None = None,
    trust: bool = False,
) -> type[LightningModule]:
    """The class :func:`.load_task` would build, without building it.

    .. versionadded:: 0.1

    Args:
        path: the ``.ckpt`` file.
        task_class: ``package.module.Class`` chosen by the caller (imported).
        trust: unpickle and import whatever the file asks for.

    Raises:
        UntrustedCheckpointError: as :func:`~geosparse.inference.load_task`.
        ValueError: as :func:`~geosparse.inference.load_task`.
    """
    if task_class:
        return _import(task_class)
    ckpt = read_checkpoint(path, trust)
    try:
        return task_class_for(ckpt.get('hyper_parameters', {}), trust)
    except ValueError as err:
        raise type(err)(f'{path}: {err}') from None


def load_task(
    path: str | os.PathLike[str],
    task_class: str | None = None,
    trust: bool = False,
) -> LightningModule:
    """Build the task of a checkpoint, in evaluation mode, on the CPU.

    .. versionadded:: 0.1

    Args:
        path: the ``.ckpt`` file.
        task_class: ``package.module.Class`` to build (the caller's choice, so it is
            imported whatever ``trust`` says); default: :func:`task_class_for`.
        trust: unpickle and import whatever the file asks for.

    Returns:
        The task.

    Raises:
        UntrustedCheckpointError: if the file needs more than weights and plain
            data, or names an unknown task class, and is not trusted.
        ValueError: if the file is not a Lightning checkpoint of a known task.
    """
    ckpt = read_checkpoint(path, trust)
    if task_class:
        cls = _import(task_class)
    else:
        try:
            cls = task_class_for(ckpt.get('hyper_parameters', {}), trust)
        except ValueError as err:
            raise type(err)(f'{path}: {err}') from None
    with torch.serialization.safe_globals(list(SAFE_GLOBALS)):
        try:
            task = cls.load_from_checkpoint(
                str(path), map_location='cpu', weights_only=not trust
            )
        except RuntimeError as err:
            if 'state_dict' not in str(err):
                raise
            detail = str(err).strip().splitlines()[-1].strip()
            raise ValueError(
                f'{path}: its weights do not fit {cls.__name__} as this version of '
                f'geosparse builds it ({detail}); retrain it, or predict with the '
                'version that wrote it.'
            ) from None
    return task.eval()
