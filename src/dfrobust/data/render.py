"""Procedural face renderer for the synthetic benchmark (OpenCV drawing primitives).

Why hand-written: no maintained package renders parametric, identity-consistent faces
without downloading models or assets (3D morphable models such as BFM/FLAME need licensed
downloads; GAN face generators need weights). This module draws a 2.5-D cartoon face with
OpenCV's anti-aliased primitives, which is fast (a few ms per 256x256 image on one core) and
fully determined by a seed.

* :func:`sample_identity` draws a face parameter vector (face shape, eyes, brows, nose,
  mouth, hair, skin tone and texture) from the distribution of one of six demographic groups.
* :func:`sample_conditions` draws per-image variation: pose (yaw, roll, shift, scale),
  expression (smile, mouth opening, eye opening, brow raise), lighting direction and strength,
  background and camera (noise, JPEG quality).
* :func:`render` returns a clean float image in [0, 1] plus geometry (masks of the inner face
  and mouth region) that the fake generators use.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import functools

import cv2
import numpy as np

from .manifest import GROUPS

SIZE = 256

# skin tone (RGB in [0,1]) mean and per-identity std for each ancestry; proportions per sex
_SKIN = {
    "african": (np.array([0.42, 0.29, 0.21]), 0.06),
    "asian": (np.array([0.80, 0.64, 0.50]), 0.05),
    "caucasian": (np.array([0.90, 0.72, 0.62]), 0.05),
}
_HAIR = {
    "african": [(0.08, 0.06, 0.05), (0.15, 0.10, 0.07)],
    "asian": [(0.06, 0.05, 0.05), (0.12, 0.09, 0.07)],
    "caucasian": [(0.35, 0.22, 0.12), (0.60, 0.45, 0.25), (0.15, 0.10, 0.07), (0.75, 0.62, 0.40)],
}
_FACE_W = {"african": 0.30, "asian": 0.31, "caucasian": 0.285}   # half-width / SIZE
_FACE_H = {"african": 0.375, "asian": 0.36, "caucasian": 0.38}   # half-height / SIZE
_NOSE_W = {"african": 0.30, "asian": 0.25, "caucasian": 0.21}    # relative to face half-width
_EYE_H = {"african": 0.50, "asian": 0.36, "caucasian": 0.48}     # eye height / eye width


@dataclass
class Identity:
    """Face parameter vector of one synthetic person (all lengths relative to the face size)."""

    name: str
    group: str
    skin: np.ndarray
    face_w: float
    face_h: float
    jaw: float           # 0 round .. 1 square
    eye_sep: float
    eye_w: float
    eye_h: float
    eye_y: float
    iris: np.ndarray
    brow_thick: int
    brow_tilt: float
    nose_len: float
    nose_w: float
    mouth_w: float
    lip: np.ndarray
    lip_thick: float
    hair: np.ndarray
    hair_style: int      # 0 short, 1 medium, 2 long, 3 bald-ish/buzz
    beard: float
    texture_seed: int
    texture_amp: float
    extra: dict = field(default_factory=dict)


def sample_identity(rng: np.random.Generator, group: str, name: str) -> Identity:
    """Draw one identity from ``group``'s distribution of skin tone and facial proportions."""
    if group not in GROUPS:
        raise ValueError(f"group={group!r}: expected one of {GROUPS}")
    anc, sex = group.split("_")
    male = sex == "male"
    mu, sd = _SKIN[anc]
    skin = np.clip(mu * (1 + rng.normal(0, sd)) + rng.normal(0, 0.015, 3), 0.05, 0.98)
    hair_choices = _HAIR[anc]
    hair = np.array(hair_choices[rng.integers(len(hair_choices))]) * rng.uniform(0.8, 1.2)
    return Identity(
        name=name, group=group, skin=skin,
        face_w=_FACE_W[anc] * (1.06 if male else 0.97) * rng.uniform(0.92, 1.08),
        face_h=_FACE_H[anc] * (1.03 if male else 0.97) * rng.uniform(0.94, 1.06),
        jaw=float(np.clip(rng.normal(0.65 if male else 0.3, 0.15), 0, 1)),
        eye_sep=rng.uniform(0.36, 0.46),
        eye_w=rng.uniform(0.17, 0.23) * (0.95 if male else 1.05),
        eye_h=_EYE_H[anc] * rng.uniform(0.85, 1.15),
        eye_y=rng.uniform(-0.2, -0.1),
        iris=np.clip(np.array([0.25, 0.16, 0.08]) * rng.uniform(0.5, 1.3)
                     + (np.array([0.0, 0.15, 0.25]) * rng.random() if anc == "caucasian" else 0), 0, 1),
        brow_thick=int(rng.integers(4, 8) if male else rng.integers(2, 5)),
        brow_tilt=rng.uniform(-0.08, 0.12),
        nose_len=rng.uniform(0.28, 0.40),
        nose_w=_NOSE_W[anc] * rng.uniform(0.85, 1.15),
        mouth_w=rng.uniform(0.30, 0.42) * (1.0 if male else 0.95),
        lip=np.clip(skin * np.array([0.85, 0.55, 0.55]) * rng.uniform(0.8, 1.05)
                    + (0 if male else np.array([0.12, 0.0, 0.02]) * rng.random()), 0, 1),
        lip_thick=rng.uniform(0.04, 0.07) * ((1.25 if anc == "african" else 1.0) * (0.9 if male else 1.1)),
        hair=np.clip(hair, 0, 1),
        hair_style=int(rng.choice([0, 1, 3], p=[0.6, 0.25, 0.15]) if male else rng.choice([1, 2], p=[0.3, 0.7])),
        beard=float(rng.uniform(0, 0.6) if (male and rng.random() < 0.4) else 0.0),
        texture_seed=int(rng.integers(2**31 - 1)),
        texture_amp=rng.uniform(0.02, 0.05),
    )


