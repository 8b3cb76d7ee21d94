import ast
from pathlib import Path

import torch

from geosparse.transforms import RandomFlipWithPoints, flip_batch

from .conftest import ROOT


def test_flip_batch_moves_points_and_covariances():
    image = torch.zeros(1, 1, 8, 10)
    image[0, 0, 2, 7] = 1.0
    batch = {
        'image': image,
        'points': torch.tensor([[[2.5, 7.5]]]),
        'covariances': torch.tensor([[[4.0, 1.0, 2.0]]]),
    }
    flip_batch(batch, torch.tensor([True]), torch.tensor([True]))
    r, c = batch['points'][0, 0].floor().long().tolist()
    assert (r, c) == (5, 2) and batch['image'][0, 0, r, c] == 1.0
    assert batch['covariances'][0, 0].tolist() == [4.0, 1.0, 2.0]  # two flips: back
    flip_batch(batch, torch.tensor([True]), torch.tensor([False]))
    assert batch['covariances'][0, 0, 1] == -1.0


def test_random_flip_with_points_copies_and_keeps_padding_with_the_mask():
    torch.manual_seed(0)
    image = torch.rand(16, 2, 6, 9)
    points = torch.rand(16, 3, 2) * torch.tensor([6.0, 9.0])
    points[:, 2] = 0.0  # padding
    valid = torch.tensor([True, True, False]).expand(16, 3)
    batch = {'image': image, 'points': points, 'valid': valid}
    out = RandomFlipWithPoints()(dict(batch))
    assert out['image'] is not image and torch.equal(batch['image'], image)
    assert out['valid'] is valid  # points keep their order
    moved = (out['points'] != points).any(-1)  # per sample and point
    assert moved[:, :2].any() and not moved[:, :2].all()
    # padded points move like the rest (0 -> H or W), and stay masked out
    assert set(out['points'][:, 2].unique().tolist()) <= {0.0, 6.0, 9.0}
    assert torch.equal(RandomFlipWithPoints(p=0.0)(dict(batch))['image'], image)


def _imports(path: Path) -> set[str]:
    """Absolute names of the modules a geosparse module imports (anywhere in it)."""
    package = '.'.join(path.relative_to(ROOT).with_suffix('').parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit('.', node.level - 1)[0] if node.level else ''
            module = '.'.join(p for p in (base, node.module or '') if p)
            names.add(module)
            names.update(f'{module}.{alias.name}' for alias in node.names)
    return names


def test_trainers_do_not_import_data_modules():
    files = sorted((ROOT / 'geosparse' / 'trainers').glob('*.py'))
    assert files
    for path in files:
        bad = sorted(
            n
            for n in _imports(path)
            if n == 'geosparse.datamodules' or n.startswith('geosparse.datamodules.')
        )
        assert not bad, f'{path.name} imports {bad} (layers: datamodules -> tasks)'
    # the check sees relative imports: the data modules import the transforms
    lsr = _imports(ROOT / 'geosparse' / 'datamodules' / 'lsr.py')
    assert 'geosparse.transforms.RandomDihedral' in lsr
