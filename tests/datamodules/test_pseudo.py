import numpy as np
import pytest
import torch
from affine import Affine

from geosparse.datamodules import PseudoMaskDataModule
from geosparse.datasets import InstanceRaster, collate_instances, instance_targets
from geosparse.errors import InputError
from geosparse.transforms import RandomFlipWithBoxes

from ..conftest import UTM_ORIGIN, write_raster

NODATA = 4294967295
# (id, class, row0, row1, col0, col1): object 2 straddles column 32
OBJECTS = [(1, 1, 4, 12, 4, 14), (2, 2, 20, 30, 26, 40), (3, 1, 40, 50, 8, 20)]


def boxes_of(masks):
    out = []
    for m in masks:
        rows = torch.nonzero(m.any(1)).flatten()
        cols = torch.nonzero(m.any(0)).flatten()
        out.append([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return torch.tensor(out, dtype=torch.float32).reshape(-1, 4)


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    """A 64 x 64 image, its 3-band stage-1 COG (id, class, uncertainty), one empty
    corner (rows 48+, cols 40+), a nodata strip, and an all-background raster."""
    root = tmp_path_factory.mktemp('pseudo')
    rng = np.random.default_rng(0)
    image = rng.integers(0, 60, (3, 64, 64)).astype(np.uint8)
    masks = np.zeros((3, 64, 64), np.uint32)
    for i, c, r0, r1, c0, c1 in OBJECTS:
        image[:, r0:r1, c0:c1] = 200
        masks[0, r0:r1, c0:c1] = i
        masks[1, r0:r1, c0:c1] = c
        masks[2, r0:r1, c0:c1] = 20
    masks[2, 20:22, 26:40] = 240  # unsure top rows of object 2
    masks[:, :, 62:] = NODATA
    write_raster(root / 'image.tif', image)
    write_raster(root / 'pseudo.tif', masks, nodata=NODATA)
    write_raster(root / 'empty.tif', np.zeros((1, 64, 64), np.uint16))
    far = Affine(1, 0, 600000, 0, -1, 4200000)
    write_raster(root / 'far.tif', masks[:1], transform=far, nodata=NODATA)
    return root


def window(dm, r0, c0, size):
    """The sample of the window of rows r0.. and cols c0.. of the image."""
    x0, y1 = UTM_ORIGIN * (c0, r0)
    data = dm.train_dataset
    return data[x0 : x0 + size, y1 - size : y1]


def make_dm(files, **kw):
    args = dict(patch_size=32, batch_size=2, length=4, **kw)
    dm = PseudoMaskDataModule(
        str(files / 'image.tif'), str(files / 'pseudo.tif'), **args
    )
    dm.setup('fit')
    return dm


def test_raster_reads_the_stage1_bands_and_nodata(files):
    ds = InstanceRaster(files / 'pseudo.tif')
    x0, y1 = UTM_ORIGIN * (0, 0)
    s = ds[x0 : x0 + 64, y1 - 64 : y1]
    assert s['instances'].dtype == torch.int64 and s['instances'].shape == (64, 64)
    assert set(s['instances'].unique().tolist()) == {0, 1, 2, 3}
    assert (s['instances'][:, 62:] == 0).all()  # nodata is background
    assert s['classes'][25, 30] == 2 and s['uncertainty'][25, 30] == pytest.approx(
        20 / 254
    )


def test_batches_are_torchgeos_instance_format_boxes_match_masks(files):
    dm = make_dm(files)
    batch = next(iter(dm.train_dataloader()))
    assert (
        batch['image'].shape == (2, 3, 32, 32) and batch['image'].dtype == torch.float32
    )
    assert batch['instances'].shape == (2, 32, 32)
    for key in ('bbox_xyxy', 'label', 'mask'):
        assert isinstance(batch[key], list) and len(batch[key]) == 2
    for boxes, labels, masks, inst in zip(
        batch['bbox_xyxy'],
        batch['label'],
        batch['mask'],
        batch['instances'],
        strict=True,
    ):
        assert boxes.dtype == torch.float32 and labels.dtype == torch.int64
        assert masks.dtype == torch.uint8 and masks.shape[1:] == (32, 32)
        assert len(boxes) == len(labels) == len(masks)
        assert torch.equal(boxes, boxes_of(masks.bool()))
        ids = inst.unique()
        assert len(masks) == int((ids > 0).sum())
        assert torch.equal(masks.bool().any(0), inst > 0)


def test_cut_object_keeps_its_visible_part_and_class(files):
    dm = make_dm(files)
    sample = window(dm, 16, 16, 16)  # cols 16..32: object 2 cut at col 32
    t = instance_targets(sample['instances'], sample['classes'])
    assert t['label'].tolist() == [2]
    assert t['bbox_xyxy'].tolist() == [[10.0, 4.0, 16.0, 14.0]]
    assert int(t['mask'].sum()) == 10 * 6


def test_empty_window_has_no_objects(files):
    dm = make_dm(files)
    batch = collate_instances([window(dm, 50, 42, 12)] * 2)
    for boxes, labels, masks in zip(
        batch['bbox_xyxy'], batch['label'], batch['mask'], strict=True
    ):
        assert boxes.shape == (0, 4) and labels.shape == (0,)
        assert masks.shape == (0, 12, 12)


def test_uncertain_pixels_leave_their_object(files):
    dm = make_dm(files)
    sample = window(dm, 16, 16, 32)
    loose = collate_instances([sample])
    strict = collate_instances([sample], max_uncertainty=0.5)
    big = loose['bbox_xyxy'][0][loose['label'][0] == 2][0]
    small = strict['bbox_xyxy'][0][strict['label'][0] == 2][0]
    assert big[1] == 4 and small[1] == 6  # the two unsure rows dropped


def test_flips_move_masks_and_boxes_with_the_image(files):
    torch.manual_seed(0)
    dm = make_dm(files)
    batch = next(iter(dm.train_dataloader()))
    before = {k: [v.clone() for v in batch[k]] for k in ('mask', 'bbox_xyxy')}
    image = batch['image'].clone()
    out = RandomFlipWithBoxes(p=1.0)(batch)
    assert torch.equal(out['image'], image.flip(-1).flip(-2))
    for b, old in enumerate(before['mask']):
        masks, boxes = out['mask'][b], out['bbox_xyxy'][b]
        assert torch.equal(masks, old.flip(-1).flip(-2))
        assert torch.equal(boxes, boxes_of(masks.bool()))
        assert torch.equal(masks.bool().any(0), out['instances'][b] > 0)


def test_polygons_as_masks(tmp_path, files):
    import geopandas as gpd
    import shapely

    polys = [
        shapely.box(*(UTM_ORIGIN * (c0, r1)), *(UTM_ORIGIN * (c1, r0)))
        for _, _, r0, r1, c0, c1 in OBJECTS
    ]
    gpd.GeoDataFrame({'k': [1, 2, 3]}, geometry=polys, crs='EPSG:32618').to_file(
        tmp_path / 'p.gpkg'
    )
    dm = PseudoMaskDataModule(
        str(files / 'image.tif'), str(tmp_path / 'p.gpkg'), patch_size=32, length=2
    )
    dm.setup('fit')
    s = window(dm, 0, 0, 64)
    assert set(s['instances'].unique().tolist()) == {0, 1, 2, 3}


@pytest.mark.parametrize(
    ('name', 'words'),
    [
        ('far.tif', 'does not overlap the imagery'),
        ('empty.tif', 'holds no instance'),
        ('missing.tif', 'no such file'),
    ],
)
def test_bad_masks_give_one_line_naming_the_file(files, name, words):
    dm = PseudoMaskDataModule(
        str(files / 'image.tif'), str(files / name), patch_size=32
    )
    with pytest.raises(InputError) as info:
        dm.setup('fit')
    text = str(info.value)
    assert str(files / name) in text and words in text and '\n' not in text
