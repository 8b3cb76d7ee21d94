"""Stage 2 without points: blocks stitched into one instance per object."""

import geopandas as gpd
import numpy as np
import rasterio
import torch
from scipy import ndimage

from geosparse.inference.instances import detect_instances, predict_detected_instances
from geosparse.trainers import Detections

from ..conftest import write_raster

# (row0, row1, col0, col1): one on the edge of blocks 0 and 1 (col 32), one on the
# corner of four blocks (32, 64), one inside a block
SQUARES = [(10, 20, 26, 38), (58, 70, 58, 68), (40, 48, 4, 12)]


class ComponentDetector:
    """Stands in for a trained Mask R-CNN: every bright blob of the window is an
    object (score 0.9), cut where the window cuts it, as a real detector sees it."""

    def __init__(self):
        self.hparams = {'in_channels': 1, 'score_threshold': 0.5}

    def detect(self, images, score_threshold=None):
        out = []
        for image in images:
            labels, n = ndimage.label(image[0].numpy() > 100)
            masks = np.stack([labels == k for k in range(1, n + 1)]) if n else None
            boxes = []
            for sl in ndimage.find_objects(labels):
                boxes.append([sl[1].start, sl[0].start, sl[1].stop, sl[0].stop])
            h, w = image.shape[-2:]
            out.append(
                Detections(
                    boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                    labels=np.ones(n, np.int64),
                    scores=np.full(n, 0.9, np.float32),
                    masks=masks if n else np.zeros((0, h, w), bool),
                )
            )
        return out


def scene(tmp_path):
    image = np.zeros((1, 96, 96), np.uint8)
    for r0, r1, c0, c1 in SQUARES:
        image[0, r0:r1, c0:c1] = 200
    write_raster(tmp_path / 'image.tif', image)
    return tmp_path / 'image.tif'


def test_an_object_on_a_block_edge_is_one_instance_and_one_polygon(tmp_path):
    path = scene(tmp_path)
    out = predict_detected_instances(
        ComponentDetector(), path, tmp_path / 'out', block=32, halo=16, progress=False
    )
    with rasterio.open(out.raster) as src:
        assert src.count == 3 and src.dtypes[0] == 'uint32'
        ids, classes, unc = src.read()
    assert sorted(set(np.unique(ids)) - {0}) == [1, 2, 3]
    for r0, r1, c0, c1 in SQUARES:
        patch = ids[r0:r1, c0:c1]
        assert len(np.unique(patch)) == 1 and patch[0, 0] > 0  # whole, one id
        assert (classes[r0:r1, c0:c1] == 1).all()
        assert (unc[r0:r1, c0:c1] == round(254 * (1 - 0.9))).all()
    assert int((ids > 0).sum()) == sum(
        (r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in SQUARES
    )
    polygons = gpd.read_file(out.polygons)
    assert sorted(polygons['instance']) == [1, 2, 3]
    assert (polygons.geom_type == 'Polygon').all()  # one piece each, not a multi
    assert np.allclose(polygons['score'], 0.9)
    areas = sorted((r1 - r0) * (c1 - c0) for r0, r1, c0, c1 in SQUARES)
    assert sorted(polygons['area']) == areas
    assert out.item.is_file()


def test_duplicates_from_two_blocks_merge_into_one(tmp_path):
    """With no halo each block sees its own piece of the edge object, and two
    pieces of it own their centres; with a halo one block owns it whole."""
    path = scene(tmp_path)
    none = detect_instances(ComponentDetector(), path, block=32, halo=0)
    whole = detect_instances(ComponentDetector(), path, block=32, halo=16)
    assert len(none) > 3  # cut objects: pieces
    assert len(whole) == 3
    assert [m.shape for m in whole.masks] == [(10, 12), (8, 8), (12, 10)]


def test_objects_are_numbered_in_raster_order_and_reproducibly(tmp_path):
    path = scene(tmp_path)
    a = detect_instances(ComponentDetector(), path, block=32, halo=16)
    b = detect_instances(ComponentDetector(), path, block=48, halo=24)
    assert a.offsets.tolist() == b.offsets.tolist() == [[10, 26], [40, 4], [58, 58]]
    assert torch.equal(torch.from_numpy(a.ids), torch.tensor([1, 2, 3]))
