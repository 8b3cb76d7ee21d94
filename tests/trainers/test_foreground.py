from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geosparse.trainers import PointForegroundTask


def _batch(background=True):
    """Two bright rectangles on a dark ground, a point in each and two outside."""
    image = np.full((1, 40, 60), 10.0)
    image[:, 10:30, 5:45] = 100.0
    image[:, 10:30, 45:55] = 200.0
    points = [[20.5, 10.5], [20.5, 52.5], [5.5, 30.5], [35.5, 20.5]]
    values = [[7, 1, 0], [9, 1, 0], [0, 0, 1], [0, 0, 1]]
    if not background:
        points, values = points[:2], values[:2]
    n = len(points)
    return image, {
        'image': torch.tensor(image, dtype=torch.float32)[None].repeat(2, 1, 1, 1),
        'points': torch.tensor(points, dtype=torch.float32)[None].repeat(2, 1, 1),
        'valid': torch.ones(2, n, dtype=torch.bool),
        'values': torch.tensor(values, dtype=torch.float32)[None].repeat(2, 1, 1),
    }


def test_training_learns_objects_and_background_from_points():
    torch.manual_seed(0)
    image, batch = _batch()
    task = PointForegroundTask(in_channels=1, lr=3e-3)
    opt = task.configure_optimizers()
    task.train()
    losses = []
    for _ in range(20):
        loss = task.compute_loss(batch, task(batch['image']))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]
    task.train()  # the batch statistics it trained with (see test_instances)
    with torch.no_grad():
        logits = task(batch['image'])[0]
    fg = (logits[1] > logits[0]).numpy()
    assert fg[20, 10] and fg[20, 52] and not fg[5, 30] and not fg[35, 20]
    image[:, :3, :3] = np.nan
    pred = task.predict_foreground(image)
    assert pred.shape == (40, 60) and pred.dtype == bool
    assert not pred[:3, :3].any()


def test_a_batch_of_object_points_alone_still_trains():
    _, batch = _batch(background=False)
    task = PointForegroundTask(in_channels=1)
    loss = task.compute_loss(batch, task(batch['image']))
    assert torch.isfinite(loss) and loss.requires_grad


def test_a_data_module_without_background_points_is_refused():
    task = PointForegroundTask(in_channels=1)
    dm = SimpleNamespace(hparams={'background_column': None})
    task._trainer = SimpleNamespace(datamodule=dm)
    with pytest.raises(ValueError, match='background_column'):
        task.on_fit_start()
    dm.hparams['background_column'] = 'background'
    task.on_fit_start()
