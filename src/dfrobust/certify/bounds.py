"""Bounds on a detector's logit margin over an L∞ ball: IBP, CROWN and alpha-CROWN (backward linear relaxation).

For a two-class detector with clean prediction ŷ, the margin ``m(x) = z_ŷ(x) − z_other(x)``
gives ``P(ŷ | x) = σ(m(x))``; :func:`margin_bounds` returns ``m_lo <= m(x') <= m_hi`` for every
``x'`` in the box ``[max(x − ε, 0), min(x + ε, 1)]`` (the L∞ ball clipped to the image range).

Why hand-written. auto_LiRPA is the reference verifier, but its only PyPI release
(``auto-lirpa`` 0.3, 2022) pins ``torch<1.13`` (pip cannot resolve it beside torch 2.14.1), and
installed with ``--no-deps`` it fails at import on numpy 2 (``numpy.lib.arraysetops`` is gone);
its maintained GitHub master is not released to PyPI. The other PyPI entries in the field
(``abstractnn`` 0.1.5, ``constraintflow`` 0.1.1, ``auto-verify``, a portfolio runner of external
verifiers) are young releases or need external tools, and were not adopted (not tried here).
So this module implements the two
textbook methods for exactly the operations the MesoNets use, on a graph traced by ``torch.fx``
(the maintained tracer, so no hand-written model walk):

* convolution (any padding/stride/dilation, so the inception branches' dilated 3x3 convs),
  eval-mode batch-norm and the detector's input normalisation (per-channel affine maps, scales
  of either sign), dense layers, ``ReLU``, ``LeakyReLU`` with a negative slope in [0, 1] (other
  slopes make the map concave or non-monotone and are refused), max-pooling (any kernel, stride
  and padding, ``ceil_mode``; overlapping windows are relaxed window by window), channel
  concatenation (the inception branches), flatten/permute/squeeze/reshape, and dropout/identity
  (identity in eval mode). Anything else is a one-line ``ValueError``.
* **IBP** (Gowal et al. 2018): interval arithmetic layer by layer, in centre/radius form for
  the linear layers (exact for one affine layer).
* **CROWN** (Zhang et al. 2018): the margin is bounded by a linear function of the input,
  propagated backwards with linear relaxations: ReLU/LeakyReLU get the chord as upper bound and
  a line through the origin with slope 1 or the negative slope as lower bound (the adaptive
  choice); max-pool gets DeepPoly's relaxation per window (the window's element with the largest
  lower bound below, the window's largest upper bound above; exactly that element when its lower
  bound beats every other member's upper bound). Intermediate bounds come from the same backward
  pass (back-substitution), for every neuron whose bound feeds a relaxation: the pre-activations
  that IBP leaves unstable, and the max-pool inputs that can be the maximum of a window that is not
  exact yet (layers where IBP is already exact per neuron are skipped). Every refined bound, and
  the final margin, is the **intersection** of the CROWN and the IBP interval (for the margin, whose
  rows are few, the lower ReLU slopes are the best per sample and direction of three fixed choices:
  the adaptive one, the negative slope, the chord's slope; the adaptive one alone was up to 8e-3
  looser than the reference CROWN on a ``../shared/certify`` case), so CROWN is never
  looser than IBP, neuron by neuron. A backward row only touches its neuron's receptive field, so
  rows are chunked by neighbourhood (tiles of ``_TILE`` x ``_TILE`` neurons) and carried on the
  rectangle they can reach, not the whole image. ``crown_budget`` caps the refined neurons per
  layer and sample (those with the largest relaxation area −l·u, or width for max-pool inputs,
  first); the rest keep IBP bounds — sound, cheaper, looser. CROWN costs orders of magnitude more
  than IBP (``bench/bench_certify.py``).
  Where the width went before (issue 25): max-pool inputs had IBP bounds, so on Meso4 (conv →
  ReLU → BN → pool) every window below the top looked inexact and its upper bound was IBP's;
  CROWN bounds on the pool inputs make most windows exact (the pool is then linear) and match an
  independent implementation's CROWN on the ``../shared/certify`` references.
* **alpha-CROWN** (Xu et al. 2021): CROWN's intermediate bounds, then the lower-relaxation slopes
  of the unstable ReLUs in the margin's bound optimised per sample and direction by Adam
  (``alpha_steps``, ``alpha_lr``), projected to [negative slope, 1] (every such line is a sound
  lower bound), keeping the best bound seen; it starts from CROWN's slopes, so it is never looser.

Soundness holds in real arithmetic; computations run in float64 (the default ``dtype``), so the
rounding of a float32 forward pass (~1e-7 relative) is far below any margin the book reports.
Batching: samples are bounded together; the CROWN rows of all samples share one backward pass,
split in chunks that fit ``max_bytes``.
"""

from __future__ import annotations

import copy
import math
import operator
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from ..core.params import check_eps

METHODS = ("ibp", "crown", "alpha-crown")

ALPHA_STEPS, ALPHA_LR = 20, 0.5  # alpha-CROWN's Adam steps and learning rate (slopes live in [0, 1])
_TILE = 4  # CROWN rows are chunked by tiles of _TILE x _TILE neurons (see Graph._backward)
_RESHAPE_METHODS = {"flatten", "view", "reshape", "squeeze", "unsqueeze", "contiguous"}
_SUPPORTED = ("Conv2d, BatchNorm2d (eval), Linear, ReLU, LeakyReLU, MaxPool2d, Dropout, Identity, "
              "Flatten, torch.cat(dim=1), permute/flatten/view/reshape/squeeze")


