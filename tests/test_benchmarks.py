import json
import math

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import torch

from geosparse.datasets.synthetic import make_point_labels, make_scene

from ._scripts import run_script
from .conftest import ROOT

#: Every test here runs a benchmark script end to end (CI: once, in its first step).
pytestmark = pytest.mark.slow


def test_loss_overhead_prints_ratio():
    res = run_script(
        'loss_overhead.py',
        '--repeats',
        '1',
        '--size',
        '64',
        '--batch-size',
        '2',
        '--posterior-size',
        '64',
        '--memory-size',
        '256',
    )
    out = json.loads(res.stdout)
    assert out['lsr_over_ce'] > 0
    assert out['npp_over_mse'] > 0 and out['posterior_over_forward'] > 0
    assert out['posterior_peak_over_map'] >= 0


def chesapeake_split(data_dir, tmp_path, train, evaluate):
    """Symlink the shared patches with ids ``train`` / ``evaluate`` into tr/ and ev/."""
    src = data_dir / 'chesapeake-wv2014' / 'train'
    for split, ids in (('tr', train), ('ev', evaluate)):
        (tmp_path / split).mkdir()
        for i in ids:
            for f in src.glob(f'*_{i}_*.tif'):
                (tmp_path / split / f.name).symlink_to(f)


def test_lsr_chesapeake_runs_on_real_patches(data_dir, tmp_path):
    chesapeake_split(data_dir, tmp_path, ['00', '03'], ['07'])
    out = tmp_path / 'r.json'
    ckpt = tmp_path / 'lsr.ckpt'
    run_script(
        'lsr_chesapeake.py',
        '--train',
        str(tmp_path / 'tr'),
        '--eval',
        str(tmp_path / 'ev'),
        '--steps',
        '1',
        '--batch-size',
        '2',
        '--seeds',
        '0',
        '1',
        '--diagnose',
        '--out',
        str(out),
        '--save-checkpoint',
        str(ckpt),
    )
    res = json.loads(out.read_text())
    assert set(res['protocols']) == {'cross-tile', 'target-sr', 'hr+sr'}
    wanted = {
        'cross-tile': {'lsr', 'soft-naive', 'hard-naive', 'hr'},
        'target-sr': {'lsr', 'soft-naive', 'hard-naive', 'hr-target'},
        'hr+sr': {'hr', 'hr+lsr'},
    }
    # only the oracle hr-target learns from the evaluation patches' fine labels
    for name, methods in wanted.items():
        for method in methods:
            used = res['trained_on'][name][method]
            on_eval = name == 'target-sr'
            assert used == {
                'fine_labels': not on_eval or method == 'hr-target',
                'evaluation_patches': on_eval,
            }, (name, method)
    for name, entry in res['protocols'].items():
        assert set(entry['methods']) == wanted[name] | {'nlcd-argmax'}
        for scores in entry['methods'].values():
            assert 0 <= scores['acc'] <= 1 and 0 <= scores['miou'] <= 1
            # patch 07 has 1456 px of NLCD 21: too few for the developed scores
            assert scores['developed']['pixels'] == 1456
            assert 'fewer than' in scores['developed']['note']
    assert set(res['goals']) == {
        'cross-tile: lsr >= nlcd-argmax + 0.02',
        'cross-tile: lsr > soft-naive',
        'target-sr: lsr >= nlcd-argmax + 0.02',
        'target-sr: lsr > soft-naive',
        'hr+sr: hr+lsr > hr',
    }
    assert res['data']['eval'] == ['m_3708020_sw_07_naip.tif']
    assert res['data']['fine'] == res['data']['train'] and res['shift'] is None
    # hr trained on --train is both the cross-tile upper bound and HR-only
    cross, hr_sr = res['protocols']['cross-tile'], res['protocols']['hr+sr']
    assert cross['methods']['hr'] == hr_sr['methods']['hr']
    # auto by default: a patch of the training tile stays raw; the scores with
    # matched radiometry beside
    assert cross['methods']['lsr']['radiometry_matched'] == 0.0
    decision = cross['seeds']['0']['lsr']['radiometry']
    assert decision['mode'] == 'auto' and max(decision['displacement']) < 0.5
    assert cross['methods']['lsr']['alternative']['radiometry'] == 'match'
    assert len(res['displacement']['eval']) == 4  # per band, the patches' own
    assert max(res['displacement']['train_patch_max']) < 0.5
    assert 0 <= cross['methods']['lsr']['alternative']['miou'] <= 1
    assert 'alternative' not in cross['methods']['nlcd-argmax']
    res['methods'] = cross['methods']
    res['seeds'] = cross['seeds']
    # The reported numbers are the means of the two seeds' own results.
    runs = [res['seeds'][s]['lsr'] for s in ('0', '1')]
    assert res['methods']['lsr']['miou'] == pytest.approx(
        (runs[0]['miou'] + runs[1]['miou']) / 2
    )
    # The defaults: the local model, batch balance, raw bands, the network alone.
    hp = torch.load(ckpt, map_location='cpu', weights_only=True)['hyper_parameters']
    assert hp['model'] == 'local' and hp['coarse_balance'] == 'batch'
    assert hp['standardize'] == 'none' and hp['prior_weight'] == 0
    # The checkpoint predicts through the CLI, block by block, the same probabilities
    # as the whole-patch evaluation of the benchmark (stored as uint8, scale 1/254).
    from geosparse.cli import main as cli

    # With --radiometry match the raster is first mapped onto the
    # training imagery's band distributions that the checkpoint keeps.
    from geosparse.datasets import RadiometricShift
    from geosparse.trainers import LabelSuperResolutionTask

    naip = next((tmp_path / 'ev').glob('*_naip.tif'))
    task = LabelSuperResolutionTask.load_from_checkpoint(ckpt, map_location='cpu')
    reference = task.reference_quantiles()
    assert reference is not None and reference.shape == (4, 101)
    with rasterio.open(naip) as src:
        raw = src.read().astype(np.float32)
    shift = RadiometricShift.to_reference([raw.astype(np.float64)], reference)
    for radiometry, image in (('off', raw), ('match', shift(raw))):
        maps = tmp_path / radiometry
        args = ['predict', '--checkpoint', str(ckpt), '--out', str(maps), '--quiet']
        args += ['--radiometry', radiometry, '--block', '128', '--probabilities']
        assert cli([*args, str(naip)]) == 0
        with torch.no_grad():
            want = task.eval()(torch.from_numpy(image[None])).softmax(1)[0].numpy()
        name = f'{naip.stem}_landcover_probabilities.tif'
        with rasterio.open(maps / name) as out:
            got = out.read().astype(np.float64) / 254
        assert got.shape == want.shape and want.std(axis=(1, 2)).max() > 1e-3
        np.testing.assert_allclose(got, want, atol=1 / 254 + 1e-6)
        with rasterio.open(maps / f'{naip.stem}_landcover.tif') as out:
            assert ('radiometry' in out.tags()) == (radiometry == 'match')
    # --diagnose: per NLCD code of patch 07, the truth fractions of the files.
    with rasterio.open(next((tmp_path / 'ev').glob('*_nlcd.tif'))) as f:
        nlcd = f.read(1)
    with rasterio.open(next((tmp_path / 'ev').glob('*_lc.tif'))) as f:
        lc = f.read(1)
    rows = res['methods']['lsr']['by_coarse']
    assert set(rows) == {str(c) for c in np.unique(nlcd)}
    for code, row in rows.items():
        m = nlcd == int(code)
        assert row['pixels'] == int(m.sum())
        want = [float(np.mean(lc[m] == k)) for k in (1, 2, 3, 4)]
        assert row['truth'] == pytest.approx(want, abs=1e-3)
        assert sum(row['map']) == pytest.approx(1, abs=1e-2)
        assert sum(row['network']) == pytest.approx(1, abs=1e-2)
    assert rows['41']['prior'][1] == pytest.approx(0.92)  # forest in deciduous
    assert 'network' not in res['methods']['nlcd-argmax']['by_coarse']['41']
    # Patch 07 holds forest and field: a ranking AUC for both, for trained methods.
    aucs = res['methods']['lsr']['ranking_auc']
    assert set(aucs) == {'forest', 'field'}
    assert all(0 <= v <= 1 for v in aucs.values())
    assert aucs['forest'] == pytest.approx(
        np.mean([res['seeds'][s]['lsr']['ranking_auc']['forest'] for s in '01']),
        abs=1e-4,
    )
    assert 'ranking_auc' not in res['methods']['nlcd-argmax']


