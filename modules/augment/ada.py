"""ADA's augmentation pipeline (Karras et al., 2020, "Training Generative Adversarial Networks with Limited
Data", Appendix B): the transforms and their probabilities, with no notion of how p is chosen.

Every transform is applied to each image independently with probability ``p * multiplier`` (the paper's
"strength"), so that at p < 1 D still sees un-augmented images often enough that G cannot learn the
augmentation (the transforms are invertible in distribution: non-leaking). In the paper's order:
- pixel blitting: x-flip, quarter-turn rotation, integer translation (up to ``xint_max`` of the side);
- general geometric: isotropic scale (log2 std ``scale_std``), pre-rotation, anisotropic scale, post-rotation
  (each rotation with probability 1 - sqrt(1 - p), so that one happens with probability p), fractional
  translation. Blits and geometry are composed into one 3x3 matrix per image and resampled once, bilinearly,
  with reflection at the borders (modules.augment.resample.warp: differentiable twice, for R1 through it);
  the paper's 2x wavelet upsampling around the bilinear step (an anti-aliasing refinement) is not done;
- colour: brightness (add b ~ N(0, brightness_std^2)), contrast (scale by 2^N(0, contrast_std^2) around 0,
  the grey of the [-1, 1] range), luma flip (Householder reflection about the grey axis), hue rotation (about
  the grey axis), saturation (scale the distance from the grey axis), composed into one (C+1)x(C+1) matrix
  per image. For C channels the grey axis is (1, ..., 1)/sqrt(C): with C = 1 (grey images) luma flip negates
  and saturation is the identity (skipped); hue rotation needs RGB and is skipped unless C = 3;
- image-space filtering: random gains of four octave bands (the paper's sym2 wavelet filter bank) with the
  expected power kept;
- additive Gaussian noise (sigma ~ |N(0, noise_std^2)|) and cutout (a square of ``cutout_size`` of the side
  set to 0).
Every random draw comes from the ``torch.Generator`` passed in (as in DiffAugment), so a seeded game
reproduces its augmentations exactly; an image that draws no transform is returned bit-exactly.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from modules.augment.resample import reflect_index, warp

TRANSFORMS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
              "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout")
_BLIT = ("xflip", "rotate90", "xint")
_GEOM = ("scale", "rotate", "aniso", "xfrac")
_COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")

# Named pipelines of stylegan2-ada-pytorch's train.py (--augpipe): which transforms are on (multiplier 1).
PRESETS: dict[str, tuple[str, ...]] = {
    "none": (),
    "blit": _BLIT,
    "geom": _GEOM,
    "color": _COLOR,
    "filter": ("imgfilter",),
    "noise": ("noise",),
    "cutout": ("cutout",),
    "bg": _BLIT + _GEOM,
    "bgc": _BLIT + _GEOM + _COLOR,
    "bgcf": _BLIT + _GEOM + _COLOR + ("imgfilter",),
    "bgcfn": _BLIT + _GEOM + _COLOR + ("imgfilter", "noise"),
    "bgcfnc": _BLIT + _GEOM + _COLOR + ("imgfilter", "noise", "cutout"),
}

# sym2 (Daubechies least-asymmetric, 4 taps) low-pass filter: the paper's image-space filter bank is built on it.
_SYM2 = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)
_BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)  # expected power of the four bands (a 1/f spectrum)


@dataclass(frozen=True)
class ADARanges:
    """Ranges of the random parameters (the paper's / NVlabs' defaults); sizes relative to the image side."""

    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0  # 1: the full circle
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0
    saturation_std: float = 1.0
    imgfilter_std: float = 1.0
    noise_std: float = 0.1
    cutout_size: float = 0.5


def multipliers_of(preset: str, overrides: dict[str, float] | None = None) -> dict[str, float]:
    """Per-transform probability multipliers: the preset's transforms at 1, then ``overrides``."""
    if preset not in PRESETS:
        raise ValueError(f"ADA preset {preset!r} is unknown; choose from {sorted(PRESETS)}")
    unknown = sorted(set(overrides or {}) - set(TRANSFORMS))
    if unknown:
        raise ValueError(f"ADA multipliers: unknown transform(s) {unknown}; choose from {list(TRANSFORMS)}")
    multipliers = {name: float(name in PRESETS[preset]) for name in TRANSFORMS}
    multipliers.update({name: float(value) for name, value in (overrides or {}).items()})
    negative = sorted(name for name, value in multipliers.items() if value < 0)
    if negative:
        raise ValueError(f"ADA multipliers must be >= 0, got negative values for {negative}")
    return multipliers


