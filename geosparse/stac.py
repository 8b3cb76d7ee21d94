"""STAC on both sides of prediction: searching inputs and describing outputs.

Inputs are found with pystac-client (:func:`search_items`) in any STAC API, and an
asset of each item (:func:`asset_href`) is the raster to predict. Every output COG is
described by a STAC Item (:func:`output_item`) written as JSON beside it: the COG as
its ``data`` asset with the projection, raster and (for class maps) classification
extensions, a ``derived_from`` link to each source item, and the model that made it
(task, checkpoint file and SHA-256, geosparse version) in its properties.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pystac
import rasterio
from pystac.extensions.classification import Classification, ClassificationExtension
from pystac.extensions.file import FileExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, RasterBand, RasterExtension
from rasterio.warp import transform_geom
from shapely.geometry import box, mapping, shape

from . import __version__
from .io.raster import atomic_write_text, file_checksum
from .io.spec import OutputSpec

__all__ = ['asset_href', 'output_item', 'search_items', 'serve_stac', 'write_item']


def search_items(
    url: str,
    collections: Sequence[str] | None = None,
    bbox: Sequence[float] | None = None,
    datetime: str | None = None,
    ids: Sequence[str] | None = None,
    max_items: int | None = None,
) -> list[pystac.Item]:
    """Items of a STAC API search (pystac-client), in the order the API returns.

    .. versionadded:: 0.1

    Args:
        url: STAC API root (e.g. ``https://earth-search.aws.element84.com/v1``).
        collections: collection ids.
        bbox: ``west, south, east, north`` in WGS84 degrees.
        datetime: RFC 3339 instant or interval (``2018-01-01/2018-12-31``).
        ids: item ids.
        max_items: stop after this many items.

    Returns:
        The items found.

    Raises:
        RuntimeError: naming the URL, if the API cannot be reached or refuses the
            search.
    """
    from pystac_client import Client

    try:
        client = Client.open(url)
        found = client.search(
            collections=list(collections) if collections else None,
            bbox=list(bbox) if bbox else None,
            datetime=datetime,
            ids=list(ids) if ids else None,
            max_items=max_items,
        )
        return list(found.items())
    except Exception as err:
        raise RuntimeError(
            f'--stac {url}: the STAC API search failed ({type(err).__name__}: {err}). '
            'Check the URL, the collection ids and the bbox/datetime syntax.'
        ) from err


def asset_href(item: pystac.Item, key: str, option: str = '--asset') -> str:
    """Absolute href of an item's asset, as rasterio opens it.

    ``http(s)`` hrefs get GDAL's ``/vsicurl/`` prefix and ``s3://`` becomes
    ``/vsis3/``; relative hrefs are resolved against the item's own location.

    .. versionadded:: 0.1

    Args:
        item: the item.
        key: the asset key.
        option: the command-line option that gave ``key`` (named in the error).

    Raises:
        KeyError: naming the item, the option and the keys it has, if ``key`` is
            missing.
    """
    if key not in item.assets:
        raise KeyError(
            f'item {item.id}: no asset {key!r} (it has {", ".join(sorted(item.assets))}); '
            f'pass {option} with one of these.'
        )
    href = item.assets[key].href
    if '://' not in href and not os.path.isabs(href):
        href = item.assets[key].get_absolute_href() or href  # relative to the item
    if href.startswith(('http://', 'https://')):
        return f'/vsicurl/{href}'
    if href.startswith('s3://'):
        return '/vsis3/' + href[len('s3://') :]
    if href.startswith('file://'):
        return href[len('file://') :]
    return href


_DATA_TYPES = {
    'uint8': DataType.UINT8,
    'uint16': DataType.UINT16,
    'int16': DataType.INT16,
    'float32': DataType.FLOAT32,
    'float64': DataType.FLOAT64,
}


def _hex(rgba: tuple[int, ...]) -> str:
    return ''.join(f'{v:02X}' for v in rgba[:3])


def _add_cog_asset(item: pystac.Item, key: str, path: Path) -> pystac.Asset:
    """Add a COG as an asset (relative href) with its ``raster:bands``."""
    with rasterio.open(path) as ds:
        asset = pystac.Asset(
            href=f'./{path.name}',
            media_type=pystac.MediaType.COG,
            roles=['data'],
            title=', '.join(d or '' for d in ds.descriptions),
        )
        nodata = ds.nodata
        bands = [
            RasterBand.create(
                nodata='nan' if nodata is not None and nodata != nodata else nodata,  # type: ignore[arg-type]
                data_type=_DATA_TYPES.get(ds.dtypes[i]),
                scale=ds.scales[i] if ds.scales[i] != 1 else None,
                offset=ds.offsets[i] if ds.offsets[i] != 0 else None,
                spatial_resolution=abs(ds.transform.a),
            )
            for i in range(ds.count)
        ]
    item.add_asset(key, asset)
    RasterExtension.ext(asset, add_if_missing=True).bands = bands
    # file:checksum lets --resume tell a whole output from a truncated one.
    file_ext = FileExtension.ext(asset, add_if_missing=True)
    file_ext.checksum = file_checksum(path)
    file_ext.size = path.stat().st_size
    return asset


def output_item(
    cog_path: str | os.PathLike[str],
    item_id: str | None = None,
    sources: Sequence[pystac.Item] = (),
    source_paths: Sequence[str] = (),
    when: dt.datetime | None = None,
    extra_assets: Mapping[str, str | os.PathLike[str]] | None = None,
) -> pystac.Item:
    """A STAC Item describing a geosparse output COG.

    The geometry is the COG's footprint in WGS84; ``datetime`` is the first source
    item's (or ``when``, or now); the COG is the ``data`` asset (relative href, so
    the pair can be moved together) with ``proj:*``, ``raster:bands`` and, for class
    maps, ``classification:classes``, all from the output spec stored in the COG
    (:meth:`~geosparse.io.spec.OutputSpec.read`).

    .. versionadded:: 0.1

    Args:
        cog_path: the output COG (its spec names the task and checkpoint).
        item_id: item id (default: the file stem).
        sources: source STAC items (``derived_from`` links).
        source_paths: source rasters when there are no source items.
        when: acquisition time when no source item gives one.
        extra_assets: further COGs of the same output by asset key (e.g.
            ``probabilities``), in the same folder as ``cog_path``.

    Returns:
        The item (its self href is ``cog_path`` with ``.json``).
    """
    cog = Path(cog_path)
    spec = OutputSpec.read(cog)
    with rasterio.open(cog) as ds:
        version = ds.tags().get('geosparse_version', __version__)
        crs, transform, height, width = ds.crs, ds.transform, ds.height, ds.width
        footprint = box(*ds.bounds)
    geometry = transform_geom(crs, 'EPSG:4326', mapping(footprint))
    bbox = list(shape(geometry).bounds)
    stamp = next((s.datetime for s in sources if s.datetime is not None), None)
    stamp = stamp or when or dt.datetime.now(dt.UTC)
    props: dict[str, Any] = {
        'geosparse:version': version,
        'geosparse:task': None if spec is None else spec.task,
        'geosparse:kind': None if spec is None else spec.kind,
        'processing:software': {'geosparse': __version__},
        'created': dt.datetime.now(dt.UTC).isoformat().replace('+00:00', 'Z'),
    }
    # What the output was made from (checkpoint, coarse labels, known points, the
    # kernel), typed as the output spec holds it.
    if spec is not None:
        props.update({f'geosparse:{k}': v for k, v in spec.properties.items()})
    if source_paths and not sources:
        props['geosparse:sources'] = list(source_paths)
    item = pystac.Item(
        id=item_id or cog.stem,
        geometry=geometry,
        bbox=bbox,
        datetime=stamp,
        properties=props,
    )
    for src in sources:
        target = src.get_self_href()
        if target:
            item.add_link(
                pystac.Link(
                    'derived_from',
                    target,
                    media_type=pystac.MediaType.GEOJSON,
                    title=src.id,
                )
            )
    asset = _add_cog_asset(item, 'data', cog)
    for key, path in (extra_assets or {}).items():
        _add_cog_asset(item, key, Path(path))
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    proj.code = f'EPSG:{epsg}' if epsg else None
    if epsg is None:
        proj.wkt2 = crs.to_wkt()
    proj.shape = [height, width]
    proj.transform = list(transform)[:6]
    if spec is not None and spec.kind == 'segmentation' and spec.colormap is not None:
        colormap = spec.colormap
        names = spec.names
        ClassificationExtension.ext(asset, add_if_missing=True).classes = [
            Classification.create(
                value=i,
                name=n,
                description=n,
                color_hint=_hex(colormap.get(i, (0, 0, 0))),
            )
            for i, n in enumerate(names)
        ]
    item.set_self_href(str(cog.with_suffix('.json').absolute()))
    return item


def write_item(item: pystac.Item, path: str | os.PathLike[str]) -> Path:
    """Write an item as JSON, atomically (relative asset hrefs are kept).

    .. versionadded:: 0.1
    """
    data = item.to_dict(include_self_link=False, transform_hrefs=False)
    return atomic_write_text(path, json.dumps(data, indent=2) + '\n')


@contextmanager
def serve_stac(
    *hrefs: str | os.PathLike[str], port: int | None = None, timeout: float = 30.0
) -> Iterator[str]:
    """Serve STAC collections and items as a STAC API on 127.0.0.1 (rustac).

    Runs ``rustac serve`` (``pip install rustac``; an in-memory server that answers
    bbox, datetime, collections and ids searches) for the duration of the ``with``
    block, for examples, notebooks and tests with local data.

    .. versionadded:: 0.1

    Args:
        hrefs: collection, item or item-collection JSON files to load.
        port: TCP port (default: a free one).
        timeout: seconds to wait for the server to answer.

    Yields:
        The API root URL.

    Raises:
        RuntimeError: if rustac is not installed or the server does not start.
    """
    exe = shutil.which('rustac')
    if exe is None:
        raise RuntimeError(
            'serve_stac needs the rustac command line: pip install rustac.'
        )
    if port is None:
        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = int(sock.getsockname()[1])
    url = f'http://127.0.0.1:{port}'
    proc = subprocess.Popen(
        [exe, 'serve', '--addr', f'127.0.0.1:{port}', *map(str, hrefs)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read() if proc.stdout else ''
                    raise RuntimeError(
                        f'rustac serve did not start on {url}: {out.strip()}'
                    ) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout:
            proc.stdout.close()