def test_lsr_tail_average_is_the_mean_of_the_late_weights(monkeypatch, tmp_path):
    """--average-from: the weights after training are the mean of those of the late
    steps, while the radiometry histogram stays the one counted (not averaged)."""
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    from lightning.pytorch import LightningModule, Trainer
    from lsr_chesapeake import TailAverage
    from torch.utils.data import DataLoader, TensorDataset

    class Toy(LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.register_buffer(
                'radiometry_counts', torch.zeros(3, dtype=torch.float64)
            )
            self.seen: list[float] = []

        def training_step(self, batch, batch_idx):
            self.radiometry_counts += 1
            return ((self.w - batch[0]) ** 2).sum()

        def on_train_batch_end(self, outputs, batch, batch_idx):
            self.seen.append(float(self.w))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.5)

    toy = Toy()
    data = DataLoader(TensorDataset(torch.arange(1.0, 7.0)[:, None]), batch_size=1)
    trainer = Trainer(
        max_steps=6,
        callbacks=[TailAverage(3)],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(toy, data)
    assert len(toy.seen) == 6 and toy.seen[3] != toy.seen[5]
    assert float(toy.w) == pytest.approx(np.mean(toy.seen[3:]))
    assert toy.radiometry_counts.tolist() == [6.0, 6.0, 6.0]
    # a checkpoint saved after training (--save-checkpoint) holds the same
    trainer.save_checkpoint(tmp_path / 'toy.ckpt')
    state = torch.load(tmp_path / 'toy.ckpt', weights_only=True)['state_dict']
    assert float(state['w']) == pytest.approx(np.mean(toy.seen[3:]))
    assert state['radiometry_counts'].tolist() == [6.0, 6.0, 6.0]


def test_lsr_average_from_outside_0_1_is_an_error(tmp_path):
    res = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path,
        '--eval',
        tmp_path,
        '--average-from',
        1,
        check=False,
    )
    assert res.returncode != 0 and '--average-from' in res.stderr


@pytest.mark.parametrize(
    ('extra', 'message'),
    [
        ((5, 10), 'between 0 and --steps 10'),
        ((5, 5), 'give each step once'),
        ((5, '--save-checkpoint', 'm.ckpt'), '--save-checkpoint: choose one'),
    ],
)
def test_lsr_bad_select_steps_is_an_error(tmp_path, extra, message):
    res = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path,
        '--eval',
        tmp_path,
        '--steps',
        10,
        '--select-steps',
        *extra,
        check=False,
    )
    assert res.returncode != 0 and message in res.stderr


@pytest.mark.parametrize('warmup', [-1, 10])
def test_lsr_naive_warmup_outside_the_budget_is_an_error(tmp_path, warmup):
    res = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path,
        '--eval',
        tmp_path,
        '--steps',
        10,
        '--naive-warmup',
        warmup,
        check=False,
    )
    assert res.returncode != 0 and f'--naive-warmup {warmup}' in res.stderr


