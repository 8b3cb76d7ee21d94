r"""A segmentation network with a small, fixed receptive field.

Learning from coarse labels, the network sees only which fine classes a coarse region
holds on average, never which pixel is which. A U-Net with a receptive field of
hundreds of pixels can meet those block statistics by recognising the *context* of a
region (its neighbourhood, its position in a patch) instead of the appearance of each
pixel; on a few training tiles whose coarse labels are partly wrong (an NLCD forest
region that holds pastures), it then learns the mistakes of the coarse map. This
network can only use the spectrum of a pixel and the texture of its immediate
neighbourhood, so the only way it can raise the share of a class in some regions and
lower it in others is to find what that class looks like.

For an input :math:`x` with :math:`C` bands and brightness :math:`b = \frac1C\sum_c
x_c`, the features of a pixel are the bands, and for each window size :math:`s`
the local mean :math:`m_s = \bar b` and local standard deviation
:math:`\sqrt{\overline{b^2} - m_s^2}` over the :math:`s\times s` window around it.
Each feature is standardised with the statistics of the training data (batch
normalisation), and a per-pixel multilayer perceptron (:math:`1\times1`
convolutions) maps them to class logits. The receptive field is the largest window (15 px, 15 m of NAIP, by default).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ['LocalContextNet']


class LocalContextNet(nn.Module):
    """Per-pixel perceptron on the bands plus local brightness mean and texture.

    This is our addition, not a model of Malkin et al. (ICLR 2019), who use a U-Net;
    see the module docstring for why a small receptive field helps with few tiles.

    .. versionadded:: 0.1
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        scales: Sequence[int] = (5, 15),
        hidden: int = 32,
        depth: int = 2,
    ) -> None:
        """Initialise the network.

        Args:
            in_channels: image bands.
            num_classes: output classes.
            scales: odd window sizes of the local mean and standard deviation.
            hidden: width of the hidden layers.
            depth: number of hidden layers.

        Raises:
            ValueError: if a scale is not an odd positive integer, or the widths
                are not positive.
        """
        super().__init__()
        bad = [s for s in scales if int(s) != s or s < 1 or s % 2 == 0]
        if bad:
            raise ValueError(
                f'scales={list(scales)}: window sizes must be odd positive integers '
                f'(got {bad}); use for example (5, 15).'
            )
        if in_channels < 1 or num_classes < 1 or hidden < 1 or depth < 0:
            raise ValueError(
                f'in_channels={in_channels}, num_classes={num_classes}, '
                f'hidden={hidden}, depth={depth}: all must be positive '
                '(depth may be 0 for a linear model).'
            )
        self.scales = tuple(int(s) for s in scales)
        width = in_channels + 2 * len(self.scales)
        # Features differ in scale by orders of magnitude (texture vs brightness):
        # standardise each with the statistics of the training data.
        layers: list[nn.Module] = [nn.BatchNorm2d(width)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, hidden, 1), nn.ReLU(inplace=True)]
            width = hidden
        layers.append(nn.Conv2d(width, num_classes, 1))
        self.head = nn.Sequential(*layers)

    def features(self, x: Tensor) -> Tensor:
        """The ``(B, C + 2S, H, W)`` per-pixel features of ``(B, C, H, W)`` input."""
        bright = x.mean(dim=1, keepdim=True)
        feats = [x]
        for s in self.scales:
            pool = dict(
                kernel_size=s, stride=1, padding=s // 2, count_include_pad=False
            )
            mean = F.avg_pool2d(bright, **pool)  # type: ignore[arg-type]
            sq = F.avg_pool2d(bright * bright, **pool)  # type: ignore[arg-type]
            feats += [mean, (sq - mean * mean).clamp(min=0).add(1e-6).sqrt()]
        return torch.cat(feats, dim=1)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, num_classes, H, W)``."""
        return self.head(self.features(x))
