import math

import numpy as np
import pytest
import rasterio

from geosparse.io.cog import write_cog
from geosparse.io.spec import SPEC_TAG, BandSpec, OutputSpec
from geosparse.trainers.heads import class_specs

from ..conftest import UTM_ORIGIN


def test_a_spec_round_trips_through_json_and_a_cog(tmp_path):
    main, probs = class_specs('Task', ['water', 'forest'], probabilities=True)
    main = main.with_properties(checkpoint='m.ckpt', coarse_coverage=0.5)
    assert OutputSpec.from_json(main.to_json()) == main
    assert OutputSpec.from_json(probs.to_json()) == probs
    path = write_cog(
        tmp_path / 'c.tif',
        np.zeros((2, 8, 8), np.uint8),
        'EPSG:32618',
        UTM_ORIGIN,
        nodata=main.nodata,
        **main.cog_options(),
    )
    assert OutputSpec.read(path) == main
    with rasterio.open(path) as ds:
        tags = ds.tags()
        assert ds.descriptions == ('class', 'uncertainty')
        assert ds.scales == (1.0, pytest.approx(1 / 254))
        assert ds.colormap(1)[0] == (0, 112, 255, 255)
    # the individual tags stay readable for GIS users; the spec is one more tag
    assert tags['class_names'] == '["water", "forest"]'
    assert tags['checkpoint'] == 'm.ckpt' and tags['coarse_coverage'] == '0.5'
    assert SPEC_TAG in tags


def test_a_regression_spec_keeps_nan_nodata_and_typed_properties(tmp_path):
    spec = OutputSpec(
        task='T',
        kind='regression',
        bands=(BandSpec('mean', 'the mean'), BandSpec('std')),
        dtype='float32',
        nodata=math.nan,
        names=('height',),
        properties={
            'kernel': {'type': 'rbf', 'lengthscale': 2.0},
            'revealed_points': 3,
        },
    )
    back = OutputSpec.from_json(spec.to_json())
    assert math.isnan(back.nodata) and back.properties == spec.properties
    opts = spec.cog_options()
    assert 'scales' not in opts and 'colormap' not in opts
    assert opts['tags']['output_names'] == '["height"]'
    assert opts['tags']['revealed_points'] == '3'
    assert opts['band_tags'] == [{'definition': 'the mean'}, {}]


def test_a_damaged_spec_names_the_file(tmp_path):
    path = write_cog(
        tmp_path / 'x.tif',
        np.zeros((1, 4, 4), np.uint8),
        'EPSG:32618',
        UTM_ORIGIN,
        tags={SPEC_TAG: '{"task": 1}'},
    )
    with pytest.raises(ValueError, match=r'x\.tif: tag geosparse_output'):
        OutputSpec.read(path)
    plain = write_cog(
        tmp_path / 'y.tif', np.zeros((1, 4, 4), np.uint8), 'EPSG:32618', UTM_ORIGIN
    )
    assert OutputSpec.read(plain) is None
