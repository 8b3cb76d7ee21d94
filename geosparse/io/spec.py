"""What a prediction writes: a frozen description of an output COG's bands and tags.

Every task's output head (:mod:`geosparse.trainers.heads`, and TorchGeo's tasks
through :mod:`geosparse.inference.heads`) says what it writes as an
:class:`OutputSpec`: band names, data type, nodata, scales, colour table, class
names, what each band means, and where the output came from (checkpoint, coarse
labels, revealed points, kernel). The spec gives the keyword arguments of
:func:`~geosparse.io.cog.cog_writer` (:meth:`OutputSpec.cog_options`) and is stored
whole in the COG as one JSON tag (:data:`SPEC_TAG`), from which
:meth:`OutputSpec.read` restores it, so the STAC writer
(:func:`~geosparse.stac.output_item`) reads typed values back instead of parsing
one string tag after another.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import rasterio

from .cog import CogOptions

__all__ = ['SPEC_TAG', 'BandSpec', 'OutputKind', 'OutputSpec', 'Property']

#: COG tag holding the whole spec as JSON.
SPEC_TAG = 'geosparse_output'

#: What an output COG holds, which decides its bands and tags.
OutputKind = Literal['segmentation', 'regression', 'probabilities', 'instances']
#: A provenance value, written as a tag and typed in the STAC Item.
Property = str | int | float | bool | Mapping[str, Any] | None


def _tag_text(value: Property) -> str:
    """A property as the COG tag GDAL stores (strings as they are, floats by repr)."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) or isinstance(value, list):
        return json.dumps(value)
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class BandSpec:
    """One output band.

    .. versionadded:: 0.1

    Attributes:
        name: band description (``class``, ``uncertainty``, ``mean``, ...).
        definition: what the band holds, in words (a band tag).
        scale: physical value = stored value x scale.
        tags: further band tags.
    """

    name: str
    definition: str | None = None
    scale: float = 1.0
    tags: Mapping[str, str] = field(default_factory=dict)

    def band_tags(self) -> dict[str, str]:
        """The band's tags as written."""
        out = dict(self.tags)
        if self.definition is not None:
            out['definition'] = self.definition
        return out


@dataclass(frozen=True)
class OutputSpec:
    """What one output COG holds (frozen; :meth:`replace` derives others).

    .. versionadded:: 0.1

    Attributes:
        task: class name of the task that made it.
        kind: ``segmentation`` (a class band, colour table), ``regression`` or
            ``probabilities``, or ``instances`` (object ids from points,
            :mod:`geosparse.inference.instances`).
        bands: the bands, in order.
        dtype: data type of every band.
        nodata: nodata value (NaN for floating point).
        names: class names (segmentation) or names of the network's outputs.
        colormap: colour table of band 1 (class value -> RGBA).
        categorical: nearest-neighbour overviews (class maps).
        properties: where the output came from and how (checkpoint, coarse
            labels, revealed points, kernel, thresholds), in order: COG tags and
            ``geosparse:*`` STAC properties.
    """

    task: str
    kind: OutputKind
    bands: tuple[BandSpec, ...]
    dtype: str
    nodata: float | None
    names: tuple[str, ...] = ()
    colormap: Mapping[int, tuple[int, int, int, int]] | None = None
    categorical: bool = False
    properties: Mapping[str, Property] = field(default_factory=dict)

    @property
    def count(self) -> int:
        """Number of bands."""
        return len(self.bands)

    def replace(self, **changes: Any) -> OutputSpec:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def with_properties(self, **props: Property) -> OutputSpec:
        """A copy with further properties (later ones win)."""
        return self.replace(properties={**self.properties, **props})

    @property
    def names_key(self) -> str:
        """Tag of :attr:`names`, ``output_names`` for regression, else ``class_names``."""
        return 'output_names' if self.kind == 'regression' else 'class_names'

    def tags(self) -> dict[str, str]:
        """Dataset tags: task, kind, names, the properties, and the spec itself."""
        out = {
            'task': self.task,
            'kind': self.kind,
            self.names_key: json.dumps(list(self.names)),
        }
        out.update({k: _tag_text(v) for k, v in self.properties.items()})
        out[SPEC_TAG] = self.to_json()
        return out

    def cog_options(self) -> CogOptions:
        """Keyword arguments of :func:`~geosparse.io.cog.cog_writer`."""
        opts: CogOptions = {
            'descriptions': [b.name for b in self.bands],
            'tags': self.tags(),
            'band_tags': [b.band_tags() for b in self.bands],
        }
        if self.colormap is not None:
            opts['colormap'] = dict(self.colormap)
        if any(b.scale != 1 for b in self.bands):
            opts['scales'] = [b.scale for b in self.bands]
        if self.categorical:
            opts['categorical'] = True
        return opts

    # ------------------------------------------------------------ round trip
    def to_json(self) -> str:
        """The spec as JSON (:meth:`from_json` restores it)."""
        data = dataclasses.asdict(self)
        if self.colormap is not None:
            data['colormap'] = {str(k): list(v) for k, v in self.colormap.items()}
        return json.dumps(data, sort_keys=False, separators=(',', ':'))

    @classmethod
    def from_json(cls, text: str) -> OutputSpec:
        """Restore a spec from :meth:`to_json`.

        Raises:
            ValueError: if the text is not a spec.
        """
        try:
            data = json.loads(text)
            bands = tuple(BandSpec(**b) for b in data.pop('bands'))
            cmap = data.pop('colormap')
            colormap = (
                None
                if cmap is None
                else {int(k): (v[0], v[1], v[2], v[3]) for k, v in cmap.items()}
            )
            return cls(
                bands=bands,
                colormap=colormap,
                names=tuple(data.pop('names')),
                **data,
            )
        except (TypeError, KeyError, ValueError, AttributeError) as err:
            raise ValueError(f'not a geosparse output spec: {err}') from None

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> OutputSpec | None:
        """The spec stored in a COG's tags, or None for a COG without one.

        Raises:
            ValueError: if the stored spec is damaged (the message names the file).
        """
        with rasterio.open(path) as ds:
            text = ds.tags().get(SPEC_TAG)
        if text is None:
            return None
        try:
            return cls.from_json(text)
        except ValueError as err:
            raise ValueError(f'{path}: tag {SPEC_TAG}: {err}') from None
