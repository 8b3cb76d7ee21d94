import argparse
import json
import shlex
import subprocess
import sys

import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from geosparse.cli import build_parser, main
from geosparse.priors import JointDistribution


def test_demo_writes_valid_cog_and_png(tmp_path, capsys):
    assert main(['demo', '--out', str(tmp_path), '--size', '128', '--steps', '2']) == 0
    out = capsys.readouterr().out
    assert 'landcover.tif' in out and 'accuracy' in out
    cog = tmp_path / 'landcover.tif'
    valid, errors, _ = cog_validate(str(cog))
    assert valid, errors
    with rasterio.open(cog) as src:
        assert src.descriptions == ('class', 'uncertainty')
        assert src.crs.to_epsg() == 32618
        assert src.colormap(1)[1][:3] == (38, 115, 0)
        assert 'geosparse_version' in src.tags()
        classes = src.read(1)
        assert set(np.unique(classes)) <= {0, 1, 2, 3}
    assert (tmp_path / 'landcover.png').stat().st_size > 10_000
    item = json.loads((tmp_path / 'landcover.json').read_text())
    assert item['properties']['geosparse:checkpoint'] == 'lsr.ckpt'
    assert 'proj:code' in item['properties'] and item['assets']['data']
    assert not list(tmp_path.glob('.*'))  # no temporary files left behind


def test_priors_estimate_and_show(scene, tmp_path, capsys):
    out = tmp_path / 'est.csv'
    code = main(
        [
            'priors',
            'estimate',
            '--coarse',
            str(scene.coarse),
            '--fine',
            str(scene.fine),
            '--out',
            str(out),
        ]
    )
    assert code == 0
    table = JointDistribution.from_csv(out)
    assert np.allclose(table.eta.sum(1), 1)
    # the synthetic NLCD rules: developed-high cells are mostly impervious
    if 24 in table.coarse_codes:
        assert table.eta[table.coarse_codes.index(24), 3] > 0.7
    assert main(['priors', 'show', str(out)]) == 0
    assert 'impervious' in capsys.readouterr().out


def test_priors_estimate_will_not_replace_an_input_raster(scene, capsys):
    before = scene.coarse.read_bytes()
    args = ['--coarse', str(scene.coarse), '--fine', str(scene.fine)]
    assert main(['priors', 'estimate', *args, '--out', str(scene.coarse)]) == 2
    err = capsys.readouterr().err
    assert '--out' in err and 'would be replaced' in err and len(err.splitlines()) == 1
    assert scene.coarse.read_bytes() == before  # before: the raster became a CSV


def test_priors_estimate_fills_the_coarse_classes_it_did_not_see(
    scene, tmp_path, capsys
):
    out = tmp_path / 'filled.csv'
    args = ['--coarse', str(scene.coarse), '--fine', str(scene.fine), '--out', str(out)]
    assert main(['priors', 'estimate', *args]) == 0
    seen = JointDistribution.from_csv(out).coarse_codes
    assert main(['priors', 'estimate', *args, '--fill', 'nlcd-landcover4']) == 0
    assert 'filled from nlcd-landcover4' in capsys.readouterr().out
    table = JointDistribution.from_csv(out)
    builtin = JointDistribution.builtin()
    assert table.coarse_codes[: len(seen)] == seen
    assert set(table.coarse_codes) == set(seen) | set(builtin.coarse_codes)
    assert main(['priors', 'estimate', *args, '--fill', 'nope.csv']) == 2
    assert '--fill nope.csv' in capsys.readouterr().err


def test_bad_table_is_reported(tmp_path, capsys):
    bad = tmp_path / 'bad.csv'
    bad.write_text('coarse_code,a_mean,a_std\n1,0.4,0.1\n')
    assert main(['priors', 'show', str(bad)]) == 2
    assert 'sum to 0.400' in capsys.readouterr().err


def test_help_teaches():
    res = subprocess.run(
        [sys.executable, '-m', 'geosparse.cli', '--help'],
        capture_output=True,
        text=True,
        check=True,
    )
    assert 'torchgeo fit --config' in res.stdout and 'demo' in res.stdout
    with pytest.raises(SystemExit):
        main(['demo', '--help'])