def _take(t: torch.Tensor, sidx) -> torch.Tensor:
    """Per-row slice of per-sample tensor ``t``: a broadcast view for one sample (int), else a gather."""
    return t[sidx:sidx + 1] if isinstance(sidx, int) else t[sidx]


def _rdot(a: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Per row: ``sum(a * v)`` with ``v`` one sample's tensor (broadcast) or one per row."""
    if v.shape[0] == 1:
        return a.reshape(a.shape[0], -1) @ v.reshape(-1)
    return (a.reshape(a.shape[0], -1) * v.reshape(v.shape[0], -1)).sum(1)


def _rsum(t: torch.Tensor) -> torch.Tensor:
    """Sum over all but the leading (row) dimension."""
    return t.reshape(t.shape[0], -1).sum(1)


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _ksize(kw: dict) -> int:
    kh, kww = _pair(kw["kernel_size"])
    return kh * kww


def _pool_geometry(kw: dict, in_hw, out_hw):
    """Kernel, stride, the padding (left, right, top, bottom; negative crops) that makes the
    pool's output windows exactly the unfolded windows, and the padded size."""
    (kh, kww), (sh, sw), (ph, pw) = _pair(kw["kernel_size"]), _pair(kw["stride"]), _pair(kw["padding"])
    hp, wp = (out_hw[0] - 1) * sh + kh, (out_hw[1] - 1) * sw + kww
    return (kh, kww), (sh, sw), (pw, wp - in_hw[1] - pw, ph, hp - in_hw[0] - ph), (hp, wp)


def _windows(t: torch.Tensor, kw: dict, out_shape) -> torch.Tensor:
    """Max-pool windows of ``t`` [N, C, H, W] as [N, C, K, Ho, Wo] (padding: −inf, as max_pool2d)."""
    k, st, pads, _ = _pool_geometry(kw, t.shape[-2:], out_shape[1:])
    u = F.unfold(F.pad(t, pads, value=float("-inf")), k, stride=st)
    return u.view(t.shape[0], t.shape[1], k[0] * k[1], *out_shape[1:])


def _clip(t: torch.Tensor, o, stride, padding, in_hw):
    """Coefficients ``t`` of an input rectangle whose top-left corner, in input coordinates, is
    output corner ``o`` × stride − padding; cut to the input's extent → ``(t, corner)``."""
    (sh, sw), (ph, pw) = _pair(stride), _pair(padding)
    y, x = o[0] * sh - ph, o[1] * sw - pw
    ya, xa = max(0, -y), max(0, -x)
    yb, xb = min(t.shape[2], in_hw[0] - y), min(t.shape[3], in_hw[1] - x)
    return t[..., ya:yb, xa:xb], (y + ya, x + xa)


def _place(t: torch.Tensor, o, hw) -> torch.Tensor:
    """Rectangle ``t`` with top-left corner ``o`` as a zero-padded [..., H, W] tensor."""
    return F.pad(t, (o[1], hw[1] - o[1] - t.shape[-1], o[0], hw[0] - o[0] - t.shape[-2]))


def _unwindows(w: torch.Tensor, kw: dict, in_hw, o=(0, 0)):
    """Adjoint of :func:`_windows`: window coefficients [R, C, K, h, w] of the output rectangle
    at corner ``o`` summed onto their input positions (overlapping windows add up) →
    ``(t, corner)`` as :func:`_clip`."""
    R, C, K, ho, wo = w.shape
    (kh, kww), (sh, sw) = _pair(kw["kernel_size"]), _pair(kw["stride"])
    t = F.fold(w.reshape(R, C * K, ho * wo), ((ho - 1) * sh + kh, (wo - 1) * sw + kww), (kh, kww), stride=(sh, sw))
    return _clip(t, o, (sh, sw), kw["padding"], in_hw)

@dataclass
class _Node:
    name: str
    op: str  # input, affine, conv, linear, reshape, permute, relu, leaky, maxpool, concat
    inputs: list[int]
    shape: tuple[int, ...]  # per-sample shape
    p: dict = field(default_factory=dict)


@dataclass
class MarginBounds:
    """Margin bounds of a batch: ``m_lo``/``m_hi`` [N], the clean margin and prediction, and the
    fraction of pre-activation neurons left unstable (bounds straddling 0) per sample."""

    m_lo: torch.Tensor
    m_hi: torch.Tensor
    margin_clean: torch.Tensor
    pred_clean: torch.Tensor
    unstable_frac: torch.Tensor
    method: str


class Graph:
    """A traced network as a list of nodes in topological order (see :func:`trace`)."""

    def __init__(self, nodes: list[_Node], name: str, single_logit: bool):
        self.nodes = nodes
        self.name = name
        self.single_logit = single_logit
        self.preact = sorted({n.inputs[0] for n in nodes if n.op in ("relu", "leaky")})
        self.pool_in = sorted({n.inputs[0] for n in nodes if n.op == "maxpool"})
        # box: the node's reachable set is an axis-aligned box; exact: IBP gives every neuron's
        # true range (a box through affine maps, then elementwise monotone maps)
        box: list[bool] = []
        exact: list[bool] = []
        for n in nodes:
            ins = [box[i] for i in n.inputs]
            if n.op == "input":
                box.append(True)
                exact.append(True)
            elif n.op in ("affine", "reshape", "permute", "relu", "leaky", "concat"):
                box.append(all(ins))
                exact.append(all(exact[i] for i in n.inputs))
            else:  # conv, linear, maxpool
                box.append(False)
                exact.append(all(ins))
        self.ibp_exact = exact
        self.max_numel = max(math.prod(n.shape) for n in nodes)
        self.n_preact = sum(math.prod(nodes[j].shape) for j in self.preact)
        out = nodes[-1].shape
        k = math.prod(out)
        if k not in (1, 2):
            raise ValueError(f"{name}: network output has {k} values per sample; expected 1 (MesoNet's "
                             "sigmoid logit z, read as logits [z, 0]) or 2 logits (real, fake)")
        self.n_out = k

    # ------------------------------------------------------------------ point evaluation
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The network's output at a point (in the graph's arithmetic), [N, *out_shape]."""
        vals: list[torch.Tensor] = []
        for n in self.nodes:
            if n.op == "input":
                vals.append(x)
                continue
            a = vals[n.inputs[0]]
            if n.op == "concat":
                vals.append(torch.cat([vals[i] for i in n.inputs], dim=1))
            elif n.op == "affine":
                vals.append(a * n.p["s"] + n.p["t"])
            elif n.op == "conv":
                vals.append(F.conv2d(a, n.p["w"], n.p["b"], **n.p["kw"]))
            elif n.op == "linear":
                vals.append(F.linear(a, n.p["w"], n.p["b"]))
            elif n.op == "reshape":
                vals.append(a.reshape(len(a), *n.shape))
            elif n.op == "permute":
                vals.append(a.permute(*n.p["perm"]))
            elif n.op == "relu":
                vals.append(torch.relu(a))
            elif n.op == "leaky":
                vals.append(F.leaky_relu(a, n.p["slope"]))
            elif n.op == "maxpool":
                vals.append(F.max_pool2d(a, **n.p["kw"]))
        return vals[-1]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Two logits (real, fake) [N, 2], as :class:`dfrobust.models.Detector` returns them."""
        out = self.forward(x).reshape(len(x), -1)
        return torch.cat([out, torch.zeros_like(out)], 1) if self.n_out == 1 else out

    def to(self, device=None, dtype=None) -> "Graph":
        for n in self.nodes:
            for k, v in n.p.items():
                if torch.is_tensor(v) and v.is_floating_point():
                    n.p[k] = v.to(device=device, dtype=dtype)
        return self

    # ------------------------------------------------------------------ IBP
    def _ibp(self, n: _Node, B: dict) -> tuple[torch.Tensor, torch.Tensor]:
        if n.op == "concat":
            return (torch.cat([B[i][0] for i in n.inputs], 1), torch.cat([B[i][1] for i in n.inputs], 1))
        lo, hi = B[n.inputs[0]]
        if n.op == "affine":
            a, b = lo * n.p["s"] + n.p["t"], hi * n.p["s"] + n.p["t"]
            return torch.minimum(a, b), torch.maximum(a, b)
        if n.op in ("conv", "linear"):
            mid, rad = (hi + lo) / 2, (hi - lo) / 2
            if n.op == "conv":
                c = F.conv2d(mid, n.p["w"], n.p["b"], **n.p["kw"])
                r = F.conv2d(rad, n.p["w"].abs(), None, **n.p["kw"])
            else:
                c, r = F.linear(mid, n.p["w"], n.p["b"]), F.linear(rad, n.p["w"].abs())
            return c - r, c + r
        if n.op == "reshape":
            return lo.reshape(len(lo), *n.shape), hi.reshape(len(hi), *n.shape)
        if n.op == "permute":
            return lo.permute(*n.p["perm"]), hi.permute(*n.p["perm"])
        if n.op == "relu":
            return torch.relu(lo), torch.relu(hi)
        if n.op == "leaky":
            return F.leaky_relu(lo, n.p["slope"]), F.leaky_relu(hi, n.p["slope"])
        if n.op == "maxpool":
            return F.max_pool2d(lo, **n.p["kw"]), F.max_pool2d(hi, **n.p["kw"])
        raise AssertionError(n.op)

    # ------------------------------------------------------------------ relaxations
    def _relax(self, j: int, B: dict, cache: dict):
        """Per-sample linear relaxation of nonlinear node ``j`` from its input's bounds."""
        if j in cache:
            return cache[j]
        n = self.nodes[j]
        lo, hi = B[n.inputs[0]]
        if n.op in ("relu", "leaky"):
            a = 0.0 if n.op == "relu" else float(n.p["slope"])
            active, inactive = lo >= 0, hi <= 0
            unstable = ~(active | inactive)
            den = torch.where(unstable, hi - lo, torch.ones_like(hi))
            k_up = torch.where(unstable, (hi - a * lo) / den, torch.where(active, 1.0, a).to(lo.dtype))
            b_up = torch.where(unstable, lo * (a - k_up), torch.zeros_like(lo))
            k_lo = torch.where(active | (unstable & (hi > -lo)), 1.0, a).to(lo.dtype)
            cache[j] = (k_lo, k_up, b_up, k_up - k_lo, unstable)
        else:  # maxpool, window by window (windows may overlap)
            lw, hw = _windows(lo, n.p["kw"], n.shape), _windows(hi, n.p["kw"], n.shape)
            lmax, idx = lw.max(2, keepdim=True)
            umax = hw.max(2).values
            u_other = hw.scatter(2, idx, float("-inf")).max(2).values
            cache[j] = (idx, lmax.squeeze(2) >= u_other, umax)
        return cache[j]

    # ------------------------------------------------------------------ CROWN backward
    def _backward(self, k: int, A: torch.Tensor, sidx: torch.Tensor, B: dict, cache: dict,
                  x_lo: torch.Tensor, x_hi: torch.Tensor, alpha: dict | None = None) -> torch.Tensor:
        """Lower bound of ``sum(A * node_k)`` per row (row r belongs to sample ``sidx[r]``).

        ``alpha``: node → per-row lower-relaxation slopes of its unstable neurons (alpha-CROWN),
        clipped to [negative slope, 1]; the other neurons keep CROWN's adaptive choice.
        Spatial coefficients are kept on the rectangle that can be nonzero (``off``: its top-left
        corner): rows of nearby neurons only ever touch their receptive field.
        """
        R = A.shape[0]
        acc: dict[int, torch.Tensor] = {}
        off: dict[int, tuple[int, int] | None] = {}
        bias = torch.zeros(R, dtype=A.dtype, device=A.device)

        def add(i, t, o=None):
            if i not in acc:
                acc[i], off[i] = t, o
            elif off[i] == o and acc[i].shape == t.shape:
                acc[i] = acc[i] + t
            else:  # two rectangles: their bounding rectangle
                (y0, x0), (y1, x1) = off[i], o
                ya, xa = min(y0, y1), min(x0, x1)
                yb = max(y0 + acc[i].shape[2], y1 + t.shape[2])
                xb = max(x0 + acc[i].shape[3], x1 + t.shape[3])
                acc[i] = _place(acc[i], (y0 - ya, x0 - xa), (yb - ya, xb - xa))
                acc[i][..., y1 - ya:y1 - ya + t.shape[2], x1 - xa:x1 - xa + t.shape[3]] += t
                off[i] = (ya, xa)

        if len(self.nodes[k].shape) == 3:
            nz = A.ne(0).any(0).any(0)
            ys, xs = nz.any(1).nonzero().view(-1), nz.any(0).nonzero().view(-1)
            if len(ys):
                y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
                add(k, A[..., y0:y1, x0:x1], (y0, x0))
            else:
                add(k, A, (0, 0))
        else:
            add(k, A)

        def cut(v, o, a):  # the rectangle of per-sample tensor v that coefficient a covers
            return v if o is None else v[..., o[0]:o[0] + a.shape[-2], o[1]:o[1] + a.shape[-1]]

        for j in range(k, -1, -1):
            if j not in acc:
                continue
            a, o = acc.pop(j), off.pop(j)
            n = self.nodes[j]
            if o is not None and n.op in ("reshape", "permute", "linear"):
                a, o = _place(a, o, n.shape[1:]), None  # these act on the whole tensor
            if n.op == "input":
                xl, xh = cut(_take(x_lo, sidx), o, a), cut(_take(x_hi, sidx), o, a)
                bias = bias + _rsum(a.clamp(min=0) * xl + a.clamp(max=0) * xh)
                continue
            i = n.inputs[0]
            o_in = (0, 0) if len(self.nodes[i].shape) == 3 else None
            if n.op == "concat":
                start = 0
                for i2 in n.inputs:
                    c = self.nodes[i2].shape[0]
                    add(i2, a[:, start:start + c], o)
                    start += c
            elif n.op == "affine":
                bias = bias + _rdot(a, n.p["t"].expand(*a.shape[1:]).unsqueeze(0))
                add(i, a * n.p["s"], o)
            elif n.op == "conv":
                if n.p["b"] is not None:
                    bias = bias + (a.sum((2, 3)) * n.p["b"]).sum(1)
                kw = n.p["kw"]
                (sh, sw), (dh, dw), (kh, kww) = kw["stride"], kw["dilation"], n.p["w"].shape[2:]
                size = (R, self.nodes[i].shape[0], (a.shape[2] - 1) * sh + dh * (kh - 1) + 1,
                        (a.shape[3] - 1) * sw + dw * (kww - 1) + 1)
                # conv2d_input, not conv_transpose2d: ~5x faster in float64 on a CPU
                t = torch.nn.grad.conv2d_input(size, n.p["w"], a, stride=kw["stride"], dilation=kw["dilation"],
                                               groups=kw["groups"])
                add(i, *_clip(t, o, kw["stride"], kw["padding"], self.nodes[i].shape[1:]))
            elif n.op == "linear":
                if n.p["b"] is not None:
                    bias = bias + a @ n.p["b"]
                add(i, a @ n.p["w"], o_in)
            elif n.op == "reshape":
                add(i, a.reshape(R, *self.nodes[i].shape), o_in)
            elif n.op == "permute":
                add(i, a.permute(*n.p["inv"]), o_in)
            elif n.op in ("relu", "leaky"):
                k_lo, k_up, b_up, k_d, unst = self._relax(j, B, cache)
                neg = a.clamp(max=0)
                bias = bias + _rdot(neg, cut(_take(b_up, sidx), o, a))
                if alpha is not None and j in alpha:
                    al = cut(alpha[j], o, a)
                    # clipped value, identity gradient: clamp's gradient is 0 at the bounds, where
                    # CROWN's slopes (0 or 1) start
                    al = al + (al.clamp(float(n.p.get("slope", 0.0)), 1.0) - al).detach()
                    k_lo = torch.where(cut(_take(unst, sidx), o, a), al, cut(_take(k_lo, sidx), o, a))
                    add(i, a * k_lo + neg * (cut(_take(k_up, sidx), o, a) - k_lo), o)
                    continue
                # pos*k_lo + neg*k_up = a*k_lo + neg*(k_up - k_lo): fewer passes over the big rows
                out = a * cut(_take(k_lo, sidx), o, a)
                out.addcmul_(neg, cut(_take(k_d, sidx), o, a))
                add(i, out, o)
            elif n.op == "maxpool":
                # lower: the window's element with the largest lower bound; upper: that element when
                # its lower bound beats every other upper bound (exact), else the window's max upper
                idx, exact, umax = self._relax(j, B, cache)
                pos, neg = a.clamp(min=0), a.clamp(max=0)
                ex = cut(_take(exact, sidx), o, a)
                bias = bias + _rsum(torch.where(ex, 0.0, neg * cut(_take(umax, sidx), o, a)))
                sel = pos + torch.where(ex, neg, 0.0)
                ix = cut(_take(idx, sidx), o, a)
                ix = ix.expand(R, *ix.shape[1:])
                win = torch.zeros(*ix.shape[:2], _ksize(n.p["kw"]), *ix.shape[3:], dtype=a.dtype, device=a.device)
                add(i, *_unwindows(win.scatter(2, ix, sel.unsqueeze(2)), n.p["kw"], self.nodes[i].shape[1:], o))
            else:
                raise AssertionError(n.op)
        return bias

    def _rows_per_chunk(self, max_bytes: int, elem: int) -> int:
        return max(1, int(max_bytes // (6 * self.max_numel * elem)))

    def _crown(self, k: int, A: torch.Tensor, sidx: torch.Tensor, B, cache, x_lo, x_hi, max_bytes,
               per_sample: bool = True):
        """(lower, upper) of ``sum(A * node_k)`` per row, in chunks.

        ``per_sample``: chunks hold rows of one sample, so relaxations broadcast instead of being
        gathered (copied) per row; rows must be sorted by sample. ``bench/bench_certify.py``
        measures both on the same rows.
        """
        step = max(1, self._rows_per_chunk(max_bytes, A.element_size()) // 2)
        lo, hi = [], []
        if len(A) == 0:
            return A.new_zeros(0), A.new_zeros(0)
        if per_sample:
            bounds_ = torch.searchsorted(sidx, torch.arange(int(sidx.max()) + 2, device=sidx.device)).tolist()
            spans = [(s0, min(s0 + step, e), si) for si, (b0, e) in enumerate(zip(bounds_[:-1], bounds_[1:]))
                     for s0 in range(b0, e, step)]
        else:
            spans = [(s0, min(s0 + step, len(A)), None) for s0 in range(0, len(A), step)]
        for s0, s1, si in spans:
            a = A[s0:s1]
            rows = si if si is not None else torch.cat([sidx[s0:s1], sidx[s0:s1]])
            both = self._backward(k, torch.cat([a, -a]), rows, B, cache, x_lo, x_hi)
            lo.append(both[:len(a)])
            hi.append(-both[len(a):])
        return torch.cat(lo), torch.cat(hi)

    def _wanted(self, j: int, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Neurons of node ``j`` whose tighter bounds can tighten a relaxation above it, and a
        score ranking them for a budget: unstable pre-activations (relaxation area −l·u), and
        the members of inexact max-pool windows that can still be the maximum (width)."""
        want = torch.zeros_like(lo, dtype=torch.bool)
        score = torch.zeros_like(lo)
        if j in self.preact:
            unst = (lo < 0) & (hi > 0)
            want |= unst
            score = torch.where(unst, -lo * hi, score)
        for n in self.nodes:
            if n.op == "maxpool" and n.inputs[0] == j:
                lw, hw = _windows(lo, n.p["kw"], n.shape), _windows(hi, n.p["kw"], n.shape)
                lmax, idx = lw.max(2, keepdim=True)
                u_other = hw.scatter(2, idx, float("-inf")).max(2, keepdim=True).values
                cand = (hw >= lmax) & (lmax < u_other)  # inexact window, member can be the max
                hit = _place(*_unwindows(cand.to(lo.dtype), n.p["kw"], lo.shape[2:]), lo.shape[2:]) > 0
                want |= hit
                score = torch.where(hit, torch.maximum(score, hi - lo), score)
        return want, score

    def bounds(self, x_lo: torch.Tensor, x_hi: torch.Tensor, method: str = "crown",
               spec: torch.Tensor | None = None, max_bytes: int = 256 * 2**20,
               crown_budget: int | None = None, alpha_steps: int = ALPHA_STEPS, alpha_lr: float = ALPHA_LR):
        """Bounds of every node (``B``) and of ``sum(spec * output)`` per sample.

        ``spec`` [N, *out_shape] (default: the output itself when it is one value).
        ``crown_budget``: refine at most this many neurons per layer and sample by CROWN
        (ranked by :meth:`_wanted`; the rest keep IBP, still sound); None refines all.
        ``alpha-crown``: CROWN's intermediate bounds, then the lower-relaxation slopes of the
        unstable ReLUs in the bound of the spec optimised per sample and direction by
        ``alpha_steps`` Adam steps (learning rate ``alpha_lr``), keeping the best bound seen —
        never looser than CROWN, which is its starting point.
        Returns ``(lo [N], hi [N], B, unstable_frac [N])``.
        """
        if method not in METHODS:
            raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
        N = x_lo.shape[0]
        B: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        cache: dict = {}
        n_unstable = torch.zeros(N, dtype=torch.long, device=x_lo.device)
        targets = set(self.preact) | set(self.pool_in)
        for j, n in enumerate(self.nodes):
            if n.op == "input":
                B[j] = (x_lo, x_hi)
                continue
            lo, hi = self._ibp(n, B)
            if method != "ibp" and j in targets and not self.ibp_exact[j]:
                want, score = self._wanted(j, lo, hi)
                if crown_budget is not None and int(want.flatten(1).sum(1).max()) > crown_budget:
                    score = torch.where(want, score, float("-inf")).flatten(1)
                    val, top = score.topk(min(int(crown_budget), score.shape[1]), dim=1)
                    keep = torch.zeros_like(want.flatten(1))
                    keep.scatter_(1, top, val > float("-inf"))
                    want = keep.view_as(want)
                if want.any():
                    s_i, pos = want.flatten(1).nonzero(as_tuple=True)
                    if len(n.shape) == 3:  # rows of one sample by tiles: a chunk's rows are neighbours
                        hw = n.shape[1] * n.shape[2]
                        y, x = (pos % hw) // n.shape[2], pos % n.shape[2]
                        tile = (y // _TILE) * n.shape[2] + x // _TILE
                        order = torch.argsort((s_i * hw + tile) * lo[0].numel() + pos)
                        s_i, pos = s_i[order], pos[order]
                    A = torch.zeros(len(s_i), lo[0].numel(), dtype=lo.dtype, device=lo.device)
                    A[torch.arange(len(s_i), device=lo.device), pos] = 1.0
                    c_lo, c_hi = self._crown(j, A.view(len(s_i), *n.shape), s_i, B, cache,
                                             x_lo, x_hi, max_bytes)
                    lo, hi = lo.flatten(1).clone(), hi.flatten(1).clone()
                    lo[s_i, pos] = torch.maximum(lo[s_i, pos], c_lo)
                    hi[s_i, pos] = torch.minimum(hi[s_i, pos], c_hi)
                    lo, hi = lo.view(N, *n.shape), hi.view(N, *n.shape)
            if j in self.preact:
                n_unstable += ((lo < 0) & (hi > 0)).flatten(1).sum(1)
            B[j] = (lo, hi)
        last = len(self.nodes) - 1
        lo, hi = B[last]
        if spec is None:
            spec = torch.ones_like(lo)
        spec = spec.to(lo.dtype).reshape(lo.shape)
        # IBP of the linear spec
        sp, sn = spec.clamp(min=0), spec.clamp(max=0)
        m_lo = _rsum(sp * lo + sn * hi)
        m_hi = _rsum(sp * hi + sn * lo)
        if method != "ibp":  # CROWN: fixed slope choices; alpha-CROWN: optimised from the best of them
            steps = alpha_steps if method == "alpha-crown" else 0
            c_lo, c_hi = self._alpha_crown(last, spec, B, cache, x_lo, x_hi, max_bytes, steps, alpha_lr)
            m_lo, m_hi = torch.maximum(m_lo, c_lo), torch.minimum(m_hi, c_hi)
        frac = n_unstable.to(lo.dtype) / max(1, self.n_preact)
        return m_lo, m_hi, B, frac

    def _alpha_crown(self, k, spec, B, cache, x_lo, x_hi, max_bytes, steps, lr):
        """(lower, upper) of ``sum(spec * node_k)`` per sample over ReLU lower slopes: per row, the
        best of three fixed choices for every unstable neuron (CROWN's adaptive one, the negative
        slope, the chord's slope), then ``steps`` Adam steps from it (0: the fixed choices only);
        samples in chunks, each sample's two directions its own rows and slopes."""
        N = spec.shape[0]
        relus = [j for j, n in enumerate(self.nodes[:k + 1]) if n.op in ("relu", "leaky")]
        step = max(1, self._rows_per_chunk(max_bytes, spec.element_size()) // 8)
        lo, hi = [], []
        for s0 in range(0, N, step):
            s1 = min(N, s0 + step)
            sidx = torch.arange(s0, s1, device=spec.device).repeat(2)
            A = torch.cat([spec[s0:s1], -spec[s0:s1]])
            used = [j for j in relus if bool(self._relax(j, B, cache)[4][s0:s1].any())]
            best, alpha = None, {}
            for pick in (lambda r, a: r[0], lambda r, a: torch.full_like(r[0], a), lambda r, a: r[1]):
                cand = {j: pick(self._relax(j, B, cache), float(self.nodes[j].p.get("slope", 0.0)))[sidx]
                        for j in used}
                val = self._backward(k, A, sidx, B, cache, x_lo, x_hi, cand)
                if best is None:
                    best, alpha = val, cand
                    continue
                better = val > best
                best = torch.maximum(best, val)
                for j in used:
                    alpha[j] = torch.where(better.view(-1, *[1] * (cand[j].dim() - 1)), cand[j], alpha[j])
            if steps and used:
                alpha = {j: v.clone().requires_grad_(True) for j, v in alpha.items()}
                opt = torch.optim.Adam(alpha.values(), lr=lr)
                for t in range(steps):
                    opt.zero_grad()
                    with torch.enable_grad():
                        (-self._backward(k, A, sidx, B, cache, x_lo, x_hi, alpha).sum()).backward()
                    opt.step()
                    with torch.no_grad():
                        for j, a in alpha.items():
                            a.clamp_(float(self.nodes[j].p.get("slope", 0.0)), 1.0)
                        best = torch.maximum(best, self._backward(k, A, sidx, B, cache, x_lo, x_hi, alpha))
            lo.append(best[:s1 - s0])
            hi.append(-best[s1 - s0:])
        return torch.cat(lo), torch.cat(hi)


# ---------------------------------------------------------------------------- tracing

def _target_name(fn) -> str:
    return getattr(fn, "__name__", str(fn))


def trace(model: nn.Module, input_shape: Sequence[int] | None = None, *,
          dtype: torch.dtype = torch.float64, differentiable: bool = False,
          bn_stats: dict | None = None) -> Graph:
    """Trace ``model`` into a :class:`Graph` of supported operations (eval-mode semantics).

    ``model``: a :class:`dfrobust.models.Detector` (its normalisation is prepended and its
    wrapped ``net`` traced) or any module built from the supported layers whose output is one
    value (read as logits [z, 0]) or two logits per sample. ``input_shape``: (C, H, W); a
    Detector's default is (3, input_size, input_size).
    ``differentiable``: the graph's weights stay attached to the model's parameters (no copy, no
    ``detach``; batch-norm folded from its running statistics), so bounds computed on it carry
    gradients to the parameters — certified (IBP) training; the model's train/eval modes are kept.
    ``bn_stats``: batch-norm module → (mean, var) used instead of its running statistics (training:
    the clean batch's statistics, as the clean forward pass in training mode uses them).
    """
    from ..models import Detector

    name = getattr(model, "name", type(model).__name__)
    pre: list[_Node] = []
    net = model
    if isinstance(model, Detector):
        net = model.net
        if input_shape is None:
            input_shape = (3, model.input_size, model.input_size)
        if model._normalise:
            pre.append(("affine", (1.0 / model.std).view(3, 1, 1), (-model.mean / model.std).view(3, 1, 1)))
    if input_shape is None:
        raise ValueError(f"{name}: input_shape=None; expected (C, H, W) for a module that is not a Detector")
    input_shape = tuple(int(s) for s in input_shape)
    modes = {m: m.training for m in net.modules()}
    if not differentiable:  # eval semantics, and shape propagation must not touch the caller's BN stats
        net = copy.deepcopy(net)

    def par(t: torch.Tensor) -> torch.Tensor:
        return t if differentiable else t.detach()

    try:
        gm = fx.symbolic_trace(net)
    except Exception as exc:  # noqa: BLE001 - any tracing failure means unsupported control flow
        raise ValueError(f"{name}: cannot be traced by torch.fx ({type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}); expected a network of {_SUPPORTED}") from None
    gm.eval()  # also the model's own modules when differentiable (shared): restored below
    try:
        p0 = next(gm.parameters())
        pdev, pdt = p0.device, p0.dtype
    except StopIteration:
        pdev, pdt = torch.device("cpu"), torch.float32
    try:
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.zeros(2, *input_shape, device=pdev, dtype=pdt))
    finally:
        if differentiable:
            for m, mode in modes.items():
                m.training = mode
    mods = dict(gm.named_modules())

    nodes: list[_Node] = [_Node("input", "input", [], input_shape)]
    for op, s, t in pre:
        nodes.append(_Node("normalise", "affine", [0], input_shape, {"s": s, "t": t}))
    ids: dict[str, int] = {}

    def shape_of(nd) -> tuple[int, ...]:
        return tuple(nd.meta["tensor_meta"].shape)[1:]

    def bad(nd, what):
        raise ValueError(f"{name}: unsupported operation {what} at {nd.name!r}; certify supports {_SUPPORTED}")

    def leaky_slope(nd, slope) -> float:
        # the ReLU-style relaxations need a convex, monotone map: slope > 1 is concave, < 0 not monotone
        if not 0.0 <= float(slope) <= 1.0:
            raise ValueError(f"{name}: LeakyReLU(negative_slope={slope!r}) at {nd.name!r}; "
                             "certify supports negative slopes in [0, 1]")
        return float(slope)

    for nd in gm.graph.nodes:
        if nd.op == "placeholder":
            ids[nd.name] = len(nodes) - 1
            continue
        if nd.op == "output":
            ids["__out__"] = ids[nd.args[0].name]
            continue
        tensor_args = [a for a in nd.args if isinstance(a, fx.Node)]
        shp = shape_of(nd)
        if nd.op == "call_module":
            m = mods[nd.target]
            src = ids[tensor_args[0].name]
            if isinstance(m, (nn.Dropout, nn.Identity)):
                ids[nd.name] = src
                continue
            if isinstance(m, nn.Conv2d):
                if m.padding_mode != "zeros" or isinstance(m.padding, str):
                    bad(nd, f"Conv2d(padding={m.padding!r}, padding_mode={m.padding_mode!r})")
                kw = dict(stride=m.stride, padding=m.padding, dilation=m.dilation, groups=m.groups)
                node = _Node(nd.name, "conv", [src], shp, {"w": par(m.weight), "kw": kw,
                             "b": None if m.bias is None else par(m.bias)})
            elif isinstance(m, nn.BatchNorm2d):
                if m.running_mean is None:
                    bad(nd, "BatchNorm2d without running statistics")
                mean, var = (m.running_mean.detach(), m.running_var.detach()) if m not in (bn_stats or {}) \
                    else bn_stats[m]
                var, mean = var.double(), mean.double()
                w = par(m.weight).double() if m.affine else torch.ones_like(var)
                b = par(m.bias).double() if m.affine else torch.zeros_like(mean)
                s = w / torch.sqrt(var + m.eps)
                t = b - mean * s
                node = _Node(nd.name, "affine", [src], shp, {"s": s.view(-1, 1, 1), "t": t.view(-1, 1, 1)})
            elif isinstance(m, nn.Linear):
                node = _Node(nd.name, "linear", [src], shp, {"w": par(m.weight),
                             "b": None if m.bias is None else par(m.bias)})
            elif isinstance(m, nn.ReLU):
                node = _Node(nd.name, "relu", [src], shp)
            elif isinstance(m, nn.LeakyReLU):
                node = _Node(nd.name, "leaky", [src], shp, {"slope": leaky_slope(nd, m.negative_slope)})
            elif isinstance(m, nn.MaxPool2d):
                if m.dilation not in (1, (1, 1)):
                    bad(nd, "MaxPool2d with dilation")
                kw = dict(kernel_size=m.kernel_size, stride=m.stride, padding=m.padding, ceil_mode=m.ceil_mode)
                node = _Node(nd.name, "maxpool", [src], shp, {"kw": kw})
            elif isinstance(m, nn.Flatten):
                node = _Node(nd.name, "reshape", [src], shp)
            else:
                bad(nd, type(m).__name__)
        elif nd.op == "call_function":
            fname = _target_name(nd.target)
            if nd.target in (torch.cat, torch.concat):
                parts = nd.args[0]
                dim = nd.kwargs.get("dim", nd.args[1] if len(nd.args) > 1 else 0)
                if dim not in (1, -3) or len(shp) != 3:
                    bad(nd, f"torch.cat(dim={dim})")
                node = _Node(nd.name, "concat", [ids[p.name] for p in parts], shp)
            elif nd.target in (torch.relu, F.relu):
                node = _Node(nd.name, "relu", [ids[tensor_args[0].name]], shp)
            elif nd.target is F.leaky_relu:
                slope = nd.kwargs.get("negative_slope", nd.args[1] if len(nd.args) > 1 else 0.01)
                node = _Node(nd.name, "leaky", [ids[tensor_args[0].name]], shp, {"slope": leaky_slope(nd, slope)})
            elif nd.target is torch.flatten:
                node = _Node(nd.name, "reshape", [ids[tensor_args[0].name]], shp)
            elif nd.target is operator.getitem:
                bad(nd, "indexing")
            else:
                bad(nd, fname)
        elif nd.op == "call_method":
            src = ids[tensor_args[0].name]
            if nd.target in _RESHAPE_METHODS:
                node = _Node(nd.name, "reshape", [src], shp)
            elif nd.target == "permute":
                perm = nd.args[1:] if not isinstance(nd.args[1], (tuple, list)) else tuple(nd.args[1])
                perm = tuple(int(p) % (len(shp) + 1) for p in perm)
                if perm[0] != 0:
                    bad(nd, f"permute{perm} moving the batch dimension")
                inv = tuple(sorted(range(len(perm)), key=lambda q: perm[q]))
                node = _Node(nd.name, "permute", [src], shp, {"perm": perm, "inv": inv})
            else:
                bad(nd, f".{nd.target}()")
        else:
            bad(nd, nd.op)
        nodes.append(node)
        ids[nd.name] = len(nodes) - 1
    out = ids["__out__"]
    if out != len(nodes) - 1:
        raise ValueError(f"{name}: the output is not the last traced operation; expected a feed-forward network")
    single = bool(getattr(model, "single_logit", False))
    return Graph(nodes, name, single).to(dtype=dtype)


# ---------------------------------------------------------------------------- margin

def _margin_spec(graph: Graph, pred: torch.Tensor) -> torch.Tensor:
    """Rows c with ``m = sum(c * output)``: z_ŷ − z_other on the logits (real, fake)."""
    N = len(pred)
    if graph.n_out == 1:  # logits [z, 0]: m = z if ŷ = real (0) else −z
        spec = torch.where(pred == 0, 1.0, -1.0).to(torch.float64)
        return spec.view(N, *([1] * len(graph.nodes[-1].shape))).expand(N, *graph.nodes[-1].shape)
    spec = torch.zeros(N, 2, dtype=torch.float64, device=pred.device)
    spec[torch.arange(N), pred] = 1.0
    spec[torch.arange(N), 1 - pred] = -1.0
    return spec.view(N, *graph.nodes[-1].shape)


def margin_bounds(model: nn.Module | Graph, x: torch.Tensor, eps: float, *, method: str = "crown",
                  pred: torch.Tensor | None = None, input_shape=None, dtype: torch.dtype = torch.float64,
                  max_bytes: int = 256 * 2**20, crown_budget: int | None = None) -> MarginBounds:
    """Bounds ``[m_lo, m_hi]`` of the margin ``z_ŷ − z_other`` over ``[x − eps, x + eps] ∩ [0, 1]``.

    ``x`` [N, C, H, W] in [0, 1]. ``pred``: the clean prediction ŷ (0 real, 1 fake) per sample;
    default: the graph's own (ŷ = fake when z_fake >= z_real, as ``p_fake >= 0.5``).
    """
    if method not in METHODS:
        raise ValueError(f"method={method!r}: expected one of {', '.join(METHODS)}")
    eps = check_eps(eps)
    if not torch.is_tensor(x) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x: expected a float tensor [N, C, H, W] in [0, 1], got {getattr(x, 'shape', type(x).__name__)}")
    graph = model if isinstance(model, Graph) else trace(model, input_shape or tuple(x.shape[1:]), dtype=dtype)
    if tuple(x.shape[1:]) != graph.nodes[0].shape:
        raise ValueError(f"x: per-sample shape {tuple(x.shape[1:])}; expected {graph.nodes[0].shape} "
                         f"(the shape {graph.name} was traced at)")
    dev = x.device
    graph.to(device=dev)
    x = x.to(dtype)
    if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
        raise ValueError(f"x range [{float(x.min()):.4g}, {float(x.max()):.4g}]: expected values in [0, 1]")
    with torch.no_grad():
        logits = graph.logits(x)
        if pred is None:
            pred = (logits[:, 1] >= logits[:, 0]).long()
        pred = torch.as_tensor(pred, device=dev).long().view(-1)
        if len(pred) != len(x):
            raise ValueError(f"pred: {len(pred)} predictions for {len(x)} samples; expected one per sample")
        m_clean = (logits[torch.arange(len(x)), pred] - logits[torch.arange(len(x)), 1 - pred])
        if eps == 0:
            z = torch.zeros(len(x), dtype=x.dtype, device=dev)
            return MarginBounds(m_clean.clone(), m_clean.clone(), m_clean, pred, z, method)
        x_lo, x_hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        spec = _margin_spec(graph, pred).to(device=dev, dtype=x.dtype)
        m_lo, m_hi, _, frac = graph.bounds(x_lo, x_hi, method, spec, max_bytes=max_bytes,
                                           crown_budget=crown_budget)
    return MarginBounds(m_lo, m_hi, m_clean, pred, frac, method)


__all__ = ["METHODS", "Graph", "MarginBounds", "trace", "margin_bounds"]
