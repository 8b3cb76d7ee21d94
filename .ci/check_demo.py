"""Check what the README's first command (``geosparse demo``) wrote, as a user would.

Usage: ``python .ci/check_demo.py geosparse-demo``. Exits 1 with one line per problem:
the map must be a valid Cloud-Optimized GeoTIFF with a class band and an uncertainty
band (values in [0, 1] after scaling), a STAC Item must sit beside it, and the PNG
quicklook must be a real PNG image.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import rasterio
from rio_cogeo.cogeo import cog_validate


def problems(out: Path) -> list[str]:
    """Everything wrong with the demo's outputs in ``out`` (empty when all is well)."""
    found: list[str] = []
    cog, png, item = (
        out / 'landcover.tif',
        out / 'landcover.png',
        out / 'landcover.json',
    )
    for path in (cog, png, item):
        if not path.is_file() or path.stat().st_size == 0:
            found.append(f'{path}: missing or empty')
    if found:
        return found
    valid, errors, _ = cog_validate(str(cog), quiet=True)
    if not valid:
        found.append(f'{cog}: not a valid COG: {errors}')
    with rasterio.open(cog) as src:
        names = list(src.descriptions)
        if src.count < 2 or 'uncertainty' not in names:
            found.append(f'{cog}: bands {names}, expected class and uncertainty')
        else:
            band = names.index('uncertainty') + 1
            data = src.read(band, masked=True).astype(np.float64) * src.scales[band - 1]
            if data.count() == 0 or not (0.0 <= data.min() and data.max() <= 1.0):
                found.append(f'{cog}: uncertainty outside [0, 1] or empty')
            classes = src.read(1, masked=True)
            if classes.count() == 0:
                found.append(f'{cog}: the class band holds only nodata')
    if png.read_bytes()[:8] != b'\x89PNG\r\n\x1a\n':
        found.append(f'{png}: not a PNG file')
    else:
        import matplotlib.image as mpimg

        image = mpimg.imread(png)
        if image.shape[0] < 200 or image.shape[1] < 200 or float(image.std()) == 0.0:
            found.append(f'{png}: blank or tiny image {image.shape}')
    meta = json.loads(item.read_text())
    if meta.get('type') != 'Feature' or not meta.get('assets'):
        found.append(f'{item}: not a STAC Item with assets')
    return found


def main() -> int:
    """Check the folder given on the command line."""
    out = Path(sys.argv[1] if len(sys.argv) > 1 else 'geosparse-demo')
    found = problems(out)
    for line in found:
        print(line, file=sys.stderr)
    if not found:
        print(f'{out}: valid COG with class and uncertainty bands, STAC Item and PNG')
    return 1 if found else 0


if __name__ == '__main__':
    sys.exit(main())
