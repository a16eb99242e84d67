"""The reference CIFAR augmentation, applied to a whole batch at once on the training device.

RandomResizedCrop(scale=(crop_scale_min, 1)) -> ColorJitter(j, j, j, j) in a random order per
image -> RandomGrayscale(p) -> Normalize(dataset mean, std); no flip (AND_SPEC §5).
Random parameters are drawn on the CPU from one torch.Generator, so a run is reproducible and
resumable bit for bit; the pixel work runs wherever the batch lives (the GPU when present).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_LUMA = (0.2989, 0.587, 0.114)  # ITU-R 601-2, as torchvision's rgb_to_grayscale


def grey(x: torch.Tensor) -> torch.Tensor:
    """B x 3 x H x W -> B x 1 x H x W luminance."""
    r, g, b = x.unbind(1)
    return (_LUMA[0] * r + _LUMA[1] * g + _LUMA[2] * b).unsqueeze(1)


def normalise(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 B x 3 x H x W -> float, scaled to [0, 1] then standardised per channel."""
    x = images.float().div_(255.0)
    return x.sub_(mean.view(1, 3, 1, 1)).div_(std.view(1, 3, 1, 1))


class BatchAugment:
    def __init__(self, size: int, mean: torch.Tensor, std: torch.Tensor,
                 crop_scale_min: float = 0.2, jitter: float = 0.4, grayscale_p: float = 0.2,
                 ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> None:
        self.size = size
        self.mean = mean
        self.std = std
        self.scale = (crop_scale_min, 1.0)
        self.log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
        self.jitter = jitter
        self.grayscale_p = grayscale_p

    def __call__(self, images: torch.Tensor, gen: torch.Generator, total: int | None = None,
                 start: int = 0) -> torch.Tensor:
        """Augment `images`, rows start.. of a batch of `total` (default: the whole batch):
        the random parameters are drawn for all `total` rows, so every process of a
        distributed run draws the same numbers and its slice looks as in a single process."""
        b = images.shape[0]
        n = total or b
        part = slice(start, start + b)
        theta = self._crop_params(n, images.shape[-2], images.shape[-1], gen)[part]
        factors = (1.0 + (torch.rand(n, 3, generator=gen) * 2 - 1) * self.jitter)[part]
        hue = ((torch.rand(n, generator=gen) * 2 - 1) * self.jitter)[part]
        order = torch.argsort(torch.rand(n, 4, generator=gen), dim=1)[part]
        to_grey = (torch.rand(n, generator=gen) < self.grayscale_p)[part]

        dev = images.device
        x = images.float().div_(255.0)
        grid = F.affine_grid(theta.to(dev, non_blocking=True), [b, 3, self.size, self.size],
                             align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.jitter > 0:
            x = self._jitter(x, factors.to(dev), hue.to(dev), order.to(dev))
        if self.grayscale_p > 0:
            mask = to_grey.to(dev).view(b, 1, 1, 1)
            x = torch.where(mask, grey(x).expand_as(x), x)
        return x.sub_(self.mean.view(1, 3, 1, 1)).div_(self.std.view(1, 3, 1, 1))

    # --- RandomResizedCrop -----------------------------------------------------------------
    def _crop_params(self, b: int, h: int, w: int, gen: torch.Generator) -> torch.Tensor:
        """Affine maps (B x 2 x 3) of torchvision's RandomResizedCrop boxes, 10 tries each."""
        tries = 10
        area = h * w * torch.empty(b, tries).uniform_(*self.scale, generator=gen)
        ratio = torch.exp(torch.empty(b, tries).uniform_(*self.log_ratio, generator=gen))
        cw = torch.sqrt(area * ratio).round()
        ch = torch.sqrt(area / ratio).round()
        ok = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((b,), -1))
        rows = torch.arange(b)
        cw = torch.where(first >= 0, cw[rows, first.clamp(min=0)], torch.full((b,), float(w)))
        ch = torch.where(first >= 0, ch[rows, first.clamp(min=0)], torch.full((b,), float(h)))
        # Top-left corner uniform over the valid positions, as randint(0, H - h + 1).
        top = torch.floor(torch.rand(b, generator=gen) * (h - ch + 1))
        left = torch.floor(torch.rand(b, generator=gen) * (w - cw + 1))
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0] = cw / w
        theta[:, 0, 2] = (2 * left + cw) / w - 1
        theta[:, 1, 1] = ch / h
        theta[:, 1, 2] = (2 * top + ch) / h - 1
        return theta

    # --- ColorJitter -------------------------------------------------------------------------
    def _jitter(self, x: torch.Tensor, factors: torch.Tensor, hue: torch.Tensor,
                order: torch.Tensor) -> torch.Tensor:
        """Brightness, contrast, saturation, hue; each image applies them in its own order."""
        for slot in range(4):
            for op in range(4):
                sel = (order[:, slot] == op).nonzero().squeeze(1)
                if sel.numel() == 0:
                    continue
                part = x.index_select(0, sel)
                if op == 3:
                    part = shift_hue(part, hue.index_select(0, sel))
                else:
                    f = factors.index_select(0, sel)[:, op].view(-1, 1, 1, 1)
                    part = _blend_op(op, part, f)
                x = x.index_copy(0, sel, part)
        return x


def _blend_op(op: int, x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    if op == 0:  # brightness: blend with black
        return (x * f).clamp_(0, 1)
    if op == 1:  # contrast: blend with the image's mean grey level
        mean = grey(x).mean(dim=(1, 2, 3), keepdim=True)
        return (f * x + (1 - f) * mean).clamp_(0, 1)
    # saturation: blend with the grey version of the image
    return (f * x + (1 - f) * grey(x)).clamp_(0, 1)


def shift_hue(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate hue by `shift` (fractions of a turn, one per image) in HSV space."""
    r, g, b = x.unbind(1)
    maxc, _ = x.max(1)
    minc, _ = x.min(1)
    delta = maxc - minc
    flat = delta == 0
    sat = delta / torch.where(flat, torch.ones_like(maxc), maxc)
    d = torch.where(flat, torch.ones_like(delta), delta)
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(flat, torch.zeros_like(h), h)
    h = torch.remainder(h / 6.0 + shift.view(-1, 1, 1), 1.0)
    # HSV -> RGB
    v = maxc
    h6 = h * 6.0
    i = torch.floor(h6)
    frac = h6 - i
    i = i.long() % 6
    p = (v * (1 - sat)).clamp(0, 1)
    q = (v * (1 - sat * frac)).clamp(0, 1)
    t = (v * (1 - sat * (1 - frac))).clamp(0, 1)
    table = torch.stack([
        torch.stack([v, q, p, p, t, v], 1),
        torch.stack([t, v, v, q, p, p], 1),
        torch.stack([p, p, t, v, v, q], 1),
    ], 1)  # B x 3(rgb) x 6(sector) x H x W
    return table.gather(2, i.unsqueeze(1).unsqueeze(2).expand(-1, 3, 1, -1, -1)).squeeze(2)