def test_lsr_coarse_fit_reads_only_the_coarse_labels(monkeypatch, tmp_path):
    """coarse_fit: zero L1 distance when each NLCD region's mean probabilities are
    the joint distribution's row, positive otherwise; the fine labels are not read."""
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    from lsr_chesapeake import coarse_fit

    from geosparse.losses import StatisticsMatchingLoss

    eta = torch.tensor([[0.7, 0.3], [0.1, 0.9]])
    codes = torch.full((256,), -2, dtype=torch.long)
    codes[41], codes[82] = 0, 1
    coarse = np.full((6, 8), 41, dtype=np.uint8)
    coarse[:, 5:] = 82

    class Task:
        lsr_loss = StatisticsMatchingLoss(eta, torch.full((2, 2), 0.2))

        def __init__(self, probs: torch.Tensor) -> None:
            self.probs = probs

        def window_probabilities(self, image: torch.Tensor) -> torch.Tensor:
            assert image.shape == (1, 4, 6, 8)
            return self.probs[None]

        def coarse_index(self, raw: torch.Tensor) -> torch.Tensor:
            return codes[raw]

    class Stub:  # a predictor: its task, no radiometric shift, a class band
        shift = None

        def __init__(self, probs: torch.Tensor) -> None:
            self.task = Task(probs)

        def __call__(self, image: np.ndarray, raw: np.ndarray) -> np.ndarray:
            return self.task.probs.argmax(0)[None].numpy()

    naip, nlcd = tmp_path / 'a_naip.tif', tmp_path / 'a_nlcd.tif'
    for path, bands in ((naip, np.zeros((4, 6, 8), np.uint8)), (nlcd, coarse[None])):
        with rasterio.open(
            path,
            'w',
            driver='GTiff',
            width=8,
            height=6,
            count=len(bands),
            dtype='uint8',
        ) as dst:
            dst.write(bands)
    index = codes[torch.from_numpy(coarse.astype(np.int64))]
    exact = eta[index].permute(2, 0, 1)  # every pixel holds its region's row
    data = [(naip, nlcd, tmp_path / 'missing_lc.tif')]
    fit = coarse_fit(Stub(exact), data, window=4)  # type: ignore[arg-type]
    assert fit['fraction_l1'] == pytest.approx(0.0, abs=1e-6)
    # the map is each region's argmax: off by the minority share of each row
    assert fit['map_l1'] == pytest.approx((5 * 0.6 + 3 * 0.2) / 8, abs=1e-6)
    swapped = coarse_fit(Stub(exact.flip(0)), data, window=4)  # type: ignore[arg-type]
    assert swapped['fraction_l1'] > 0.5 and swapped['lsr_nll'] > fit['lsr_nll']
    assert swapped['map_l1'] > fit['map_l1']


def test_lsr_chesapeake_select_steps_reports_every_budget(data_dir, tmp_path):
    """--select-steps: the result is the budget with the lowest coarse fit."""
    chesapeake_split(data_dir, tmp_path, ['03'], ['07'])
    out = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'tr',
        '--eval',
        tmp_path / 'ev',
        '--protocols',
        'cross-tile',
        '--methods',
        'lsr',
        '--steps',
        3,
        '--select-steps',
        1,
        2,
        '--batch-size',
        2,
    )
    lsr = json.loads(out.stdout)['protocols']['cross-tile']['methods']['lsr']
    budgets = lsr['budgets']
    assert set(budgets) == {'1', '2', '3'}
    [chosen] = lsr['selected']
    assert chosen == int(
        min(budgets, key=lambda s: budgets[s]['coarse_fit']['lsr_nll'])
    )
    assert lsr['miou'] == budgets[str(chosen)]['miou']


def test_lsr_chesapeake_ablation_flags_reach_the_model(data_dir, tmp_path):
    chesapeake_split(data_dir, tmp_path, ['03'], ['07'])
    ckpt = tmp_path / 'lsr.ckpt'
    out = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'tr',
        '--eval',
        tmp_path / 'ev',
        '--methods',
        'lsr',
        '--steps',
        1,
        '--batch-size',
        2,
        '--blocks',
        'cells',
        '--var-floor-scale',
        'pixel',
        '--prior-rule',
        'fractions',
        '--prior-weight',
        1,
        '--model',
        'unet',
        '--standardize',
        'sample',
        '--coarse-balance',
        'none',
        '--lsr-variant',
        'kl',
        '--save-checkpoint',
        ckpt,
    )
    res = json.loads(out.stdout)
    assert set(res['protocols']) == {'cross-tile', 'target-sr'}  # no hr+sr method
    for entry in res['protocols'].values():
        assert set(entry['methods']) == {'lsr', 'nlcd-argmax'}
    hp = torch.load(ckpt, map_location='cpu', weights_only=True)['hyper_parameters']
    assert hp['prior_rule'] == 'fractions' and hp['var_floor_scale'] == 'pixel'
    assert hp['model'] == 'unet' and hp['standardize'] == 'sample'
    assert hp['coarse_balance'] == 'none' and hp['prior_weight'] == 1
    assert hp['lsr_variant'] == 'kl'


def test_lsr_chesapeake_holdout_shift_and_target_region(data_dir, tmp_path):
    """--holdout splits one folder; --shift moves the held-out imagery to another
    acquisition; --train = --eval means target-region SR alone."""
    chesapeake_split(data_dir, tmp_path, ['03', '07'], ['07'])
    sample = data_dir / 'naip-samples' / 'm_4208701_ne_16_060_20200902.tif'
    common = ['--steps', 1, '--batch-size', 2, '--methods', 'lsr,hr+lsr']
    out = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'tr',
        '--holdout',
        '07',
        '--shift',
        sample,
        *common,
    )
    res = json.loads(out.stdout)
    assert res['data']['train'] == ['m_3708020_sw_03_naip.tif']
    assert res['data']['eval'] == ['m_3708020_sw_07_naip.tif']
    assert set(res['protocols']) == {'cross-tile', 'target-sr', 'hr+sr'}
    assert set(res['protocols']['hr+sr']['methods']) == {'hr+lsr', 'nlcd-argmax'}
    assert res['shift']['target'] == sample.name
    assert len(res['shift']['bands']) == 4
    # matched in the evaluation patches' NLCD mix, the pooled reference beside
    lsr = res['protocols']['cross-tile']['methods']['lsr']
    assert res['match_reference'] == 'nlcd'
    assert 0 <= lsr['pooled_reference']['miou'] <= 1
    assert lsr['pooled_reference']['radiometry_matched'] == lsr['radiometry_matched']
    harmonized = res['harmonized']  # hr+lsr's target imagery, onto the fine imagery
    assert harmonized['mode'] == 'auto' and len(harmonized['displacement']) == 4
    assert harmonized['matched'] == (max(harmonized['displacement']) > 0.5)
    same = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'ev',
        '--eval',
        tmp_path / 'ev',
        *common,
    )
    assert set(json.loads(same.stdout)['protocols']) == {'target-sr'}
    bad = run_script(
        'lsr_chesapeake.py',
        '--train',
        str(tmp_path / 'tr'),
        '--holdout',
        '99',
        check=False,
    )
    assert bad.returncode != 0 and '--holdout 99: matches 0 of the 2' in bad.stderr


