"""Training-step time with the LSR loss relative to plain cross-entropy.

Same model (U-Net, ResNet-18), same batch (8 x 4 x 256 x 256), the two losses timed
alternately in one run so that machine noise affects both alike. Prints one JSON
object whose key ``lsr_over_ce`` is the ratio of median step times (target <= 1.05).

    python benchmarks/loss_overhead.py [--out FILE] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from geosparse.io.raster import atomic_write_text
from geosparse.trainers import LabelSuperResolutionTask


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, default=256)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    task = LabelSuperResolutionTask(loss='lsr', backbone='resnet18')
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    b, s = args.batch_size, args.size
    image = torch.rand(b, 4, s, s) * 255
    codes = torch.tensor(task.table.coarse_codes)
    coarse = codes[torch.randint(0, len(codes), (b, s // 32, s // 32))]
    coarse = coarse.repeat_interleave(32, 1).repeat_interleave(32, 2)
    blocks = torch.arange((s // 32) ** 2).view(1, s // 32, s // 32)
    blocks = blocks.repeat_interleave(32, 1).repeat_interleave(32, 2).expand(b, -1, -1)
    target = torch.randint(0, 4, (b, s, s))
    batch = {'image': image, 'coarse': coarse, 'block': blocks}

    def step(kind: str) -> float:
        t0 = time.perf_counter()
        logits = task(image)
        if kind == 'lsr':
            loss = task.compute_loss(batch, logits)
        else:
            loss = F.cross_entropy(logits, target)
        assert loss is not None
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    step('ce'), step('lsr')  # warm-up
    times: dict[str, list[float]] = {'lsr': [], 'ce': []}
    for i in range(args.repeats):
        order = ('lsr', 'ce') if i % 2 == 0 else ('ce', 'lsr')
        for kind in order:
            times[kind].append(step(kind))
    lsr, ce = statistics.median(times['lsr']), statistics.median(times['ce'])
    out = {
        'lsr_over_ce': round(lsr / ce, 4),
        'lsr_step_seconds': round(lsr, 4),
        'ce_step_seconds': round(ce, 4),
        'repeats': args.repeats,
        'batch': [b, 4, s, s],
    }
    text = json.dumps(out)
    print(text)
    if args.out:
        atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
    main()