# ---- 2-D sampling matrices (output position -> input position, pixel units, centred) --------------------
def affine(a: Tensor, b: Tensor, c: Tensor, d: Tensor, tx: Tensor, ty: Tensor) -> Tensor:
    """(N, 3, 3) matrices [[a, b, tx], [c, d, ty], [0, 0, 1]] from per-image entries (N,)."""
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    return torch.stack([a, b, tx, c, d, ty, zero, zero, one], dim=1).reshape(-1, 3, 3)


def translation(tx: Tensor, ty: Tensor) -> Tensor:
    one, zero = torch.ones_like(tx), torch.zeros_like(tx)
    return affine(one, zero, zero, one, tx, ty)


def scaling(sx: Tensor, sy: Tensor) -> Tensor:
    zero = torch.zeros_like(sx)
    return affine(sx, zero, zero, sy, zero, zero)


def rotation(theta: Tensor) -> Tensor:
    """Sampling matrix of a rotation by theta; theta = k * pi / 2 is torch.rot90(x, k, dims=(2, 3))."""
    return _rotation(torch.cos(theta), torch.sin(theta))


def quarter_turns(k: Tensor) -> Tensor:
    """rotation(k * pi / 2) with exact entries (cos(pi / 2) is not 0 in floating point)."""
    k = k.long() % 4
    return _rotation(torch.tensor([1.0, 0.0, -1.0, 0.0], device=k.device)[k],
                     torch.tensor([0.0, 1.0, 0.0, -1.0], device=k.device)[k])


def _rotation(cos: Tensor, sin: Tensor) -> Tensor:
    zero = torch.zeros_like(cos)
    return affine(cos, -sin, sin, cos, zero, zero)


# ---- colour matrices, (N, C+1, C+1) acting on homogeneous pixel colours ----------------------------------
def _grey_axis(channels: int, like: Tensor) -> Tensor:
    """v v^T for the unit grey axis v = (1, ..., 1)/sqrt(C) (homogeneous coordinate 0): (C+1, C+1)."""
    v = torch.zeros(channels + 1, dtype=like.dtype, device=like.device)
    v[:channels] = 1 / math.sqrt(channels)
    return torch.outer(v, v)


def _eye(channels: int, n: int, like: Tensor) -> Tensor:
    return torch.eye(channels + 1, dtype=like.dtype, device=like.device).expand(n, -1, -1)


def brightness(b: Tensor, channels: int) -> Tensor:
    """Add b (N,) to every channel."""
    m = _eye(channels, b.shape[0], b).clone()
    m[:, :channels, channels] = b[:, None]
    return m


def contrast(c: Tensor, channels: int) -> Tensor:
    """Scale every channel by c (N,) around 0."""
    m = _eye(channels, c.shape[0], c) * c[:, None, None]
    m[:, channels, channels] = 1
    return m


def luma_flip(flip: Tensor, channels: int) -> Tensor:
    """Householder reflection I - 2 v v^T about the plane normal to the grey axis where flip (N,) is 1."""
    return _eye(channels, flip.shape[0], flip) - 2 * _grey_axis(channels, flip) * flip[:, None, None]


def hue_rotation(theta: Tensor) -> Tensor:
    """RGB rotation by theta (N,) about the grey axis (Rodrigues' formula), 4x4."""
    v = torch.full((3,), 1 / math.sqrt(3), dtype=theta.dtype, device=theta.device)
    cross = torch.tensor([[0.0, -1.0, 1.0], [1.0, 0.0, -1.0], [-1.0, 1.0, 0.0]], dtype=theta.dtype,
                         device=theta.device) / math.sqrt(3)  # [v]_x: the cross product with v
    outer = torch.outer(v, v)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    m = _eye(3, theta.shape[0], theta).clone()
    m[:, :3, :3] = cos * torch.eye(3, dtype=theta.dtype, device=theta.device) + sin * cross + (1 - cos) * outer
    return m


