"""Training-step time of geosparse's losses relative to their plain baselines.

Same model (U-Net, ResNet-18) within each pair, losses timed alternately in one run
so that machine noise affects both alike. Prints one JSON object with

- ``lsr_over_ce``: the label super-resolution loss over cross-entropy, batch
  8 x 4 x 256 x 256 (target <= 1.05);
- ``npp_over_mse``: the Neural Point Process loss (learnable RBF kernel) over MSE at
  the same points, batch 16 x 4 x ``--size`` x ``--size`` with 100 points per image
  (target <= 1.10);
- ``posterior_over_forward``: the posterior mean and std of a 1024 x 1024 map given
  256 revealed points over one forward pass of the network over that map;
- ``posterior_peak_over_map``: in a fresh process, the peak memory the posterior of a
  ``--memory-size`` (4096) square float32 map with 256 points adds, over the bytes
  of that map (its two float32 outputs alone are 2; bounded whatever the size).

    python benchmarks/loss_overhead.py [--out FILE] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from geosparse.console import quiet, verbose_option
from geosparse.gp import KernelParams
from geosparse.gp.posterior import posterior_map
from geosparse.io.raster import atomic_write_text
from geosparse.trainers import LabelSuperResolutionTask, NPPTask


def npp_ratios(repeats: int, size: int, posterior_size: int) -> dict[str, float]:
    """NPP over MSE step time, and the posterior over one forward pass."""
    torch.manual_seed(0)
    task = NPPTask(backbone='resnet18', kernel='learnable')
    opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
    b, n = 16, 100
    image = torch.rand(b, 4, size, size) * 255
    batch = {
        'image': image,
        'points': torch.rand(b, n, 2) * size,
        'values': torch.randn(b, n, 1),
        'valid': torch.ones(b, n, dtype=torch.bool),
    }

    def step(kind: str) -> float:
        task.hparams['loss'] = kind
        t0 = time.perf_counter()
        loss = task.compute_loss(batch, task(image))
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t0

    step('npp'), step('mse')  # warm-up
    times: dict[str, list[float]] = {'npp': [], 'mse': []}
    for i in range(repeats):
        for kind in ('npp', 'mse') if i % 2 == 0 else ('mse', 'npp'):
            times[kind].append(step(kind))
    npp, mse = statistics.median(times['npp']), statistics.median(times['mse'])

    m = posterior_size
    big = torch.rand(1, 4, m, m) * 255
    with torch.no_grad():
        t0 = time.perf_counter()
        mean = task(big)[0, 0]
        forward = time.perf_counter() - t0
        pts = torch.rand(256, 2, dtype=torch.float64) * m
        vals = torch.randn(256, dtype=torch.float64)
        t0 = time.perf_counter()
        posterior_map(mean.double(), pts, vals, KernelParams('rbf', 4.0, 1.0, 0.1))
        posterior = time.perf_counter() - t0
    return {
        'npp_over_mse': round(npp / mse, 4),
        'npp_step_seconds': round(npp, 4),
        'mse_step_seconds': round(mse, 4),
        'npp_batch': [b, 4, size, size],
        'npp_points_per_image': n,
        'posterior_over_forward': round(posterior / forward, 4),
        'posterior_seconds': round(posterior, 4),
        'forward_seconds': round(forward, 4),
        'posterior_map': [m, m],
    }


def posterior_memory(size: int) -> dict[str, float]:
    """Peak RSS the posterior of a ``size``-square map adds, in a fresh process."""
    # Linux: VmHWM is the peak RSS since clear_refs was given '5' (peak reset).
    code = (
        'import json, torch\n'
        'from geosparse.gp import KernelParams, posterior_map\n'
        'def kb(key):\n'
        '    for line in open("/proc/self/status"):\n'
        '        if line.startswith(key):\n'
        '            return int(line.split()[1]) * 1024\n'
        f'm = torch.rand({size}, {size})\n'
        'g = torch.Generator().manual_seed(0)\n'
        f'pts = torch.rand(256, 2, generator=g, dtype=torch.float64) * {size}\n'
        'vals = torch.randn(256, generator=g, dtype=torch.float64)\n'
        'posterior_map(m[:64, :64], pts[:4] / 64, vals[:4], KernelParams("rbf", 4.0, 1.0, 0.1))\n'
        'open("/proc/self/clear_refs", "w").write("5")\n'
        'before = kb("VmRSS")\n'
        'mu, sd = posterior_map(m, pts, vals, KernelParams("rbf", 4.0, 1.0, 0.1))\n'
        'print(json.dumps({"added": kb("VmHWM") - before, "map": m.numel() * 4}))\n'
    )
    res = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, check=True
    )
    got = json.loads(res.stdout)
    return {
        'posterior_peak_over_map': round(got['added'] / got['map'], 3),
        'posterior_peak_added_mb': round(got['added'] / 2**20, 1),
        'posterior_memory_map': [size, size],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--out', type=Path)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=8)
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--posterior-size', type=int, default=1024)
    parser.add_argument('--memory-size', type=int, default=4096)
    verbose_option(parser)
    args = parser.parse_args(argv)
    with quiet(args.verbose):
        torch.manual_seed(0)
        task = LabelSuperResolutionTask(loss='lsr', backbone='resnet18')
        opt = torch.optim.AdamW(task.parameters(), lr=1e-4)
        b, s = args.batch_size, args.size
        image = torch.rand(b, 4, s, s) * 255
        codes = torch.tensor(task.table.coarse_codes)
        coarse = codes[torch.randint(0, len(codes), (b, s // 32, s // 32))]
        coarse = coarse.repeat_interleave(32, 1).repeat_interleave(32, 2)
        blocks = torch.arange((s // 32) ** 2).view(1, s // 32, s // 32)
        blocks = (
            blocks.repeat_interleave(32, 1).repeat_interleave(32, 2).expand(b, -1, -1)
        )
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
        npp = npp_ratios(args.repeats, args.size, args.posterior_size)
        out = {
            'lsr_over_ce': round(lsr / ce, 4),
            'lsr_step_seconds': round(lsr, 4),
            'ce_step_seconds': round(ce, 4),
            'repeats': args.repeats,
            'batch': [b, 4, s, s],
            **npp,
            **posterior_memory(args.memory_size),
        }
        text = json.dumps(out)
        print(text)
        if args.out:
            atomic_write_text(args.out, text + '\n')


if __name__ == '__main__':
    main()
