"""Prediction over a real STAC API server (rustac serve) on 127.0.0.1."""

import json
import re
import shutil

import numpy as np
import pystac
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geosparse.cli import main
from geosparse.datasets import make_stac_tiles
from geosparse.stac import asset_href, search_items, serve_stac

pytestmark = pytest.mark.skipif(
    shutil.which('rustac') is None,
    reason='rustac is not installed (pip install rustac)',
)


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp('demo')
    assert main(['demo', '--out', str(out), '--size', '192', '--steps', '1']) == 0
    return out


@pytest.fixture
def api(demo, tmp_path):
    scene = demo / 'scene'
    from geosparse.datasets import SyntheticScene

    s = SyntheticScene(
        scene / 'scene_naip.tif', scene / 'scene_nlcd.tif', scene / 'scene_lc.tif'
    )
    hrefs = make_stac_tiles(s, tmp_path / 'catalog', tiles=2)
    with serve_stac(*hrefs) as url:
        yield url, tmp_path / 'catalog'


def _args(demo, out, url, *more):
    return [
        'predict',
        '--checkpoint',
        str(demo / 'lsr.ckpt'),
        '--out',
        str(out),
        '--stac',
        url,
        '--collections',
        'synthetic-naip',
        '--asset',
        'image',
        '--coarse',
        'nlcd',
        '--quiet',
        *more,
    ]


def test_search_filters_by_bbox_datetime_and_ids(api):
    url, _ = api
    items = search_items(url, collections=['synthetic-naip'])
    assert [i.id for i in items] == ['tile0', 'tile1']
    west = items[0].bbox
    inside = [west[0] + 1e-4, west[1] + 1e-4, west[0] + 2e-4, west[1] + 2e-4]
    assert [i.id for i in search_items(url, bbox=inside)] == ['tile0']
    assert search_items(url, datetime='2017-01-01/2017-12-31') == []
    assert [i.id for i in search_items(url, ids=['tile1'])] == ['tile1']
    assert asset_href(items[0], 'image').endswith('tile0.tif')
    with pytest.raises(KeyError, match=r"no asset 'rgb' \(it has image, nlcd\)"):
        asset_href(items[0], 'rgb')
    with pytest.raises(RuntimeError, match=re.escape('--stac http://127.0.0.1:1:')):
        search_items('http://127.0.0.1:1')


def test_predict_items_and_mosaic_from_the_api(api, demo, tmp_path, capsys):
    url, _ = api
    out = tmp_path / 'maps'
    assert main(_args(demo, out, url, '--datetime', '2018-06-01')) == 0
    for i in range(2):
        cog = out / f'tile{i}_landcover.tif'
        assert cog_validate(str(cog))[0]
        item = pystac.Item.from_file(out / f'tile{i}_landcover.json')
        [link] = item.get_links('derived_from')
        assert link.href == f'{url}/collections/synthetic-naip/items/tile{i}'
        assert item.datetime.year == 2018
        assert item.properties['geosparse:checkpoint_sha256']
        assert item.assets['data'].get_absolute_href() == str(cog)

    # One mosaic over both tiles: the same grid as the scene the tiles came from,
    # so it equals the prediction of the untiled scene, pixel for pixel.
    mos = tmp_path / 'mosaic'
    assert main(_args(demo, mos, url, '--mosaic')) == 0
    with (
        rasterio.open(mos / 'mosaic_landcover.tif') as got,
        rasterio.open(demo / 'landcover.tif') as ref,
    ):
        assert got.transform == ref.transform and got.shape == ref.shape
        np.testing.assert_array_equal(got.read(), ref.read())
    item = json.loads((mos / 'mosaic_landcover.json').read_text())
    assert len([ln for ln in item['links'] if ln['rel'] == 'derived_from']) == 2


def test_a_broken_item_fails_alone(api, demo, tmp_path, capsys):
    url, catalog = api
    (catalog / 'tile1.tif').unlink()  # the asset of one item is gone
    out = tmp_path / 'maps'
    assert main(_args(demo, out, url)) == 1
    err = capsys.readouterr().err
    assert '1 of 2 outputs failed' in err and 'tile1.tif' in err
    assert (out / 'tile0_landcover.tif').exists()
    assert not (out / 'tile1_landcover.tif').exists()
    assert not list(out.glob('.*'))
    # A missing asset key fails every item with a message naming the key.
    assert main([*_args(demo, out, url)[:-5], '--asset', 'rgb', '--quiet']) == 1
    assert "no asset 'rgb'" in capsys.readouterr().err
    args = _args(demo, out, url)
    args[args.index('nlcd')] = 'landcover'  # neither an asset key nor a file
    assert main(args) == 1
    assert "item tile0: no asset 'landcover'" in capsys.readouterr().err
    # An empty search is an error of the command, not of an item.
    assert main(_args(demo, out, url, '--datetime', '2001')) == 2
    assert 'matched no items' in capsys.readouterr().err