def saturation(s: Tensor, channels: int) -> Tensor:
    """v v^T + (I - v v^T) s: scale each colour's distance from the grey axis by s (N,)."""
    grey = _grey_axis(channels, s)
    return grey + (_eye(channels, s.shape[0], s) - grey) * s[:, None, None]


def apply_color(x: Tensor, matrix: Tensor) -> Tensor:
    """Each pixel's colour c -> matrix[:C, :C] @ c + matrix[:C, C] for images x (N, C, H, W)."""
    n, c, h, w = x.shape
    m = matrix.to(x.dtype)
    return (m[:, :c, :c] @ x.reshape(n, c, h * w) + m[:, :c, c:]).reshape(n, c, h, w)


# ---- image-space filtering ------------------------------------------------------------------------------
@functools.cache
def octave_filter_bank() -> Tensor:
    """Four 1-D band-pass filters (lowest band first) that sum to a unit impulse: the low band of sym2
    iterated on the upsampled band below it, each band's high-pass added at its octave (NVlabs' construction)."""
    lo = np.asarray(_SYM2)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2, hi2 = np.convolve(lo, lo[::-1]) / 2, np.convolve(hi, hi[::-1]) / 2
    bank = np.eye(4, 1)
    for band in range(1, 4):
        upsampled = np.zeros((4, bank.shape[1] * 2 - 1))
        upsampled[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in upsampled])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start:start + hi2.size] += hi2
    return torch.as_tensor(bank, dtype=torch.float32)


def filter_separable(x: Tensor, taps: Tensor) -> Tensor:
    """Convolve image n of x (N, C, H, W) along rows and columns with its own symmetric 1-D filter taps[n]
    (N, K), mirroring at the borders (any image size)."""
    n, c, h, w = x.shape
    k = taps.shape[1]
    pad = k // 2
    rows = reflect_index(torch.arange(-pad, h + pad, device=x.device), h)
    cols = reflect_index(torch.arange(-pad, w + pad, device=x.device), w)
    padded = x.index_select(2, rows).index_select(3, cols).reshape(1, n * c, h + 2 * pad, w + 2 * pad)
    weight = taps.to(x.dtype).repeat_interleave(c, dim=0)  # (N*C, K)
    out = F.conv2d(padded, weight[:, None, :, None], groups=n * c)
    out = F.conv2d(out, weight[:, None, None, :], groups=n * c)
    return out.reshape(n, c, h, w)


