"""Procedural background textures (noise, stripes, gradients), float RGB in [0, 1], HxWx3.

Captioned backgrounds (grass, sand, water, sky, road) and a few the model never sees (bricks, checker,
marble; used to check that the VAE generalises) are kept *muted*: wherever a pixel is bright its
saturation is capped, and nothing is near white, so the detector's colour classes (saturated and
bright, or white) never fire on a background. `wild` is unconstrained random texture for VAE training.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

MAX_BACKGROUND_SATURATION = 0.40  # for pixels brighter than BRIGHT
BRIGHT = 0.45
MAX_BACKGROUND_VALUE = 0.82


def value_noise(h: int, w: int, rng: np.random.Generator, cells: tuple[float, float]) -> np.ndarray:
    """Smooth noise in [0, 1]: a random grid of `cells` (rows, cols) upsampled bicubically."""
    gh, gw = max(2, int(round(cells[0]))), max(2, int(round(cells[1])))
    grid = rng.random((gh, gw)).astype(np.float32)
    image = Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC)
    return np.clip(np.asarray(image), 0.0, 1.0)


def fractal_noise(h: int, w: int, rng: np.random.Generator, base: float, octaves: int = 4) -> np.ndarray:
    """Sum of value-noise octaves (each twice as fine, half as strong), normalised to [0, 1]."""
    total = np.zeros((h, w), np.float32)
    amplitude, norm = 1.0, 0.0
    for octave in range(octaves):
        cells = base * 2**octave
        total += amplitude * value_noise(h, w, rng, (cells * h / max(h, w), cells * w / max(h, w)))
        norm += amplitude
        amplitude *= 0.5
    total /= norm
    low, high = total.min(), total.max()
    return (total - low) / max(high - low, 1e-6)


def hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (h in turns, s, v in [0, 1]) -> RGB float HxWx3."""
    h = np.mod(h, 1.0) * 6.0
    s, v = np.clip(s, 0, 1), np.clip(v, 0, 1)
    i = np.floor(h).astype(np.int32) % 6
    f = h - np.floor(h)
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = np.zeros(h.shape + (3,), np.float32)
    for k, (r, g, b) in enumerate(choices):
        sel = i == k
        out[sel, 0], out[sel, 1], out[sel, 2] = r[sel], g[sel], b[sel]
    return out


def mute(rgb: np.ndarray) -> np.ndarray:
    """Cap saturation of bright pixels and the value of all, keeping hue (see module docstring)."""
    value = rgb.max(axis=-1, keepdims=True)
    scale = np.minimum(1.0, MAX_BACKGROUND_VALUE / np.maximum(value, 1e-6))
    rgb, value = rgb * scale, value * scale
    low = rgb.min(axis=-1, keepdims=True)
    saturation = (value - low) / np.maximum(value, 1e-6)
    cap = np.where(value > BRIGHT, MAX_BACKGROUND_SATURATION, 1.0)
    k = np.minimum(1.0, cap / np.maximum(saturation, 1e-6))
    return (value - (value - rgb) * k).astype(np.float32)


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    return x / 128.0, y / 128.0  # feature sizes in units of a 128-px frame, whatever the texture size


def _grass(h, w, rng):
    blades = value_noise(h, w, rng, (h / rng.uniform(10, 24), w / rng.uniform(1.5, 3)))
    patches = fractal_noise(h, w, rng, rng.uniform(2, 5) * max(h, w) / 128)
    hue = rng.uniform(0.21, 0.40) + 0.04 * (patches - 0.5)
    sat = rng.uniform(0.35, 0.8) + 0.15 * (blades - 0.5)
    val = rng.uniform(0.25, 0.55) + 0.25 * (blades - 0.5) + 0.15 * (patches - 0.5)
    return hsv_to_rgb(hue, sat, val)


def _sand(h, w, rng):
    x, y = _coords(h, w)
    angle, freq = rng.uniform(0, np.pi), rng.uniform(4, 14)
    warp = fractal_noise(h, w, rng, 3 * max(h, w) / 128)
    ripples = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (x * np.cos(angle) + y * np.sin(angle)) + 4 * warp)
    grain = rng.random((h, w)).astype(np.float32)
    hue = rng.uniform(0.06, 0.14) + 0.01 * (warp - 0.5)
    sat = rng.uniform(0.2, 0.5) + np.zeros((h, w), np.float32)
    val = rng.uniform(0.5, 0.75) + 0.12 * (ripples - 0.5) + 0.08 * (grain - 0.5)
    return hsv_to_rgb(hue, sat, val)


def _water(h, w, rng):
    x, y = _coords(h, w)
    warp = fractal_noise(h, w, rng, 4 * max(h, w) / 128)
    waves = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(6, 16) * y + 5 * warp + rng.uniform(0, 6))
    depth = y / max(y.max(), 1e-6) if rng.random() < 0.5 else 1 - y / max(y.max(), 1e-6)
    hue = rng.uniform(0.47, 0.62) + 0.02 * (warp - 0.5)
    sat = rng.uniform(0.35, 0.8) + 0.1 * (waves - 0.5)
    val = rng.uniform(0.3, 0.6) + 0.15 * (waves - 0.5) + 0.15 * (depth - 0.5)
    return hsv_to_rgb(hue, sat, val)


