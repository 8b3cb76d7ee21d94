"""Checkpoints from strangers: no code runs, refusals name the file and the fix."""

import fractions
import pathlib

import numpy as np
import pytest
import torch

from geosparse.cli import main
from geosparse.compat import SemanticSegmentation
from geosparse.inference import Predictor
from geosparse.inference.checkpoints import (
    UntrustedCheckpointError,
    load_task,
    read_checkpoint,
)

from ..conftest import random_raster, save_untrained


class Payload:
    """Unpickling this object creates ``marker``: what a malicious pickle would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (pathlib.Path(self.marker),)


def _checkpoint(path, **extra_hparams):
    task = SemanticSegmentation(
        model='fcn', in_channels=3, num_classes=3, num_filters=4
    )
    save_untrained(task, path)
    if extra_hparams:
        ckpt = torch.load(path, weights_only=True)
        ckpt['hyper_parameters'].update(extra_hparams)
        torch.save(ckpt, path)
    return path


def _predict(ckpt, tmp_path):
    args = ['predict', '--checkpoint', str(ckpt), str(tmp_path / 'in.tif')]
    return main([*args, '--out', str(tmp_path / 'out')])


def test_a_payload_never_runs_through_the_cli(tmp_path, capsys):
    marker = tmp_path / 'pwned'
    ckpt = _checkpoint(tmp_path / 'evil.ckpt', note=Payload(marker))
    random_raster(tmp_path / 'in.tif', 3, 64, 64)
    code = _predict(ckpt, tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2 and not marker.exists()
    assert len(err.splitlines()) == 1
    # the payload's pickle calls getattr(Path, 'touch'): the refusal names it
    assert (
        str(ckpt) in err and 'unpickle getattr' in err and '--trust-checkpoint' in err
    )
    assert not (tmp_path / 'out').exists() or not any((tmp_path / 'out').iterdir())


def test_a_payload_never_runs_through_the_api(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = _checkpoint(tmp_path / 'evil.ckpt', note=Payload(marker))
    with pytest.raises(
        UntrustedCheckpointError, match=r'evil\.ckpt.*--trust-checkpoint'
    ):
        Predictor(checkpoint=ckpt)
    with pytest.raises(UntrustedCheckpointError):
        load_task(ckpt)
    assert not marker.exists()


def test_trust_is_explicit(tmp_path):
    """A harmless extra class is refused by name until the caller trusts the file."""
    ckpt = _checkpoint(tmp_path / 'extra.ckpt', ratio=fractions.Fraction(1, 3))
    with pytest.raises(UntrustedCheckpointError, match=r'fractions\.Fraction'):
        read_checkpoint(ckpt)
    pred = Predictor(checkpoint=ckpt, trust_checkpoint=True)
    assert pred.names == ['class_0', 'class_1', 'class_2']


def test_unknown_class_path_is_not_imported(tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / 'cls.ckpt', _class_path='evil_module_xyz.Task')
    random_raster(tmp_path / 'in.tif', 3, 64, 64)
    code = _predict(ckpt, tmp_path)
    err = capsys.readouterr().err
    assert code == 2
    assert 'evil_module_xyz.Task' in err and '--task evil_module_xyz.Task' in err
    assert 'ModuleNotFoundError' not in err


@pytest.mark.parametrize(
    'content', [b'', b'not a checkpoint at all', b'PK\x03\x04broken zip']
)
def test_garbage_is_not_a_checkpoint(tmp_path, capsys, content):
    ckpt = tmp_path / 'bad.ckpt'
    ckpt.write_bytes(content)
    random_raster(tmp_path / 'in.tif', 3, 64, 64)
    code = _predict(ckpt, tmp_path)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert str(ckpt) in err and 'checkpoint' in err


def test_checkpoints_of_every_task_are_plain_data(tmp_path):
    """geosparse's own checkpoints need no trust (weights_only reads them)."""
    from geosparse.trainers import (
        DensityTask,
        LabelSuperResolutionTask,
        NPPTask,
        PointMapTask,
    )

    for cls in (LabelSuperResolutionTask, NPPTask, DensityTask, PointMapTask):
        path = save_untrained(
            cls(model='fcn', num_filters=4), tmp_path / f'{cls.__name__}.ckpt'
        )
        assert type(load_task(path)) is cls


def test_an_npp_checkpoint_from_before_the_gp_objects_still_predicts(tmp_path):
    from geosparse.trainers import NPPTask

    task = NPPTask(model='fcn', num_filters=4, in_channels=3, noise=0.3)
    ckpt = save_untrained(task, tmp_path / 'npp.ckpt')
    data = torch.load(ckpt, weights_only=True)
    state = data['state_dict']
    state['npp_loss.raw_noise'] = state.pop('npp_loss.noise.raw')  # the old key
    torch.save(data, ckpt)
    pred = Predictor(checkpoint=ckpt)
    params = pred.task.kernel_params(torch.zeros(1, 3, 8, 8))
    assert params.noise == pytest.approx(0.3, rel=1e-5)
    out = pred(np.full((3, 16, 16), 100, np.float32))
    assert out.shape == (2, 16, 16) and np.isfinite(out).all()


def test_a_checkpoint_from_before_the_separate_foreground_loads_its_head(tmp_path):
    from geosparse.trainers import PointInstanceTask

    torch.manual_seed(0)
    old = PointInstanceTask(in_channels=1, separate_foreground=False)
    ckpt = save_untrained(old, tmp_path / 'old.ckpt')
    data = torch.load(ckpt, weights_only=True)
    del data['hyper_parameters']['separate_foreground']  # as 0.1 before the choice
    torch.save(data, ckpt)
    task = load_task(ckpt)
    assert task.hparams['separate_foreground'] is False
    assert isinstance(task.model.to_foreground, torch.nn.Conv2d)
    for key, value in old.state_dict().items():
        torch.testing.assert_close(task.state_dict()[key], value)
    # a new checkpoint keeps its separate U-Net
    new = save_untrained(PointInstanceTask(in_channels=1), tmp_path / 'new.ckpt')
    assert load_task(new).hparams['separate_foreground'] is True
    assert not isinstance(load_task(new).model.to_foreground, torch.nn.Conv2d)


def test_weights_of_another_version_are_a_one_line_error(tmp_path, capsys):
    from geosparse.trainers import PointInstanceTask

    ckpt = save_untrained(PointInstanceTask(in_channels=1), tmp_path / 'old.ckpt')
    data = torch.load(ckpt, weights_only=True)
    # as a checkpoint written before the foreground head was added
    for key in [k for k in data['state_dict'] if 'to_foreground' in k]:
        del data['state_dict'][key]
    torch.save(data, ckpt)
    with pytest.raises(ValueError, match='weights do not fit PointInstanceTask'):
        load_task(ckpt)
    raster = random_raster(tmp_path / 'in.tif', bands=1, h=32, w=32)
    args = ['predict', '--checkpoint', str(ckpt), str(raster), '--out', str(tmp_path)]
    assert main([*args, '--points', str(raster)]) == 2
    err = capsys.readouterr().err
    assert 'weights do not fit PointInstanceTask' in err
    assert 'Traceback' not in err and len(err.strip().splitlines()) == 1