def test_ranking_auc_is_the_pairwise_probability(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    from lsr_chesapeake import ranking_auc

    rng = np.random.default_rng(0)
    score = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.4
    valid = rng.random(60) < 0.9
    s, y = score[valid], positive[valid]
    pairs = [1.0 if a > b else 0.5 if a == b else 0.0 for a in s[y] for b in s[~y]]
    assert ranking_auc(score, positive, valid) == pytest.approx(
        np.mean(pairs), abs=1e-4
    )
    assert ranking_auc(score, np.zeros(60, bool), valid) is None
    assert (
        ranking_auc(np.arange(4.0), np.array([0, 0, 1, 1], bool), np.ones(4, bool)) == 1
    )


def test_lsr_chesapeake_rejects_repeated_seeds(tmp_path):
    res = run_script(
        'lsr_chesapeake.py',
        '--train',
        str(tmp_path),
        '--eval',
        str(tmp_path),
        '--seeds',
        '0',
        '0',
        check=False,
    )
    assert res.returncode == 2
    assert '--seeds [0, 0]: give each seed once' in res.stderr


def test_predict_throughput_prints_ratios(tmp_path):
    out = tmp_path / 'r.json'
    res = run_script(
        'predict_throughput.py',
        '--size',
        '192',
        '--block',
        '64',
        '--halo',
        '8',
        '--repeats',
        '1',
        '--memory-repeats',
        '1',
        '--out',
        str(out),
        check=False,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    got = json.loads(res.stdout[res.stdout.index('{') :])
    assert got == json.loads(out.read_text())
    assert got['end_to_end_over_forward'] > 0 and got['memory_4x_over_1x'] > 0.5
    assert got['peak_rss_mb_4x'] > 100
    assert got['cluster_bytes_equal_threaded'] is True


def test_npp_paper_prints_every_dataset_pattern_and_fraction(tmp_path):
    rng = np.random.default_rng(0)
    digits = (rng.random((40, 28, 28)) > 0.7).astype(np.uint8) * 255
    npz = tmp_path / 'digits.npz'
    np.savez(npz, images=digits, labels=np.zeros(40))
    out = tmp_path / 'r.json'
    res = run_script(
        'npp_paper.py', '--mnist', npz, '--images', 40, '--epochs', 1, '--out', out
    )
    got = json.loads(res.stdout)
    assert got == json.loads(out.read_text())
    methods = {'mse', 'npp-static', 'npp-learnable', 'npp-context'}
    for name in ('synthetic', 'pin-mnist'):
        assert set(got['datasets'][name]) == {'grid', 'random'}
        for pattern in got['datasets'][name].values():
            assert set(pattern) == methods
            for s in pattern.values():
                assert s['mse'] >= 0 and s['r2'] <= 1
        curves = got['revelation'][name]
        assert set(curves) == {
            f'{m}{t}' for m in methods - {'mse'} for t in ('', '/trained')
        }
        for key, curve in curves.items():
            assert list(curve) == ['0.0', '0.25', '0.5', '0.75', '1.0']
            # The re-fit's curves say how much the kernel as trained weighed.
            weights = [curve[f].get('trained_weight') for f in list(curve)[1:]]
            if key.endswith('/trained'):
                assert weights == [None] * 4
            else:
                assert all(0 <= w <= 1 for w in weights), weights
        assert got['best_kernel'][name] in methods - {'mse'}
    # Two seeds by default; the top level is their mean.
    assert list(got['per_seed']) == ['0', '1']
    runs = [got['per_seed'][k]['datasets']['pin-mnist']['random']['mse'] for k in '01']
    mean = got['datasets']['pin-mnist']['random']['mse']
    assert mean['r2'] == pytest.approx((runs[0]['r2'] + runs[1]['r2']) / 2)


def test_npp_paper_names_a_bad_mnist_file(tmp_path):
    res = run_script('npp_paper.py', '--mnist', tmp_path / 'nope.npz', check=False)
    assert res.returncode != 0 and '--mnist' in res.stderr and 'nope.npz' in res.stderr


@pytest.fixture(scope='module')
def height_scene(tmp_path_factory):
    root = tmp_path_factory.mktemp('npp_geo')
    scene = make_scene(root, size=96, seed=3)
    points = make_point_labels(scene, n=120, seed=3)
    return scene, points, root / 'scene_height.tif'


def test_npp_geo_on_points_with_dense_truth(height_scene, tmp_path):
    scene, points, truth = height_scene
    out = tmp_path / 'r.json'
    res = run_script(
        'npp_geo.py',
        '--image',
        scene.image,
        '--points',
        points,
        '--value',
        'height',
        '--truth',
        truth,
        '--model',
        'fcn',
        '--patch-size',
        32,
        '--steps',
        30,
        '--kernel-family',
        'matern32',
        '--out',
        out,
    )
    got = json.loads(out.read_text())
    assert got['settings']['kernel_family'] == 'matern32'
    gp = {'npp-gp', 'npp-gp-trained', 'mse-gp', 'constant', 'ok', 'rk'}
    gp |= {'ok-revealed', 'rk-revealed', 'npp-gp-all'}
    gp |= {'npp-gp-network', 'npp-gp-network-all', 'npp-gp-bands', 'npp-gp-bands-all'}
    gp |= {'npp-gp-kriging', 'npp-gp-kriging-all', 'npp-gp-select', 'npp-gp-select-all'}
    assert set(got['methods']) == {'mse', 'npp'} | gp
    assert set(got['calibration']) == gp
    assert got['points']['evaluated_on'] == 'truth'
    # Every truth pixel but those of the 120 points (train + revealed).
    frame = gpd.read_file(points)
    pixels = {
        (round(x, 3), round(y, 3))
        for x, y in zip(frame.geometry.x, frame.geometry.y, strict=True)
    }
    assert got['points']['train'] + got['points']['revealed'] == 120
    assert got['points']['evaluated'] == 96 * 96 - len(pixels)
    for c in got['calibration'].values():
        assert 0 <= c['within_1sd'] <= c['within_2sd'] <= 1 and math.isfinite(c['nlpd'])
        assert 0 <= c['central_68'] <= c['central_95'] <= 1
    # For a Gaussian the central intervals are the sd counts (a mixture's are not).
    for name in ('ok', 'npp-gp-trained'):
        c = got['calibration'][name]
        assert c['central_68'] == pytest.approx(c['within_1sd'], abs=1e-3)
        assert c['central_95'] == pytest.approx(c['within_2sd'], abs=1e-3)
    fit = got['per_seed']['0']['kernel'][0]['npp-gp']
    assert fit['source'] == 'refit on the revealed points' and fit['points'] == 40
    assert set(fit['loo_nlpd_by_drift']) == {'bands', 'network'}
    given_all = got['per_seed']['0']['kernel'][0]['npp-gp-all']
    assert set(given_all['loo_nlpd_by_drift']) == {'bands', 'network', 'kriging'}
    # Given every point, the kriging trend is fitted on all 120 and not on the network.
    kriging = got['per_seed']['0']['kernel'][0]['npp-gp-kriging-all']
    assert kriging['drift'] == 'kriging' and kriging['trend']['slope'] == 0.0
    assert kriging['points'] == 120
    # The default stacks the trends (weights summing to 1) or keeps the one left.
    weights = [p['weight'] for p in given_all.get('stack', [{'weight': 1.0}])]
    assert sum(weights) == pytest.approx(1.0) and min(weights) >= 1e-3
    chosen = got['per_seed']['0']['kernel'][0]['npp-gp-select-all']
    scores = chosen['loo_nlpd_by_drift']
    assert chosen['drift'] == min(scores, key=scores.get) and 'stack' not in chosen
    assert set(got['revelation']) == {'refit', 'trained'}
    assert list(got['revelation']['refit']) == ['0.25', '0.5', '1.0']
    # Regression kriging on the bands of an image that explains the height beats
    # the constant.
    assert got['methods']['rk']['rmse'] < got['methods']['constant']['rmse']
    # Conditioning on revealed points of a smooth field must help the NPP map.
    assert got['methods']['npp-gp']['mse'] < got['methods']['npp']['mse']
    assert 'trained' in res.stderr


def test_npp_geo_csv_points_need_their_crs(height_scene, tmp_path):
    scene, points, _ = height_scene
    frame = gpd.read_file(points)
    csv = tmp_path / 'pts.csv'
    frame.assign(x=frame.geometry.x, y=frame.geometry.y).drop(
        columns='geometry'
    ).to_csv(csv, index=False)
    common = [
        '--image',
        scene.image,
        '--points',
        csv,
        '--value',
        'height',
        '--model',
        'fcn',
        '--patch-size',
        32,
        '--steps',
        2,
    ]
    res = run_script('npp_geo.py', *common, check=False)  # read as lon/lat
    assert res.returncode != 0 and '--points-crs' in res.stderr
    got = json.loads(
        run_script('npp_geo.py', *common, '--points-crs', 'EPSG:32618').stdout
    )
    assert got['points']['evaluated_on'] == 'test points'
    assert got['points']['evaluated'] == 30  # a quarter of 120
    got = json.loads(
        run_script(
            'npp_geo.py', *common, '--points-crs', 'EPSG:32618', '--test-points', points
        ).stdout
    )
    assert got['points']['evaluated'] == 120  # every point of the test file
    assert got['points']['train'] + got['points']['revealed'] == 120
    res = run_script('npp_geo.py', *common[:4], '--value', 'nope', check=False)
    assert res.returncode != 0 and "'nope'" in res.stderr


def test_npp_geo_on_real_kootenay_canopy(data_dir, tmp_path):
    d = data_dir / 'kootenay-trees'
    got = json.loads(
        run_script(
            'npp_geo.py',
            '--image',
            d / 'kootenayOrtho.tif',
            '--truth',
            d / 'kootenayCHM.tif',
            '--sample-truth',
            60,
            '--model',
            'fcn',
            '--steps',
            5,
        ).stdout
    )
    with rasterio.open(d / 'kootenayCHM.tif') as src:
        finite = int(np.isfinite(src.read(1)).sum())  # the CHM has nodata holes
    assert got['points'] == {
        'train': 40,
        'revealed': 20,
        'evaluated': finite - 60,
        'evaluated_on': 'truth',
    }


def counting_args(image, points, out, *extra):
    return [
        '--image',
        image,
        '--points',
        points,
        '--out',
        out,
        '--steps',
        '2',
        '--batch',
        '2',
        '--patch',
        '32',
        '--eval-size',
        '32',
        '--fit-steps',
        '3',
        '--speed-map',
        '32',
        '--speed-points',
        '40',
        '--repeat',
        '1',
        *extra,
    ]


def test_counting_prints_every_method_and_the_speed_ratios(tmp_path):
    from geosparse.datasets import make_object_scene

    scene = make_object_scene(tmp_path / 'scene', size=128, n=60, seed=5)
    out = tmp_path / 'c.json'
    res = run_script('counting.py', *counting_args(scene.image, scene.points, out))
    result = json.loads(out.read_text())
    assert json.loads(res.stdout[res.stdout.index('{\n') :]) == result
    methods = {'mse', 'bayesian', 'gst', 'ot', 'p2r', 'p2r-semi', 'p2r-labelled-only'}
    assert methods <= set(result['methods'])
    for scores in result['methods'].values():
        assert scores['mae'] >= 0 and scores['rmse'] >= scores['mae'] - 1e-9
        assert abs(scores['bias']) <= scores['mae'] + 1e-9
        assert scores['seconds'] > 0 and scores['step_seconds'] > 0
        within1, within2 = scores['count_within_1sd'], scores['count_within_2sd']
        assert 0 <= within1 <= within2 <= 1
        assert scores['count_dispersion'] == 1.0  # no validation windows: phi as given
    speed = result['speed']
    assert speed['gst_speedup_vs_ot'] > 0 and speed['p2r_speedup_vs_hungarian'] > 0
    assert speed['gaussian_fit_seconds_per_megapixel'] > 0
    settings = result['speed_settings']['gst_vs_ot']
    assert settings['windows'] == [2, 1, 32, 32]  # the training batch, not the band
    assert result['counts']['eval_tiles'] == 8  # bottom 38 rows: 2 x 4 tiles of 32
    semi = result['semi_diagnostics']  # the teacher exists after the 1-step warm-up
    assert semi['windows'] == 8 and semi['pseudo']['true_objects_per_window'] > 0
    for scheme in ('p2r', 'p2p'):
        shares = semi['psam'][scheme]
        assert 0 <= shares['negative_on_objects'] <= 1
        parts = shares['positive'] + shares['region_negative'] + shares['background']
        assert parts == pytest.approx(1.0)
    # a box CSV as points, and a separate test image
    other = make_object_scene(tmp_path / 'other', size=96, n=30, seed=6)
    out2 = tmp_path / 'c2.json'
    run_script(
        'counting.py',
        *counting_args(scene.image, scene.boxes, out2, '--methods', 'mse', 'p2r'),
        '--test-image',
        other.image,
        '--test-points',
        other.boxes,
    )
    second = json.loads(out2.read_text())
    assert set(second['methods']) == {'mse', 'p2r'}
    assert second['counts']['eval_tiles'] == 9


def test_counting_semi_supervised_switches_on_a_transposed_condition(tmp_path):
    from geosparse.datasets import make_object_scene

    scene = make_object_scene(tmp_path / 'scene', size=128, n=60, seed=5)
    out = tmp_path / 'semi.json'
    switches = [
        '--methods',
        'p2r-semi',
        '--predict-with',
        'student',
        '--strong-view-statistics',
        'keep',
        '--pseudo-flips',
        '--unlabelled-weight',
        '0.5',
        '--rules',
        'cells',
        'peaks',
        '--norm-stats',
        'train',
        'eval',
        '--top-rows',
        '96',
        '--transpose',
    ]
    run_script('counting.py', *counting_args(scene.image, scene.points, out, *switches))
    result = json.loads(out.read_text())
    # the switches reach the task
    task = result['semi_task']
    assert task['predict_with'] == 'student' and task['strong_view_statistics'] is False
    assert task['pseudo_flips'] is True and task['unlabelled_weight'] == 0.5
    assert task['rule'] == 'cells'
    # the student is scored as p2r-semi and its EMA teacher beside it, and the
    # student counted by local maxima: a subset of the cells, so never more
    methods = result['methods']
    assert set(methods) == {
        'p2r-semi',
        'p2r-semi-teacher',
        'p2r-semi@peaks',
        'p2r-semi@norm-train',
        'p2r-semi@norm-eval',
    }
    assert methods['p2r-semi@peaks']['bias'] <= methods['p2r-semi']['bias'] + 1e-9
    for name in ('p2r-semi@norm-train', 'p2r-semi@norm-eval'):
        assert abs(methods[name]['bias']) <= methods[name]['mae'] + 1e-9
    # the condition: the top 96 rows keep their points; transposed, the image is 128
    # rows of 96, 90 rows train, the last 38 give 2 x 3 evaluation tiles of 32
    with rasterio.open(scene.image) as src:
        geometry = gpd.read_file(scene.points).to_crs(src.crs).geometry
        rows, _ = rasterio.transform.rowcol(src.transform, geometry.x, geometry.y)
    assert result['counts']['points'] == int((np.asarray(rows) < 96).sum())
    assert result['counts']['eval_tiles'] == 6
    assert result['settings']['image'] == str(scene.image)
    bad = tmp_path / 'boxes.csv'
    bad.write_text('xmin,ymin,xmax,ymax\n1,1,3,3\n')
    res = run_script(
        'counting.py',
        '--image',
        scene.image,
        '--points',
        bad,
        '--transpose',
        check=False,
    )
    assert res.returncode == 2 and 'vector file' in res.stderr
    res = run_script(
        'counting.py',
        '--image',
        scene.image,
        '--points',
        scene.points,
        '--top-rows',
        '500',
        check=False,
    )
    assert res.returncode == 2 and 'has 128 rows' in res.stderr


def test_counting_transductive_variant_and_its_parser_error(tmp_path):
    from geosparse.datasets import make_object_scene

    scene = make_object_scene(tmp_path / 'scene', size=128, n=60, seed=5)
    out = tmp_path / 'transductive.json'
    methods = ['--methods', 'p2r-semi-transductive', 'p2r-labelled-only']
    run_script('counting.py', *counting_args(scene.image, scene.points, out, *methods))
    result = json.loads(out.read_text())
    assert set(result['methods']) == {'p2r-semi-transductive', 'p2r-labelled-only'}
    for row in result['methods'].values():
        assert np.isfinite(row['mae'])
    res = run_script(
        'counting.py',
        *counting_args(
            scene.image,
            scene.points,
            out,
            '--methods',
            'p2r-semi-transductive',
            '--test-image',
            scene.image,
            '--test-points',
            scene.points,
        ),
        check=False,
    )
    assert res.returncode == 2 and 'held-out band' in res.stderr


def test_counting_scale_predicts_and_counts_a_tiled_scene(tmp_path):
    out = tmp_path / 'scale.json'
    run_script(
        'counting_scale.py',
        '--size',
        '640',
        '--base',
        '320',
        '--scene',
        '160',
        '--steps',
        '2',
        '--forward-blocks',
        '2',
        '--out',
        out,
    )
    got = json.loads(out.read_text())
    assert got['end_to_end_over_forward'] > 0
    assert got['predict_peak_rss_mb'] > 0 and got['count_peak_rss_mb'] > 0
    assert got['predict_memory_large_over_base'] > 0
    counts = got['counts']
    assert counts['cells'] == [10, 10]  # 640 px in cells of 64
    truth = counts['truth_whole_tiles']  # 4 x 4 whole tiles of 160 px
    assert truth > 0 and truth % 16 == 0
    assert counts['predicted'] >= 0 and counts['std'] >= 0
    assert ' ± ' in got['count_printed']


def test_counting_names_bad_files(tmp_path):
    res = run_script(
        'counting.py', '--image', tmp_path / 'none.tif', '--points', 'x', check=False
    )
    assert res.returncode != 0 and 'none.tif' in res.stderr


def test_counting_on_real_neon_boxes(data_dir, tmp_path):
    neon = data_dir / 'neon-trees'
    out = tmp_path / 'neon.json'
    run_script(
        'counting.py',
        *counting_args(
            neon / 'OSBS_029.tif',
            neon / 'OSBS_029_boxes.csv',
            out,
            '--res',
            '0.4',
            '--eval-size',
            '24',
            '--methods',
            'gst',
            'p2r',
        ),
    )
    result = json.loads(out.read_text())
    assert result['counts']['points'] == 61
    assert set(result['methods']) == {'gst', 'p2r'}


def test_npp_training_through_lightning_is_the_plain_optimiser_loop(monkeypatch):
    """_npp.train (Lightning) takes the same steps as zero_grad/backward/step by hand."""
    monkeypatch.syspath_prepend(str(ROOT / 'benchmarks'))
    from _npp import make_task, train
    from npp_paper import PinData, make_pins, pin_labels, synthetic_heatmaps
    from torch.utils.data import DataLoader

    from geosparse.datasets import collate_points

    rng = np.random.default_rng(0)
    images, labels = synthetic_heatmaps(24, rng)
    pins = make_pins('random', 24, rng)
    data = PinData(images, pins, pin_labels(labels, pins, 0.05, rng))
    loader = DataLoader(data, 8, collate_fn=collate_points)
    common = dict(model='fcn', num_filters=8, in_channels=3, lr=3e-3)
    torch.manual_seed(0)
    by_hand = make_task(**common)
    torch.manual_seed(0)
    lightning = make_task(**common)
    opt = by_hand.configure_optimizers()['optimizer']
    for _ in range(2):
        for batch in loader:
            loss = by_hand.compute_loss(batch, by_hand(batch['image']))
            opt.zero_grad()
            loss.backward()
            opt.step()
    train(lightning, loader, epochs=2)
    for p, q in zip(by_hand.parameters(), lightning.parameters(), strict=True):
        torch.testing.assert_close(p, q)


def test_output_digests_cover_every_predictor_output(tmp_path):
    out = tmp_path / 'd.json'
    run_script(
        'output_digests.py',
        '--steps',
        '1',
        '--out',
        str(out),
    )
    got = json.loads(out.read_text())
    assert {'lsr', 'lsr_probs_probabilities', 'tg_seg', 'tg_reg', 'npp'} <= set(got)
    assert {
        'npp_reveal',
        'npp_trained_kernel',
        'reg_kernel',
        'density',
        'pointmap',
    } <= set(got)
    assert got['npp_reveal']['descriptions'] == ['mean', 'std']
    kernels = {
        k: json.loads(got[k]['tags']['kernel']) for k in ('npp_reveal', 'reg_kernel')
    }
    # Re-fitted (alone or stacked), or the stack kept the kernel as trained alone.
    for k in kernels.values():
        kept = 'preferred the kernel as trained' in k.get('refit', '')
        assert k.get('source', '').startswith('refit') or kept, k
    assert 'refit' not in json.loads(got['npp_trained_kernel']['tags']['kernel'])
    assert (
        len({v['pixels'] for v in got.values()}) > 5
    )  # digests of real, distinct maps


def test_point_instances_benchmark_prints_every_method(tmp_path):
    out = tmp_path / 'r.json'
    run_script(
        'point_instances.py',
        '--synthetic',
        '--size',
        '96',
        '--seeds',
        '0',
        '--steps',
        '2',
        '--patch-size',
        '32',
        *('--terraces', '1', '--isolated', '2'),
        *('--also-margins', '0', '1000'),
        '--connected',
        '--out',
        str(out),
    )
    res = json.loads(out.read_text())
    # The same trained network read without the stuff margin (the baselines'
    # foreground), split by the geodesic (geosparse predict's default), every pixel
    # to its nearest query, with other margins and without the cut to each point's
    # piece (learned_whole); with --connected every row but the learned one (cut
    # already) is scored cut too
    plain = {
        'voronoi',
        'geodesic',
        'ot',
        'learned_head_only',
        'learned_geodesic',
        'learned_queries',
        'learned_margin_0',
        'learned_margin_1000',
        'learned_whole',
    }
    assert set(res['methods']) == {
        'learned',
        *plain,
        *(f'{name}_connected' for name in plain),
    }
    assert res['settings']['stuff_margin'] == 64.0
    # One foreground for every method by default: the learned task's own head, so
    # the methods differ only by their splits, and the baselines pay for its training.
    assert res['settings']['foreground'] == 'learned'
    methods = res['methods']
    # (Voronoi gives every foreground pixel a point; the others may leave some out)
    assert methods['voronoi']['miou'] == pytest.approx(
        methods['learned_head_only']['miou']
    )
    for name in ('voronoi', 'geodesic', 'ot'):
        assert methods[name]['seconds'] >= methods['learned']['seconds']
    # the scene's density options reach the generator: one terrace of 3-6, 2 isolated
    assert res['settings']['terraces'] == 1
    assert 1 <= res['n_instances'] <= 8
    for scores in res['methods'].values():
        assert 0 <= scores['instance_iou'] <= 1 and 0 <= scores['pq'] <= 1
        assert len(scores['per_seed']) == 1
    assert res['n_instances'] > 0
    assert res['speed']['train_step_over_segmentation'] > 0


def test_point_instances_benchmark_trains_only_what_the_methods_need(tmp_path):
    out = tmp_path / 'r.json'
    run_script(
        'point_instances.py',
        *('--synthetic', '--size', '96', '--seeds', '0', '--steps', '2'),
        *('--patch-size', '32', '--terraces', '1', '--isolated', '2'),
        *('--methods', 'voronoi', 'ot', '--out', str(out)),
    )
    res = json.loads(out.read_text())
    # No learned method: no learned task trained, so no learned_geodesic and no
    # training-step ratio (which needs the learned task).
    assert set(res['methods']) == {'voronoi', 'ot'}
    assert res['speed'] == {}
    assert res['settings']['foreground'] == 'head'  # a PointForegroundTask instead
    assert res['settings']['edge_weight'] == 40.0  # EDGE_WEIGHT, the package's


def test_point_instances_benchmark_scores_stage2_on_held_out_imagery(tmp_path):
    from geosparse.datasets import make_instance_scene

    # The real-data path, on the scene's first 96 columns (--columns): stage 2
    # trains on their left half, is scored on the right.
    scene = make_instance_scene(tmp_path / 'scene', size=128, seed=3)
    out = tmp_path / 'r.json'
    run_script(
        'point_instances.py',
        *('--image', str(scene.image), '--polygons', str(scene.polygons)),
        *('--columns', '0', '96'),
        *('--methods', 'voronoi', 'geodesic', 'learned', 'stage2'),
        *('--seeds', '0', '--steps', '2', '--stage2-steps', '2'),
        *('--patch-size', '32', '--foreground', 'head', '--out', str(out)),
    )
    res = json.loads(out.read_text())
    # a separate head for the baselines, and the learned foreground split by the
    # geodesic as geosparse predict --split geodesic makes it
    assert set(res['methods']) == {
        'voronoi',
        'geodesic',
        'learned',
        'learned_head_only',
        'learned_geodesic',
        'learned_queries',
        'stage2',
    }
    stage2 = res['methods']['stage2']['per_seed'][0]
    assert 0 <= stage2['instance_iou'] <= 1 and 0 <= stage2['miou'] <= 1
    # only the objects of the columns are scored, and of their right half for stage 2
    assert 0 < stage2['n_objects'] < res['n_instances'] < scene.count
    assert res['settings']['background_points'] == res['n_instances']
    bad = run_script(
        'point_instances.py',
        *('--synthetic', '--columns', '10', '5'),
        check=False,
    )
    assert bad.returncode == 2 and '--columns START STOP' in bad.stderr
    bad = run_script(
        'point_instances.py',
        *('--image', str(scene.image), '--polygons', str(scene.polygons)),
        *('--columns', '0', '500'),
        check=False,
    )
    assert bad.returncode == 2 and 'STOP <= its width (128' in bad.stderr


def test_counting_fits_the_dispersion_on_validation_windows(tmp_path):
    from geosparse.datasets import make_object_scene

    scene = make_object_scene(tmp_path / 'scene', size=128, n=60, seed=5)
    out = tmp_path / 'c.json'
    extra = ('--methods', 'mse', 'p2r', '--val-fraction', '0.3')
    run_script('counting.py', *counting_args(scene.image, scene.points, out, *extra))
    methods = json.loads(out.read_text())['methods']
    # Two steps leave the density far from the counts: phi well above Poisson's 1.
    assert methods['mse']['count_dispersion'] > 1
    assert methods['p2r']['count_dispersion'] >= 1


def test_counting_refuses_a_validation_band_as_large_as_the_training_band(tmp_path):
    image, points = tmp_path / 'i.tif', tmp_path / 'p.gpkg'
    image.touch()
    points.touch()
    extra = ('--val-fraction', '0.7')
    out = tmp_path / 'o.json'
    res = run_script(
        'counting.py', *counting_args(image, points, out, *extra), check=False
    )
    assert res.returncode != 0 and '--val-fraction 0.7' in res.stderr
    assert not out.exists()  # nothing written


def test_lsr_chesapeake_takes_an_estimated_joint_distribution(data_dir, tmp_path):
    """--priors: a table of `geosparse priors estimate` trains the tasks, and the
    NLCD map read through it is scored beside the built-in one."""
    from geosparse.cli import main

    chesapeake_split(data_dir, tmp_path, ['00', '03'], ['07'])
    train = sorted((tmp_path / 'tr').iterdir())
    csv = tmp_path / 'own.csv'
    assert (
        main(
            [
                'priors',
                'estimate',
                '--out',
                str(csv),
                '--coarse',
                *[str(f) for f in train if f.name.endswith('_nlcd.tif')],
                '--fine',
                *[str(f) for f in train if f.name.endswith('_lc.tif')],
            ]
        )
        == 0
    )
    out = tmp_path / 'r.json'
    run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'tr',
        '--eval',
        tmp_path / 'ev',
        '--protocols',
        'cross-tile',
        '--methods',
        'lsr',
        '--steps',
        '1',
        '--batch-size',
        '2',
        '--priors',
        csv,
        '--diagnose',
        '--out',
        out,
    )
    methods = json.loads(out.read_text())['protocols']['cross-tile']['methods']
    assert set(methods) == {'lsr', 'nlcd-argmax', 'nlcd-argmax-priors'}
    assert 0 <= methods['nlcd-argmax-priors']['miou'] <= 1
    # The NLCD map read through the estimated table uses that table's rows, and the
    # built-in map the built-in rows (they differ here, so the check can fail).
    from geosparse.priors import JointDistribution

    def rows(name: str) -> dict[str, list[float]]:
        by_coarse = methods[name]['by_coarse']
        return {code: r['prior'] for code, r in by_coarse.items() if r['prior']}

    own = JointDistribution.load(csv)
    builtin = JointDistribution.builtin('nlcd-landcover4')
    expected = {
        str(c): e.round(3).tolist()
        for c, e in zip(own.coarse_codes, own.eta, strict=True)
    }
    read = rows('nlcd-argmax-priors')
    assert read and all(read[c] == expected[c] for c in read)
    assert rows('nlcd-argmax') != read
    assert all(
        rows('nlcd-argmax')[str(c)] == e.round(3).tolist()
        for c, e in zip(builtin.coarse_codes, builtin.eta, strict=True)
        if str(c) in rows('nlcd-argmax')
    )
    bad = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path,
        '--eval',
        tmp_path,
        '--priors',
        tmp_path / 'none.csv',
        check=False,
    )
    assert bad.returncode != 0 and '--priors' in bad.stderr