@dataclass
class Conditions:
    """Per-image variation: pose, expression, lighting, background and camera."""

    yaw: float = 0.0           # -1..1 (sin of yaw)
    roll: float = 0.0          # degrees
    dx: float = 0.0            # pixels
    dy: float = 0.0
    scale: float = 1.0
    smile: float = 0.0         # -0.3..1
    mouth_open: float = 0.0    # 0..1
    eye_open: float = 1.0      # 0..1 (0 = closed, blink)
    brow_raise: float = 0.0    # -1..1
    light_dir: float = 0.0     # radians
    light_amp: float = 0.2
    ambient: float = 1.0
    bg: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5, 0.5]))
    bg2: np.ndarray = field(default_factory=lambda: np.array([0.4, 0.4, 0.4]))
    bg_angle: float = 0.0
    shirt: np.ndarray = field(default_factory=lambda: np.array([0.2, 0.3, 0.5]))
    noise: float = 0.01
    jpeg: int = 90
    bg_seed: int = 0


def sample_conditions(rng: np.random.Generator) -> Conditions:
    """Draw pose, expression, lighting, background and camera for one still image."""
    return Conditions(
        yaw=float(np.clip(rng.normal(0, 0.25), -0.55, 0.55)),
        roll=float(np.clip(rng.normal(0, 6), -15, 15)),
        dx=rng.normal(0, 4), dy=rng.normal(0, 4), scale=rng.uniform(0.92, 1.08),
        smile=rng.uniform(-0.3, 1.0), mouth_open=float(rng.choice([0.0, rng.uniform(0, 1)], p=[0.5, 0.5])),
        eye_open=float(rng.choice([1.0, rng.uniform(0.3, 1)], p=[0.8, 0.2])), brow_raise=rng.uniform(-0.6, 1.0),
        light_dir=rng.uniform(0, 2 * np.pi), light_amp=rng.uniform(0.05, 0.35), ambient=rng.uniform(0.8, 1.12),
        bg=rng.uniform(0.1, 0.9, 3), bg2=rng.uniform(0.1, 0.9, 3), bg_angle=rng.uniform(0, 2 * np.pi),
        shirt=rng.uniform(0.05, 0.85, 3), noise=rng.uniform(0.004, 0.02), jpeg=int(rng.integers(70, 96)),
        bg_seed=int(rng.integers(2**31 - 1)),
    )


_GRID = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)  # (y, x)


def _col(c) -> tuple[float, float, float]:
    c = np.asarray(c, dtype=np.float64)
    return (float(c[0]), float(c[1]), float(c[2]))


def _ell(img, c, axes, ang, col, thick=-1):
    cv2.ellipse(img, (int(round(c[0] * 16)), int(round(c[1] * 16))),
                (max(1, int(round(axes[0] * 16))), max(1, int(round(axes[1] * 16)))),
                ang, 0, 360, _col(col), thick, cv2.LINE_AA, 4)


def _poly(img, pts, col, closed=True, thick=-1):
    pts = np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)
    if thick < 0:
        cv2.fillPoly(img, [pts], _col(col), cv2.LINE_AA, 4)
    else:
        cv2.polylines(img, [pts], closed, _col(col), thick, cv2.LINE_AA, 4)