def _sky(h, w, rng):
    _, y = _coords(h, w)
    gradient = y / max(y.max(), 1e-6)
    clouds = np.clip((fractal_noise(h, w, rng, rng.uniform(2, 4) * max(h, w) / 128) - rng.uniform(0.4, 0.7)) * 3, 0, 1)
    hue = rng.uniform(0.53, 0.63) + np.zeros((h, w), np.float32)
    sat = rng.uniform(0.3, 0.7) * (1 - 0.4 * gradient) * (1 - clouds)
    val = rng.uniform(0.55, 0.8) + 0.15 * gradient + 0.2 * clouds
    return hsv_to_rgb(hue, sat, val)


def _road(h, w, rng):
    x, y = _coords(h, w)
    grain = fractal_noise(h, w, rng, 16 * max(h, w) / 128, octaves=2)
    val = rng.uniform(0.2, 0.45) + 0.12 * (grain - 0.5)
    hue = rng.uniform(0, 1) + np.zeros((h, w), np.float32)
    sat = rng.uniform(0.0, 0.12) + np.zeros((h, w), np.float32)
    if rng.random() < 0.7:  # dashed lane marking across the frame
        along, across = (x, y) if rng.random() < 0.5 else (y, x)
        centre = rng.uniform(0.2, 0.8) * across.max()
        line = (np.abs(across - centre) < rng.uniform(0.015, 0.04)) & (np.mod(along * rng.uniform(3, 6), 1.0) < 0.55)
        val = np.where(line, rng.uniform(0.6, 0.8), val)
    return hsv_to_rgb(hue, sat, val)


def _bricks(h, w, rng):
    x, y = _coords(h, w)
    bh, bw = rng.uniform(0.08, 0.16), rng.uniform(0.18, 0.35)
    row = np.floor(y / bh)
    shifted = x / bw + 0.5 * (row % 2)
    mortar = (np.mod(y / bh, 1.0) < 0.12) | (np.mod(shifted, 1.0) < 0.06)
    tone = value_noise(h, w, rng, (h / 6, w / 6))
    hue = rng.uniform(0, 1) + np.zeros((h, w), np.float32)
    sat = np.where(mortar, 0.05, rng.uniform(0.3, 0.7))
    val = np.where(mortar, 0.7, rng.uniform(0.3, 0.55) + 0.1 * (tone - 0.5))
    return hsv_to_rgb(hue, sat, val)


def _checker(h, w, rng):
    x, y = _coords(h, w)
    cell = rng.uniform(0.06, 0.2)
    odd = (np.floor(x / cell) + np.floor(y / cell)) % 2 == 1
    a, b = rng.uniform(0.1, 0.8, size=3), rng.uniform(0.1, 0.8, size=3)
    return np.where(odd[..., None], a, b).astype(np.float32)


def _marble(h, w, rng):
    x, y = _coords(h, w)
    warp = fractal_noise(h, w, rng, 3 * max(h, w) / 128)
    veins = 0.5 + 0.5 * np.sin(2 * np.pi * (rng.uniform(2, 5) * (x + y) + 3 * warp))
    hue = rng.uniform(0, 1) + 0.05 * warp
    return hsv_to_rgb(hue, rng.uniform(0.1, 0.5) * veins, 0.3 + 0.45 * veins)


def _wild(h, w, rng):
    """Anything goes (saturated colours included): random stripes, gradients and noise blended."""
    x, y = _coords(h, w)
    layers = []
    for _ in range(3):
        kind = rng.integers(3)
        if kind == 0:
            angle = rng.uniform(0, np.pi)
            layer = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(1, 20) * (x * np.cos(angle) + y * np.sin(angle)))
        elif kind == 1:
            layer = fractal_noise(h, w, rng, rng.uniform(1, 16) * max(h, w) / 128)
        else:
            layer = (x * rng.uniform(-1, 1) + y * rng.uniform(-1, 1)) % 1.0
        colour = rng.random(3).astype(np.float32)
        layers.append(layer[..., None] * colour)
    return np.clip(sum(layers) / rng.uniform(1.0, 2.0), 0, 1).astype(np.float32)


_MAKERS = {
    "grass": _grass,
    "sand": _sand,
    "water": _water,
    "sky": _sky,
    "road": _road,
    "bricks": _bricks,
    "checker": _checker,
    "marble": _marble,
    "wild": _wild,
}
TEXTURES = tuple(_MAKERS)


def texture(name: str, h: int, w: int, seed: int) -> np.ndarray:
    """Background `name` of h x w pixels, float RGB in [0, 1]; muted unless `wild`."""
    rng = np.random.default_rng(seed)
    rgb = np.clip(_MAKERS[name](h, w, rng), 0, 1).astype(np.float32)
    return rgb if name == "wild" else mute(rgb)