def _help_examples(parser: argparse.ArgumentParser) -> list[list[str]]:
    """The example commands of a help text, continuation lines joined, comments cut."""
    help_text = parser.format_help()
    if 'Examples:' not in help_text:
        return []
    text = help_text.split('Examples:', 1)[1]
    for line in text.splitlines():  # a lost line break leaves a run of spaces
        assert '   ' not in line.split('#')[0].strip(), line
    joined = text.replace('\\\n', ' ')
    return [
        shlex.split(line, comments=True)
        for line in joined.splitlines()
        if line.strip().startswith('geosparse ')
    ]


def test_help_examples_parse():
    """Every example a help text shows is one valid command (no collapsed lines)."""
    parser = build_parser()
    helps = [parser]
    for action in parser._subparsers._group_actions:  # type: ignore[union-attr]
        helps += list(action.choices.values())
    examples = [cmd for p in helps for cmd in _help_examples(p)]
    assert len(examples) >= 8
    for cmd in examples:
        assert cmd[0] == 'geosparse' and cmd.count('geosparse') == 1, cmd
        parser.parse_args(cmd[1:])


def test_predict_cli_writes_cogs_resumes_and_lists_failures(tmp_path, capsys):
    demo = tmp_path / 'demo'
    assert main(['demo', '--out', str(demo), '--size', '128', '--steps', '1']) == 0
    image = demo / 'scene' / 'scene_naip.tif'
    coarse = demo / 'scene' / 'scene_nlcd.tif'
    out = tmp_path / 'maps'
    args = ['predict', '--checkpoint', str(demo / 'lsr.ckpt'), '--out', str(out)]
    args += ['--coarse', str(coarse), '--quiet']
    missing = tmp_path / 'missing.tif'
    capsys.readouterr()
    assert main([*args, str(image), str(missing)]) == 1
    err = capsys.readouterr().err
    assert 'missing.tif' in err and '1 of 2 outputs failed' in err
    cog = out / 'scene_naip_landcover.tif'
    valid, errors, _ = cog_validate(str(cog))
    assert valid, errors
    with rasterio.open(cog) as src, rasterio.open(demo / 'landcover.tif') as ref:
        assert src.descriptions == ('class', 'uncertainty')
        # The same checkpoint and blocks reproduce the demo's map exactly.
        np.testing.assert_array_equal(src.read(), ref.read())
    item = json.loads((out / 'scene_naip_landcover.json').read_text())
    assert item['assets']['data']['href'] == './scene_naip_landcover.tif'
    assert item['properties']['geosparse:checkpoint'] == 'lsr.ckpt'
    assert not list(out.glob('.*'))
    assert main([*args, '--resume', str(image)]) == 0
    assert 'skipped' in capsys.readouterr().out


def test_predict_cli_rejects_bad_checkpoints(tmp_path, capsys):
    image = tmp_path / 'in.tif'
    args = ['predict', str(image), '--out', str(tmp_path / 'maps'), '--checkpoint']
    assert main([*args, str(tmp_path / 'none.ckpt')]) == 2
    assert 'none.ckpt: no such file' in capsys.readouterr().err
    junk = tmp_path / 'junk.ckpt'
    junk.write_text('not a checkpoint')
    assert main([*args, str(junk)]) == 2
    assert 'junk.ckpt: not a checkpoint' in capsys.readouterr().err
    assert not (tmp_path / 'maps').exists()


def test_local_cluster_and_threads_write_the_same_bytes(tmp_path):
    demo = tmp_path / 'demo'
    assert main(['demo', '--out', str(demo), '--size', '256', '--steps', '1']) == 0
    image = str(demo / 'scene' / 'scene_naip.tif')
    base = ['predict', '--checkpoint', str(demo / 'lsr.ckpt'), image, '--quiet']
    base += ['--coarse', str(demo / 'scene' / 'scene_nlcd.tif'), '--block', '128']
    assert main([*base, '--out', str(tmp_path / 'a')]) == 0
    assert main([*base, '--out', str(tmp_path / 'b'), '--workers', '2']) == 0
    a = (tmp_path / 'a' / 'scene_naip_landcover.tif').read_bytes()
    b = (tmp_path / 'b' / 'scene_naip_landcover.tif').read_bytes()
    assert a == b
    # An existing cluster, by its scheduler's address.
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol='tcp',
        dashboard_address=None,
    ) as cluster:
        assert cluster.scheduler_address.startswith('tcp://')
        args = [
            *base,
            '--out',
            str(tmp_path / 'c'),
            '--scheduler',
            cluster.scheduler_address,
        ]
        assert main(args) == 0
    assert (tmp_path / 'c' / 'scene_naip_landcover.tif').read_bytes() == a