@functools.lru_cache(maxsize=256)
def _texture(seed: int, amp: float) -> np.ndarray:
    r = np.random.default_rng(seed)
    t = cv2.resize(r.normal(0, 1, (64, 64)).astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_CUBIC)
    fine = r.normal(0, 0.5, (SIZE, SIZE)).astype(np.float32)
    return (amp * (0.6 * t + cv2.GaussianBlur(fine, (0, 0), 0.8))).astype(np.float32)


def _background(c: Conditions) -> np.ndarray:
    """Out-of-focus background: a colour gradient with soft blobs (drawn at 1/4 size, upsampled)."""
    s = SIZE // 4
    y, x = np.mgrid[0:s, 0:s].astype(np.float32)
    t = ((x - s / 2) * np.cos(c.bg_angle) + (y - s / 2) * np.sin(c.bg_angle)) / s + 0.5
    t = np.clip(t, 0, 1)[..., None]
    img = (1 - t) * c.bg.astype(np.float32) + t * c.bg2.astype(np.float32)
    mean = img.mean((0, 1))
    r = np.random.default_rng(c.bg_seed)
    for _ in range(3):  # a few soft blobs (out-of-focus objects)
        col = r.uniform(0.1, 0.9, 3)
        _ell(img, r.uniform(0, s, 2), r.uniform(15, 60, 2) / 4, r.uniform(0, 180), 0.6 * mean + 0.4 * col)
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    return cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_LINEAR)


