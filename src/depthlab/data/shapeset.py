"""``shapeset``: Shapeset-3x2 (Glorot & Bengio 2010), generated and rasterised with NumPy.

Definition used (see /work/shared/reference/papers.md):

* 32x32 grey images holding 1 or 2 shapes (count uniform in {1, 2}); each shape uniform among
  triangle, parallelogram, ellipse.
* Shape pose: per-axis size ``s_x, s_y ~ U[0.2, 0.8] * 32`` pixels, rotation ``2*pi*k/255`` with
  ``k`` uniform in {0, ..., 254}, translation uniform among the positions that keep the rotated
  shape's bounding box inside the image (a size/rotation draw that cannot fit is redrawn).
* Greys: background ``U[0, 0.45]``, each shape ``U[0.55, 1]``; with probability 0.5 the two ranges
  are swapped (dark shapes on a light background). Pixels are then mapped to [-1, 1] by ``2g - 1``.
* A second shape whose overlap with the first exceeds 50% of the smaller of the two areas is
  redrawn (new pose, same shape type, so label frequencies are unchanged); it is drawn on top.
* Label: the unordered set of shapes, 9 classes: 0-2 single triangle / parallelogram / ellipse,
  3-8 the pairs (t,t), (t,p), (t,e), (p,p), (p,e), (e,e). Expected frequencies: single shapes
  1/6 each, mixed pairs 1/9, same-shape pairs 1/18 (always guessing one class: 83.3% error).

Shapes live in a unit frame ``(u, v)`` in [-0.5, 0.5]^2 (triangle with base at ``v=-0.5`` and
apex at ``(0, 0.5)``; parallelogram with horizontal sides offset by a quarter width; ellipse
``u^2 + v^2 <= 1/4``); pixel centre ``p`` maps to that frame by
``(u, v) = (R(-theta) (p - c)) / (s_x, s_y)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from depthlab.backend import resolve_dtype, xp
from depthlab.data.dataset import RawData

SIZE = 32
N_ROTATIONS = 255
SHAPES = ("triangle", "parallelogram", "ellipse")
PAIRS = ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))
CLASS_NAMES = list(SHAPES) + [f"{SHAPES[a]}+{SHAPES[b]}" for a, b in PAIRS]
EXPECTED_FREQUENCIES = np.array([1 / 6] * 3 + [1 / 18, 1 / 9, 1 / 9, 1 / 18, 1 / 9, 1 / 18])
DEFAULT_N = 10_000
_ELLIPSE = 2
# Convex polygons in the unit frame, vertices counter-clockwise.
_POLYGONS = {
    0: np.array([[-0.5, -0.5], [0.5, -0.5], [0.0, 0.5]]),
    1: np.array([[-0.5, -0.5], [0.25, -0.5], [0.5, 0.5], [-0.25, 0.5]]),
}
_PAIR_CLASS = np.full((3, 3), -1, dtype=np.int64)
for _c, (_a, _b) in enumerate(PAIRS):
    _PAIR_CLASS[_a, _b] = _PAIR_CLASS[_b, _a] = 3 + _c


def _extents(types, sx, sy, theta):
    """Bounding box (x_lo, x_hi, y_lo, y_hi) of each rotated, scaled shape around its centre."""
    c, s = np.cos(theta), np.sin(theta)
    x_lo, x_hi = np.empty_like(sx), np.empty_like(sx)
    y_lo, y_hi = np.empty_like(sx), np.empty_like(sx)
    e = types == _ELLIPSE
    hx = np.sqrt((0.5 * sx[e] * c[e]) ** 2 + (0.5 * sy[e] * s[e]) ** 2)
    hy = np.sqrt((0.5 * sx[e] * s[e]) ** 2 + (0.5 * sy[e] * c[e]) ** 2)
    x_lo[e], x_hi[e], y_lo[e], y_hi[e] = -hx, hx, -hy, hy
    for t, verts in _POLYGONS.items():
        m = types == t
        px = verts[:, 0] * sx[m, None]
        py = verts[:, 1] * sy[m, None]
        xr = c[m, None] * px - s[m, None] * py
        yr = s[m, None] * px + c[m, None] * py
        x_lo[m], x_hi[m] = xr.min(1), xr.max(1)
        y_lo[m], y_hi[m] = yr.min(1), yr.max(1)
    return x_lo, x_hi, y_lo, y_hi


def _sample_poses(types: np.ndarray, rng: np.random.Generator, size: int) -> np.ndarray:
    """Poses (m, 5): s_x, s_y, theta, c_x, c_y, with the rotated shape inside [0, size]^2."""
    m = types.shape[0]
    pose = np.empty((m, 5))
    box = np.empty((m, 4))
    todo = np.arange(m)
    for _ in range(1000):
        if todo.size == 0:
            break
        k = todo.size
        sx = rng.uniform(0.2, 0.8, k) * size
        sy = rng.uniform(0.2, 0.8, k) * size
        theta = rng.integers(0, N_ROTATIONS, k) * (2.0 * np.pi / N_ROTATIONS)
        ext = np.stack(_extents(types[todo], sx, sy, theta), axis=1)
        fits = (ext[:, 1] - ext[:, 0] <= size) & (ext[:, 3] - ext[:, 2] <= size)
        done = todo[fits]
        pose[done, 0], pose[done, 1], pose[done, 2] = sx[fits], sy[fits], theta[fits]
        box[done] = ext[fits]
        todo = todo[~fits]
    if todo.size:  # pragma: no cover - probability ~0
        raise RuntimeError("shapeset: could not fit shapes inside the image")
    pose[:, 3] = rng.uniform(-box[:, 0], size - box[:, 1])
    pose[:, 4] = rng.uniform(-box[:, 2], size - box[:, 3])
    return pose


def rasterize(types: np.ndarray, pose: np.ndarray, size: int = SIZE, chunk: int = 4096):
    """Boolean masks (m, size, size): pixel centre (j + 0.5, i + 0.5) inside shape ``types[k]``."""
    m = types.shape[0]
    out = np.zeros((m, size, size), dtype=bool)
    grid = (np.arange(size, dtype=np.float32) + np.float32(0.5))
    gx = grid[None, None, :]  # column -> x
    gy = grid[None, :, None]  # row -> y
    for start in range(0, m, chunk):
        sl = slice(start, min(start + chunk, m))
        p = pose[sl].astype(np.float32)
        t = types[sl]
        c = np.cos(p[:, 2])[:, None, None]
        s = np.sin(p[:, 2])[:, None, None]
        dx = gx - p[:, 3, None, None]
        dy = gy - p[:, 4, None, None]
        u = (c * dx + s * dy) / p[:, 0, None, None]
        v = (c * dy - s * dx) / p[:, 1, None, None]
        block = out[sl]
        e = t == _ELLIPSE
        block[e] = u[e] ** 2 + v[e] ** 2 <= np.float32(0.25)
        for shape, verts in _POLYGONS.items():
            sel = t == shape
            if not sel.any():
                continue
            us, vs = u[sel], v[sel]
            inside = np.ones(us.shape, dtype=bool)
            for (ax, ay), (bx, by) in zip(verts, np.roll(verts, -1, axis=0)):
                inside &= (bx - ax) * (vs - np.float32(ay)) - (by - ay) * (us - np.float32(ax)) >= 0
            block[sel] = inside
    return out


def make_shapeset(
    n: int = DEFAULT_N, rng: np.random.Generator | None = None, *, size: int = SIZE,
    dtype: Any = "float32",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Generate ``n`` Shapeset-3x2 images.

    Returns ``(x, y, shapes)``: images (n, size*size) in [-1, 1], labels (n,) in 0..8, and the
    shape types (n, 2) (0 triangle, 1 parallelogram, 2 ellipse, -1 none).
    """
    if rng is None:
        raise TypeError("make_shapeset needs a numpy.random.Generator (depthlab.backend.rng(seed))")
    dt = resolve_dtype(dtype)
    if isinstance(size, bool) or not isinstance(size, int) or size < 4:
        raise ValueError(f"size={size!r} must be an int >= 4")
    count = rng.integers(1, 3, n)
    types = rng.integers(0, 3, (n, 2))
    types[count == 1, 1] = -1

    mask1 = rasterize(types[:, 0], _sample_poses(types[:, 0], rng, size), size)
    two = np.flatnonzero(count == 2)
    mask2 = np.zeros((two.size, size, size), dtype=bool)
    area1 = mask1[two].sum(axis=(1, 2))
    todo = np.arange(two.size)
    for _ in range(10_000):
        if todo.size == 0:
            break
        t2 = types[two[todo], 1]
        m2 = rasterize(t2, _sample_poses(t2, rng, size), size)
        inter = (m2 & mask1[two[todo]]).sum(axis=(1, 2))
        limit = 0.5 * np.minimum(area1[todo], m2.sum(axis=(1, 2)))
        ok = inter <= limit
        mask2[todo[ok]] = m2[ok]
        todo = todo[~ok]
    if todo.size:  # pragma: no cover - probability ~0
        raise RuntimeError("shapeset: could not place second shapes without heavy overlap")

    swap = rng.random(n) < 0.5
    low_bg = np.float32(0.45) * rng.random(n, dtype=np.float32)
    high_bg = np.float32(0.55) + np.float32(0.45) * rng.random(n, dtype=np.float32)
    low_fg = np.float32(0.45) * rng.random((n, 2), dtype=np.float32)
    high_fg = np.float32(0.55) + np.float32(0.45) * rng.random((n, 2), dtype=np.float32)
    bg = np.where(swap, high_bg, low_bg)
    fg = np.where(swap[:, None], low_fg, high_fg)

    img = xp.empty((n, size, size), dtype=dt)
    img[...] = bg[:, None, None]
    img[mask1] = np.broadcast_to(fg[:, 0, None, None], img.shape)[mask1]
    sub = img[two]
    sub[mask2] = np.broadcast_to(fg[two, 1, None, None], sub.shape)[mask2]
    img[two] = sub
    xp.multiply(img, dt.type(2.0), out=img)
    xp.subtract(img, dt.type(1.0), out=img)

    a, b = types[:, 0], types[:, 1]
    y = np.where(count == 1, a, _PAIR_CLASS[a, np.maximum(b, 0)])
    return img.reshape(n, size * size), y.astype(np.int64), types


def load(*, n: int | None = None, seed: int = 0, rng=None, dtype="float32") -> RawData:
    """Generate ``n`` (default 10,000) images with the data-generation generator ``rng``."""
    n = DEFAULT_N if n is None else int(n)
    x, y, _ = make_shapeset(n, rng, dtype=dtype)
    return RawData(
        x=x,
        y=y,
        n_classes=9,
        sized=True,
        info={
            "source": "generated (Glorot & Bengio 2010 Shapeset-3x2 definition)",
            "description": "32x32 grey, 1 or 2 shapes, label = set of shapes, pixels in [-1, 1]",
            "image_shape": (SIZE, SIZE),
            "class_names": CLASS_NAMES,
            "expected_class_frequencies": EXPECTED_FREQUENCIES.tolist(),
        },
    )
