r"""Output heads: what a task writes and how it turns a raw window into those bands.

Each geosparse task is its own output head (:class:`OutputHead`): it says what it
writes as :class:`~geosparse.io.spec.OutputSpec` objects (one per file) and maps a
window of raw imagery to the bands of those files, concatenated. Prediction
(:class:`~geosparse.inference.Predictor`) calls the head and writes; it knows no
task. TorchGeo's own tasks get adapters in :mod:`geosparse.inference.heads`.

Class maps share one layout (:func:`class_specs`, :func:`class_bands`): band
``class`` (uint8 with a colour table and the class names; 255 nodata) and band
``uncertainty``, the normalised entropy

.. math::
    u = -\frac{1}{\log L} \sum_{l=1}^{L} p_l \log p_l \in [0, 1],

stored as uint8 :math:`\mathrm{round}(254\,u)` with scale 1/254; optionally one
probability band per class in a second file (GeoTIFF keeps a colour table only in
files of one or two bands). Networks see windows padded (reflect) to a multiple of
their downsampling factor (:func:`forward_padded`, :func:`pad_multiple`); each head
chooses what runs inside the padding: the class map crops the logits before it
decodes (rules that look at the whole window, such as matching class fractions, see
exactly the window), the point map decodes its cells on the padded window.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..io.spec import BandSpec, OutputSpec

__all__ = [
    'CLASS_COLORS',
    'OutputHead',
    'class_bands',
    'class_colormap',
    'class_specs',
    'forward_padded',
    'normalised_entropy',
    'pad_multiple',
    'to_uint8',
]

#: Colours of fine classes by name (others get a palette colour).
CLASS_COLORS: dict[str, tuple[int, int, int, int]] = {
    'water': (0, 112, 255, 255),
    'forest': (38, 115, 0, 255),
    'field': (163, 255, 115, 255),
    'impervious': (156, 156, 156, 255),
}

_PALETTE = [
    (228, 26, 28, 255),
    (55, 126, 184, 255),
    (77, 175, 74, 255),
    (152, 78, 163, 255),
    (255, 127, 0, 255),
    (255, 255, 51, 255),
    (166, 86, 40, 255),
    (247, 129, 191, 255),
]


@runtime_checkable
class OutputHead(Protocol):
    """A task that says what it writes and maps raw windows to those bands.

    .. versionadded:: 0.1
    """

    def output_specs(
        self, names: Sequence[str] | None = None, probabilities: bool = False
    ) -> tuple[OutputSpec, ...]:
        """The files written, in order (their bands follow each other)."""
        ...

    def predict_window(
        self, image: Tensor, coarse: Tensor | None = None, probabilities: bool = False
    ) -> Tensor:
        """Bands ``(K, h, w)`` of all the files for one raw window ``(1, C, h, w)``.

        ``coarse`` (raw coarse codes on the window's pixels) is used by heads that
        combine the network with coarse labels; ``probabilities`` by class maps.
        """
        ...


def normalised_entropy(probs: Tensor) -> Tensor:
    r"""Per-pixel entropy over the class axis, divided by :math:`\log L` (0..1).

    .. versionadded:: 0.1

    Args:
        probs: ``(B, L, H, W)`` probabilities.

    Returns:
        ``(B, H, W)`` values in [0, 1].
    """
    ent = -(probs * probs.clamp(min=1e-12).log()).sum(dim=1)
    return ent / torch.log(torch.tensor(float(probs.shape[1])))


def forward_padded(
    model: Callable[[Tensor], Tensor], x: Tensor, multiple: int = 32
) -> Tensor:
    """``model(x)`` with ``x`` padded to a multiple of ``multiple``, cropped back.

    Padding is added at the bottom and right (reflect, or replicate for windows
    smaller than the padding), so pixel coordinates do not move.

    .. versionadded:: 0.1

    Args:
        model: the network.
        x: ``(B, C, h, w)`` normalised input.
        multiple: the network's downsampling factor (1: no padding).

    Returns:
        ``(B, K, h, w)``.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = 'reflect' if ph < h and pw < w else 'replicate'
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return model(x)[..., :h, :w]


def pad_multiple(hparams: Mapping[str, Any]) -> int:
    """Downsampling factor of a task's network, from its ``model`` hyperparameter.

    Encoder-decoder models need windows of a multiple of 32; ``fcn`` keeps full size.

    .. versionadded:: 0.1
    """
    return 1 if hparams.get('model') == 'fcn' else 32


def to_uint8(x: np.ndarray) -> np.ndarray:
    """0..1 values as uint8 0..254 (255 is nodata).

    .. versionadded:: 0.1
    """
    return np.round(np.clip(x, 0, 1) * 254).astype(np.uint8)


def class_colormap(names: Sequence[str]) -> dict[int, tuple[int, int, int, int]]:
    """Colour table of class names (:data:`CLASS_COLORS`, else a palette).

    .. versionadded:: 0.1
    """
    return {
        i: CLASS_COLORS.get(n, _PALETTE[i % len(_PALETTE)]) for i, n in enumerate(names)
    }


def class_specs(
    task: str, names: Sequence[str], probabilities: bool = False
) -> tuple[OutputSpec, ...]:
    """Specs of a class map (and of its probabilities file).

    .. versionadded:: 0.1

    Args:
        task: the task's class name.
        names: class names.
        probabilities: add the probabilities file.

    Returns:
        The class map's spec, then the probabilities' if asked for.
    """
    names = tuple(names)
    main = OutputSpec(
        task=task,
        kind='segmentation',
        bands=(
            BandSpec('class', tags={'class_names': json.dumps(list(names))}),
            BandSpec(
                'uncertainty',
                'normalised entropy of the class probabilities, 0..1',
                scale=1 / 254,
            ),
        ),
        dtype='uint8',
        nodata=255,
        names=names,
        colormap=class_colormap(names),
        categorical=True,
    )
    if not probabilities:
        return (main,)
    probs = OutputSpec(
        task=task,
        kind='probabilities',
        bands=tuple(
            BandSpec(f'p_{n}', f'probability of {n}, 0..1', scale=1 / 254)
            for n in names
        ),
        dtype='uint8',
        nodata=255,
        names=names,
    )
    return main, probs


def class_bands(probs: Tensor, probabilities: bool = False) -> Tensor:
    """Class, uncertainty (and probability) bands of ``(L, h, w)`` probabilities.

    Pixels whose probabilities are not finite (an input that overflows the network)
    are nodata (255) in every band, never class 0 with uncertainty 0.

    .. versionadded:: 0.1

    Returns:
        ``(2 [+ L], h, w)`` uint8.
    """
    p = probs.detach()
    classes = p.argmax(0).numpy().astype(np.uint8)
    unc = normalised_entropy(p[None])[0].numpy()
    bands = [classes, to_uint8(unc)]
    if probabilities:
        bands.extend(to_uint8(q) for q in p.numpy())
    out = np.stack(bands)
    bad = ~torch.isfinite(p).all(0).numpy()
    out[:, bad] = np.uint8(255)
    return torch.from_numpy(out)