# ---- the pipeline ---------------------------------------------------------------------------------------
class ADAPipeline:
    """Callable ``(x (N, C, H, W), p, generator) -> augmented x`` with ADA's transforms.

    Args:
        preset: the transforms switched on (multiplier 1), a name of PRESETS ("none": all off).
        multipliers: per-transform probability multipliers over the preset's, by TRANSFORMS name (0: off).
        ranges: the random parameters' ranges.
    """

    def __init__(self, preset: str = "bgc", multipliers: dict[str, float] | None = None,
                 ranges: ADARanges | None = None):
        self.multipliers = multipliers_of(preset, multipliers)
        self.ranges = ranges or ADARanges()
        self.last_rates: dict[str, Tensor] = {}  # share of images each group touched in the last call

    def on(self, name: str) -> bool:
        return self.multipliers[name] > 0

    def __call__(self, x: Tensor, p: Tensor | float, generator: torch.Generator | None = None) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"ADA works on image batches (N, C, H, W), got shape {tuple(x.shape)}")
        # in float32 at least, also under mixed precision: a bf16 matrix product would move pixels by up to
        # side / 256 and make colour matrices inexact
        with torch.autocast(x.device.type, enabled=False):
            return self._augment(x.to(torch.promote_types(x.dtype, torch.float32)), p, generator).to(x.dtype)

    def _augment(self, x: Tensor, p: Tensor | float, generator: torch.Generator | None) -> Tensor:
        draw = Draws(x, p, generator, self.multipliers)
        rates = {}
        matrix, rates["geometric"] = self.geometric_matrix(draw, x.shape[2], x.shape[3])
        if rates["geometric"] is not None:
            x = warp(x, matrix)
        matrix, rates["color"] = self.color_matrix(draw, x.shape[1])
        if rates["color"] is not None:
            x = apply_color(x, matrix)
        if self.on("imgfilter"):
            x, rates["filter"] = self.filter(x, draw)
        if self.on("noise"):
            x, rates["noise"] = self.noise(x, draw)
        if self.on("cutout"):
            x, rates["cutout"] = self.cutout(x, draw)
        self.last_rates = {name: chosen.float().mean() for name, chosen in rates.items() if chosen is not None}
        return x

    def geometric_matrix(self, draw: Draws, height: int, width: int) -> tuple[Tensor, Tensor | None]:
        """The composed sampling matrix (N, 3, 3) of the blits and general geometric transforms (the first
        listed acts first), and which images drew at least one (None: no such transform is on)."""
        r, steps = self.ranges, []
        if self.on("xflip"):
            flip = torch.floor(draw.uniform() * 2)
            steps.append((scaling(1 - 2 * flip, torch.ones_like(flip)), draw.chance("xflip")))
        if self.on("rotate90"):
            steps.append((quarter_turns(torch.floor(draw.uniform() * 4)), draw.chance("rotate90")))
        if self.on("xint"):
            t = torch.round((draw.uniform(2) * 2 - 1) * r.xint_max * torch.tensor([width, height], device=draw.device))
            steps.append((translation(-t[:, 0], -t[:, 1]), draw.chance("xint")))
        if self.on("scale"):
            s = torch.exp2(draw.normal() * r.scale_std)
            steps.append((scaling(1 / s, 1 / s), draw.chance("scale")))
        # a rotation before and one after the anisotropic scaling, each with probability 1 - sqrt(1 - p * m),
        # so that at least one happens with probability p * m
        rotate_p = 1 - torch.sqrt((1 - self.multipliers["rotate"] * draw.p).clamp(0, 1))
        if self.on("rotate"):
            steps.append((rotation((draw.uniform() * 2 - 1) * math.pi * r.rotate_max), draw.chance(rotate_p)))
        if self.on("aniso"):
            s = torch.exp2(draw.normal() * r.aniso_std)
            steps.append((scaling(1 / s, s), draw.chance("aniso")))
        if self.on("rotate"):
            steps.append((rotation((draw.uniform() * 2 - 1) * math.pi * r.rotate_max), draw.chance(rotate_p)))
        if self.on("xfrac"):
            t = draw.normal(2) * r.xfrac_std * torch.tensor([width, height], device=draw.device)
            steps.append((translation(-t[:, 0], -t[:, 1]), draw.chance("xfrac")))
        return _compose(steps, torch.eye(3, device=draw.device).expand(draw.n, 3, 3), right=True)

    def color_matrix(self, draw: Draws, channels: int) -> tuple[Tensor, Tensor | None]:
        """The composed colour matrix (N, C+1, C+1) and which images drew a colour transform (None: none on)."""
        r, like, steps = self.ranges, draw.p, []
        if self.on("brightness"):
            steps.append((brightness(draw.normal() * r.brightness_std, channels), draw.chance("brightness")))
        if self.on("contrast"):
            steps.append((contrast(torch.exp2(draw.normal() * r.contrast_std), channels), draw.chance("contrast")))
        if self.on("lumaflip"):
            steps.append((luma_flip(torch.floor(draw.uniform() * 2), channels), draw.chance("lumaflip")))
        if self.on("hue") and channels == 3:
            steps.append((hue_rotation((draw.uniform() * 2 - 1) * math.pi * r.hue_max), draw.chance("hue")))
        if self.on("saturation") and channels > 1:
            s = torch.exp2(draw.normal() * r.saturation_std)
            steps.append((saturation(s, channels), draw.chance("saturation")))
        return _compose(steps, _eye(channels, draw.n, like), right=False)

    def filter(self, x: Tensor, draw: Draws) -> tuple[Tensor, Tensor]:
        """Amplify each of the four octave bands by 2^N(0, imgfilter_std^2), each with probability p * m,
        renormalised to the expected power of a 1/f spectrum."""
        power = torch.tensor(_BAND_POWER, device=x.device)
        gains = torch.ones(draw.n, 4, device=x.device)
        applied = torch.zeros(draw.n, dtype=torch.bool, device=x.device)
        for band in range(4):
            gain = torch.exp2(draw.normal() * self.ranges.imgfilter_std)
            chosen = draw.chance("imgfilter")
            single = torch.ones(draw.n, 4, device=x.device)
            single[:, band] = torch.where(chosen, gain, torch.ones_like(gain))
            gains = gains * single / (power * single.square()).sum(dim=1, keepdim=True).sqrt()
            applied = applied | chosen
        filtered = filter_separable(x, gains @ octave_filter_bank().to(x.device))
        return torch.where(applied[:, None, None, None], filtered, x), applied

    def noise(self, x: Tensor, draw: Draws) -> tuple[Tensor, Tensor]:
        """Add N(0, sigma^2) per pixel and channel, sigma ~ |N(0, noise_std^2)| per image."""
        sigma = draw.normal().abs() * self.ranges.noise_std
        applied = draw.chance("noise")
        sigma = torch.where(applied, sigma, torch.zeros_like(sigma))
        return x + draw.normal(*x.shape[1:]).to(x.dtype) * sigma[:, None, None, None].to(x.dtype), applied

    def cutout(self, x: Tensor, draw: Draws) -> tuple[Tensor, Tensor]:
        """Zero a square of cutout_size of the side (a rectangle on non-square images), centred uniformly."""
        applied = draw.chance("cutout")
        half = torch.where(applied, self.ranges.cutout_size / 2, 0.0)[:, None, None]
        centre = draw.uniform(2)
        _, _, h, w = x.shape
        ys = (torch.arange(h, device=x.device) + 0.5) / h
        xs = (torch.arange(w, device=x.device) + 0.5) / w
        outside_y = (ys[None, :, None] - centre[:, 1, None, None]).abs() >= half
        outside_x = (xs[None, None, :] - centre[:, 0, None, None]).abs() >= half
        return x * (outside_y | outside_x)[:, None].to(x.dtype), applied

    def __repr__(self) -> str:
        on = ",".join(name for name in TRANSFORMS if self.on(name))
        return f"ADAPipeline({on or 'identity'})"