def render(ident: Identity, c: Conditions, background: np.ndarray | None = None) -> tuple[np.ndarray, dict]:
    """Render a face: clean float32 RGB [256, 256, 3] in [0, 1] and geometry.

    Geometry: ``face_mask`` (whole face), ``inner_mask`` (brows, eyes, nose, mouth: the region
    a face swap replaces), ``mouth_mask`` (mouth and chin: the region reenactment edits), the
    2x3 affine ``M`` applied for roll/shift/scale, and key points in output coordinates.
    """
    S = SIZE
    img = (_background(c) if background is None else background).copy()
    fw, fh = ident.face_w * S, ident.face_h * S
    cx, cy = S / 2, S / 2 + 0.04 * S
    yaw = c.yaw
    sx = fw * (1 - 0.12 * abs(yaw))            # foreshortened half-width
    off = yaw * fw * 0.38                       # feature shift with yaw
    skin = ident.skin.astype(np.float32)

    # body
    _ell(img, (cx, S * 1.08), (S * 0.45, S * 0.25), 0, c.shirt)
    _poly(img, [(cx - 0.45 * fw, cy + 0.6 * fh), (cx + 0.45 * fw, cy + 0.6 * fh),
                (cx + 0.5 * fw, S * 0.92), (cx - 0.5 * fw, S * 0.92)], skin * 0.8)
    # long hair behind the head
    if ident.hair_style == 2:
        _poly(img, [(cx - 1.25 * sx + off * 0.3, cy - 0.4 * fh), (cx + 1.25 * sx + off * 0.3, cy - 0.4 * fh),
                    (cx + 1.35 * sx, cy + 1.15 * fh), (cx - 1.35 * sx, cy + 1.15 * fh)], ident.hair * 0.9)
    # ears
    for side in (-1, 1):
        vis = 1 - 0.8 * max(0.0, side * yaw)
        _ell(img, (cx + side * sx * 0.98 + off * 0.2, cy - 0.02 * fh), (0.16 * fw * vis, 0.22 * fh), 0, skin * 0.9)
    # face shape: upper ellipse + jaw polygon
    face = np.zeros((S, S), np.float32)
    _ell(face, (cx + off * 0.15, cy - 0.05 * fh), (sx, fh * 0.95), 0, (1, 1, 1))
    jw = sx * (0.55 + 0.35 * ident.jaw)
    _poly(face, [(cx - sx + off * 0.1, cy), (cx + sx + off * 0.1, cy), (cx + jw + off * 0.4, cy + 0.78 * fh),
                 (cx + off * 0.5 + 0.25 * jw, cy + fh), (cx + off * 0.5 - 0.25 * jw, cy + fh),
                 (cx - jw + off * 0.4, cy + 0.78 * fh)], (1, 1, 1))
    tex = _texture(ident.texture_seed, ident.texture_amp)
    skin_img = skin[None, None, :] * (1 + tex[..., None])
    fm = face[..., None]
    img = img * (1 - fm) + skin_img * fm
    # cheeks / shading under the jaw
    _ell(img, (cx + off * 0.5, cy + 0.35 * fh), (0.55 * sx, 0.25 * fh), 0, skin * 0.97)
    # beard stubble
    if ident.beard > 0:
        bm = np.zeros((S, S), np.float32)
        _ell(bm, (cx + off * 0.5, cy + 0.62 * fh), (0.8 * sx, 0.42 * fh), 0, (1, 1, 1))
        bm = cv2.GaussianBlur(bm * face, (0, 0), 3)[..., None] * ident.beard
        img = img * (1 - 0.6 * bm) + (ident.hair * 0.6)[None, None] * 0.6 * bm

    # eyes
    ex = ident.eye_sep * fw
    ey = cy + ident.eye_y * fh
    ew = ident.eye_w * fw
    pts = {}
    for side in (-1, 1):
        fore = 1 - 0.35 * max(0.0, side * yaw)    # far eye is narrower
        x = cx + side * ex * (1 - 0.15 * abs(yaw)) + off
        w = ew * fore
        h = max(0.6, ew * ident.eye_h * c.eye_open)
        _ell(img, (x, ey), (w * 1.15, h * 1.35 + 1.5), 0, skin * 0.82)            # socket shadow
        if c.eye_open > 0.12:
            _ell(img, (x, ey), (w, h), 0, (0.93, 0.92, 0.9))
            ix = x + yaw * w * 0.3
            _ell(img, (ix, ey), (min(h, w * 0.42), min(h, w * 0.42)), 0, ident.iris)
            _ell(img, (ix, ey), (min(h, w * 0.18), min(h, w * 0.18)), 0, (0.03, 0.03, 0.03))
            _ell(img, (ix - w * 0.12, ey - h * 0.3), (1.2, 1.2), 0, (1, 1, 1))
        cv2.ellipse(img, (int(x * 16), int(ey * 16)), (int(w * 16), int(h * 16)), 0, 180, 360,
                    (0.1, 0.08, 0.07), 1, cv2.LINE_AA, 4)
        # brow
        by = ey - h - 0.12 * fh - 0.05 * fh * c.brow_raise
        tilt = ident.brow_tilt * fh * side
        _poly(img, [(x - side * w * 1.1, by + 0.04 * fh), (x, by - 0.01 * fh - tilt * 0.3),
                    (x + side * w * 1.15, by + tilt)], ident.hair * 0.8, closed=False, thick=ident.brow_thick)
        pts[f"eye{side}"] = (x, ey)

    # nose
    ny0, ny1 = ey + 0.05 * fh, ey + ident.nose_len * fh * 1.45
    nx = cx + off * 1.15
    nw = ident.nose_w * fw
    _poly(img, [(nx - 0.2 * nw + yaw * 4, ny0), (nx - nw * 0.55, ny1 - 0.02 * fh), (nx, ny1 + 0.04 * fh),
                (nx + nw * 0.55, ny1 - 0.02 * fh), (nx + 0.2 * nw + yaw * 4, ny0)], skin * 1.04)
    _poly(img, [(nx - 0.15 * nw + yaw * 6, ny0), (nx - 0.2 * nw + yaw * 8, ny1 - 0.06 * fh)],
          skin * 0.78, closed=False, thick=2)
    for side in (-1, 1):
        _ell(img, (nx + side * nw * 0.32, ny1), (nw * 0.15, nw * 0.08), 0, skin * 0.45)
    # mouth
    my = ny1 + (1 - ident.nose_len) * 0.3 * fh + 0.06 * fh
    mw = ident.mouth_w * fw * (1 + 0.15 * c.smile) * (1 - 0.15 * abs(yaw))
    mx = cx + off * 0.95
    curve = c.smile * 0.06 * fh
    op = c.mouth_open * 0.13 * fh
    lt = ident.lip_thick * fh
    upper = [(mx - mw, my - curve), (mx - mw * 0.4, my - lt * 0.9), (mx, my - lt * 0.6),
             (mx + mw * 0.4, my - lt * 0.9), (mx + mw, my - curve)]
    lower = [(mx + mw, my - curve), (mx + mw * 0.5, my + op + lt * 1.1 + curve * 0.3),
             (mx, my + op + lt * 1.3 + curve * 0.4), (mx - mw * 0.5, my + op + lt * 1.1 + curve * 0.3)]
    _poly(img, upper + lower, ident.lip)
    if c.mouth_open > 0.05:
        inner = [(mx - mw * 0.85, my - curve * 0.8), (mx, my + lt * 0.1), (mx + mw * 0.85, my - curve * 0.8),
                 (mx, my + op + curve * 0.3)]
        _poly(img, inner, (0.18, 0.05, 0.05))
        _poly(img, [(mx - mw * 0.6, my - curve * 0.5), (mx + mw * 0.6, my - curve * 0.5),
                    (mx + mw * 0.5, my + min(op, lt) * 0.6), (mx - mw * 0.5, my + min(op, lt) * 0.6)], (0.92, 0.9, 0.85))
    else:
        _poly(img, [(mx - mw, my - curve), (mx, my + lt * 0.15), (mx + mw, my - curve)],
              ident.lip * 0.5, closed=False, thick=1)
    pts["mouth"] = (mx, my)
    pts["nose"] = (nx, ny1)

    # hair on top
    if ident.hair_style != 3:
        hm = np.zeros((S, S), np.float32)
        top = cy - fh * 0.95
        _ell(hm, (cx + off * 0.1, cy - 0.35 * fh), (sx * 1.08, fh * 0.75), 0, (1, 1, 1))
        cut = np.zeros((S, S), np.float32)
        fringe = cy - fh * (0.45 if ident.hair_style == 0 else 0.38)
        _poly(cut, [(0, 0), (S, 0), (S, fringe), (cx + off * 0.1 + sx * 0.6, fringe + 0.06 * fh),
                    (cx + off * 0.1, fringe - 0.05 * fh), (cx + off * 0.1 - sx * 0.6, fringe + 0.06 * fh),
                    (0, fringe)], (1, 1, 1))
        hm = hm * cut
        if ident.hair_style >= 1:
            _ell(hm, (cx + off * 0.1, top + 0.25 * fh), (sx * 1.12, fh * 0.42), 0, (1, 1, 1))
        if ident.hair_style == 2:
            for side in (-1, 1):
                _poly(hm, [(cx + side * sx * 1.0, cy - 0.5 * fh), (cx + side * sx * 1.2, cy - 0.3 * fh),
                           (cx + side * sx * 1.25, cy + 0.9 * fh), (cx + side * sx * 0.98, cy + 0.9 * fh)], (1, 1, 1))
        strands = _texture(ident.texture_seed + 1, 0.12)
        hc = ident.hair[None, None].astype(np.float32) * (1 + strands[..., None])
        hm = hm[..., None]
        img = img * (1 - hm) + hc * hm
        face = face * (1 - hm[..., 0])

    # lighting: directional shading over the head, weaker on background
    y, x = _GRID
    shade = ((x - cx) * np.cos(c.light_dir) + (y - cy) * np.sin(c.light_dir)) / fw
    head = cv2.GaussianBlur(np.maximum(face, 0), (0, 0), 4)
    gain = c.ambient * (1 + c.light_amp * np.clip(shade, -1.5, 1.5) * (0.35 + 0.65 * head))
    img = img * gain[..., None]

    # masks in canonical coordinates
    inner = np.zeros((S, S), np.float32)
    _ell(inner, (cx + off * 0.9, (ey - 0.2 * fh + my + 0.1 * fh) / 2),
         (ex + ew * 1.25, (my + 0.1 * fh - (ey - 0.2 * fh)) / 2 + 0.05 * fh), 0, (1, 1, 1))
    inner *= np.clip(cv2.dilate(face, np.ones((3, 3), np.uint8)), 0, 1)
    mouth = np.zeros((S, S), np.float32)
    _ell(mouth, (mx, my + 0.08 * fh), (mw * 1.35, 0.24 * fh), 0, (1, 1, 1))

    # pose: roll + shift + scale
    M = cv2.getRotationMatrix2D((cx, cy), c.roll, c.scale)
    M[:, 2] += (c.dx, c.dy)
    warp = lambda a, mode=cv2.BORDER_REFLECT101: cv2.warpAffine(a, M, (S, S), flags=cv2.INTER_LINEAR, borderMode=mode)  # noqa: E731
    img = warp(img)
    geo = {"M": M, "face_mask": warp(face, cv2.BORDER_CONSTANT), "inner_mask": warp(inner, cv2.BORDER_CONSTANT),
           "mouth_mask": warp(mouth, cv2.BORDER_CONSTANT),
           "points": {k: tuple(M @ np.array([v[0], v[1], 1.0])) for k, v in pts.items()}}
    return np.clip(img, 0, 1).astype(np.float32), geo


def camera(img: np.ndarray, c: Conditions, rng: np.random.Generator, jpeg: bool = True) -> np.ndarray:
    """Sensor noise then JPEG at the conditions' quality: float [0,1] → uint8 RGB."""
    noisy = img + np.float32(c.noise) * rng.standard_normal(img.shape, dtype=np.float32)
    out = np.clip(np.round(noisy * 255), 0, 255).astype(np.uint8)
    if jpeg:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(c.jpeg)])
        out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out