def test_lsr_chesapeake_estimates_the_table_from_the_training_patches(
    data_dir, tmp_path
):
    """--priors train: the table comes from the --train patches' fine labels in 30 m
    cells, filled from the built-in table; never from the evaluation patches."""
    from geosparse.priors import JointDistribution

    chesapeake_split(data_dir, tmp_path, ['03', '04'], ['00'])
    out = tmp_path / 'r.json'
    run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'tr',
        '--eval',
        tmp_path / 'ev',
        '--protocols',
        'target-sr',
        '--methods',
        'lsr',
        '--steps',
        '1',
        '--batch-size',
        '2',
        '--priors',
        'train',
        '--diagnose',
        '--out',
        out,
    )
    result = json.loads(out.read_text())
    used = result['priors']
    assert used['given'] == 'train'
    assert sorted(used['estimated_from']) == sorted(
        f.name for f in (tmp_path / 'tr').iterdir() if f.name.endswith('_lc.tif')
    )
    methods = result['protocols']['target-sr']['methods']
    read = methods['nlcd-argmax-priors']['by_coarse']
    builtin = JointDistribution.builtin('nlcd-landcover4')
    # 82 (cultivated crops) occurs in patch 00 only: its row is the built-in one
    assert (
        read['82']['prior']
        == builtin.eta[builtin.coarse_codes.index(82)].round(3).tolist()
    )
    assert (
        read['41']['prior']
        != builtin.eta[builtin.coarse_codes.index(41)].round(3).tolist()
    )
    same = run_script(
        'lsr_chesapeake.py',
        '--train',
        tmp_path / 'ev',
        '--eval',
        tmp_path / 'ev',
        '--priors',
        'train',
        check=False,
    )
    assert same.returncode != 0 and 'evaluation patches' in same.stderr