def _compose(steps: list[tuple[Tensor, Tensor]], eye: Tensor, right: bool) -> tuple[Tensor, Tensor | None]:
    """The product of the chosen steps' matrices (the identity where a step was not chosen, so that an image
    that drew nothing gets the exact identity), multiplied on the right (sampling matrices: the first step
    acts first) or on the left (colour matrices), and which images drew any step."""
    if not steps:
        return eye, None
    matrix, applied = eye, torch.zeros(eye.shape[0], dtype=torch.bool, device=eye.device)
    for step, chosen in steps:
        step = torch.where(chosen[:, None, None], step.to(eye.dtype), eye)
        matrix = matrix @ step if right else step @ matrix
        applied = applied | chosen
    return matrix, applied


class Draws:
    """The random numbers of one pipeline call: float32, on the batch's device, all from one generator."""

    def __init__(self, x: Tensor, p: Tensor | float, generator: torch.Generator | None,
                 multipliers: dict[str, float]):
        self.n, self.device, self.generator, self.multipliers = x.shape[0], x.device, generator, multipliers
        self.p = torch.as_tensor(p, dtype=torch.float32, device=x.device)

    def uniform(self, *shape: int) -> Tensor:
        return torch.rand((self.n, *shape), device=self.device, generator=self.generator)

    def normal(self, *shape: int) -> Tensor:
        return torch.randn((self.n, *shape), device=self.device, generator=self.generator)

    def chance(self, probability: str | Tensor) -> Tensor:
        """Per image, True with the probability given (a transform's name: p times its multiplier)."""
        if isinstance(probability, str):
            probability = self.p * self.multipliers[probability]
        return self.uniform() < probability


def ranges_of(overrides: dict[str, float] | None) -> ADARanges:
    """ADARanges with ``overrides`` by field name."""
    names = {f.name for f in fields(ADARanges)}
    unknown = sorted(set(overrides or {}) - names)
    if unknown:
        raise ValueError(f"ADA ranges: unknown name(s) {unknown}; choose from {sorted(names)}")
    return ADARanges(**{name: float(value) for name, value in (overrides or {}).items()})
