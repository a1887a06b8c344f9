"""Per-sample critical radii (issue #23.1): for each sample, the smallest L∞ (or L2, ``norm="l2"``)
radius at which the RR attack flipped ŷ (``r_flip_upper``) and, per bound b, the smallest at which it moved P(ŷ) by more
than b (``r_b_upper``). Each is an **upper bound** of the true critical radius: a perturbation of
that norm was found; a smaller one may exist that the attack missed (``inf``: none found up to
the largest radius of the grid).

**Norms.** ``norm="linf"`` (default) runs the RR attack in the L∞ ball (sign-gradient steps, the
sweep's ball); ``norm="l2"`` in the L2 ball, the ball the paper's RR (its Eq. 2) is defined on:
each step is the gradient divided by its L2 norm (step 2.5·r/steps), the iterate is projected onto
the L2 ball of radius r and clipped to [0, 1]. Warm starts, restarts and the bisection are the same
in both; a warm start is projected onto the new radius's ball of the same norm.

**Rows.** Every run of the RR attack (:class:`.rr.RRAttack`, both directions) is a *row*: a radius
per sample, P(ŷ|x+δ) of the iterate it kept and the smallest and largest two-logit margin
``z_ŷ − z_other`` over every iterate (:class:`Rows`). :func:`attack_rows` makes

* **grid rows**: every radius of the ε grid in increasing order, each run warm-started from the
  perturbation the previous radius kept (a progressive attack: the first radius starts at x);
* **bisection rows** (``n_bisect`` rounds): per sample the midpoint of its widest open bracket
  (over the criteria flip and every b > 0: the largest attacked radius that did not meet it and
  the smallest that did), warm-started from the perturbation found at the bracket's upper end,
  clipped to the new radius. The brackets start between grid radii, so a bisection row never
  lands below the grid radius under its criterion's first hit.

Every run starts from a given perturbation (no random draw), so a sample's rows do not depend on
the batch it is in; ``restarts`` adds runs from seeded uniform starts in the ball (those do).

**Readings, by construction.** :func:`radii_from_rows` takes the smallest radius of a row meeting
each criterion; :func:`grid_from_rows` gives, at each grid radius ε, the worst over the rows of
radius ≤ ε (the largest |ΔP(ŷ)|, a flip if any row flipped, the smallest and largest margin).
So on the grid ``RA(ε) = mean(ŷ = y ∧ r_flip_upper > ε)`` and ``RR(ε, b) = mean(r_b_upper > ε)``
hold exactly: both readings are of the same rows. A row flips when its smallest margin is below 0;
it meets b when ``|P(ŷ|x+δ) − P(ŷ|x)| > b + 1e-12`` (the slack of
:func:`dfrobust.metrics.robust_per_sample`).

Why written here: no maintained package bisects a probability-change objective. torchattacks'
FAB minimises the L∞ distance to the decision boundary (the flip only) and serves as a check of
``r_flip_upper`` (:func:`fab_flip_radius`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torchattacks

from ..core.params import check_eps
from .rr import RRAttack

#: a row meets bound b when |ΔP(ŷ)| > b + B_SLACK (as metrics.robust_per_sample reads b from a decimal grid)
B_SLACK = 1e-12
#: the norms a radius can be measured in (the RR attack's ball)
NORMS = ("linf", "l2")


def check_norm(norm) -> str:
    """``norm`` if it is one of :data:`NORMS`; else a one-line ValueError naming it."""
    if not isinstance(norm, str) or norm not in NORMS:
        raise ValueError(f"norm={norm!r}: expected 'linf' or 'l2'")
    return norm


def project(delta: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
    """``delta`` [N, ...] moved into the ball of per-sample radius ``r`` [N] of ``norm`` (L∞: clamped per
    pixel; L2: scaled down to norm r where it is longer)."""
    bound = r.to(delta).view(-1, *([1] * (delta.dim() - 1)))
    if norm == "linf":
        return delta.clamp(-bound, bound)
    n = delta.flatten(1).norm(dim=1).view_as(bound)
    return delta * torch.where(n > bound, bound / n.clamp_min(1e-30), torch.ones_like(n))


def random_start(shape, r: torch.Tensor, norm: str, generator: torch.Generator, dtype) -> torch.Tensor:
    """A seeded random start in the ball of per-sample radius ``r``: uniform in the L∞ cube, or a uniform
    direction at a uniform fraction of the radius in the L2 ball (torchattacks.PGDL2's draw)."""
    rr = r.to(dtype).view(-1, *([1] * (len(shape) - 1)))
    if norm == "linf":
        return (torch.rand(shape, generator=generator, dtype=dtype) * 2 - 1) * rr
    d = torch.randn(shape, generator=generator, dtype=dtype)
    n = d.flatten(1).norm(dim=1).view_as(rr).clamp_min(1e-30)
    u = torch.rand(rr.shape, generator=generator, dtype=dtype)
    return d / n * u * rr


@dataclass
class Rows:
    """The RR attack's runs on N samples: arrays [R, N] (``radius`` inf where a sample was not attacked
    in that row) and the clean ``p0`` = P(ŷ|x), ``m0`` = z_ŷ − z_other [N]."""

    radius: np.ndarray
    p: np.ndarray        # P(ŷ | x+δ) of the kept iterate
    m_min: np.ndarray    # smallest margin over the row's iterates (< 0: ŷ flipped)
    m_max: np.ndarray    # largest margin
    p0: np.ndarray
    m0: np.ndarray

    def hits(self, b_grid: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
        """Per row and sample: flipped [R, N]; |ΔP(ŷ)| > b [B, R, N]."""
        change = np.abs(self.p - self.p0)
        b = np.asarray(b_grid, float).reshape(-1, 1, 1)
        return self.m_min < 0, change[None] > b + B_SLACK

    @staticmethod
    def concat(parts: Sequence["Rows"]) -> "Rows":
        """Rows of consecutive batches joined along the samples (every batch has the same rows)."""
        return Rows(*(np.concatenate([getattr(p, k) for p in parts], axis=-1)
                      for k in ("radius", "p", "m_min", "m_max", "p0", "m0")))


def _bracket(radius: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per sample: the largest attacked radius below the first hit (0 if none), the first hit's radius
    (inf if none) and the row it came from."""
    at = np.where(hit, radius, np.inf)
    row = at.argmin(0)
    hi = at.min(0)
    lo = np.where(radius < hi, radius, 0.0).max(0)
    return lo, hi, row


def radii_from_rows(rows: Rows, b_grid: Sequence[float]) -> dict[str, np.ndarray]:
    """``r_flip_upper`` [N], ``r_b_upper`` [B, N] and the width of each one's last bracket
    (``*_bracket``: the largest attacked radius below it that did not meet the criterion is
    ``upper − bracket``)."""
    flip, meet = rows.hits(b_grid)
    lo, hi, _ = _bracket(rows.radius, flip)
    blo, bhi = zip(*[_bracket(rows.radius, m)[:2] for m in meet]) if len(meet) else ((), ())
    bhi = np.array(bhi).reshape(len(meet), -1)
    return {"r_flip_upper": hi, "r_flip_bracket": hi - lo,
            "r_b_upper": bhi, "r_b_bracket": bhi - np.array(blo).reshape(bhi.shape)}


def grid_from_rows(rows: Rows, eps_grid: Sequence[float]) -> dict[str, np.ndarray]:
    """At each grid radius ε [E, N]: P(ŷ) of the row of radius ≤ ε with the largest |ΔP(ŷ)| (the clean
    value when none), whether any such row flipped ŷ, and the smallest and largest margin over them."""
    eps = np.asarray(eps_grid, float).reshape(-1, 1, 1)
    within = rows.radius[None] <= eps                                        # [E, R, N]
    change = np.where(within, np.abs(rows.p - rows.p0)[None], -1.0)
    pick = change.argmax(1)
    any_row = within.any(1)
    p_adv = np.where(any_row, np.take_along_axis(np.broadcast_to(rows.p, within.shape), pick[:, None], 1)[:, 0],
                     rows.p0)
    m_min = np.where(within, rows.m_min[None], np.inf).min(1)
    m_max = np.where(within, rows.m_max[None], -np.inf).max(1)
    return {"p_adv": p_adv, "flipped": any_row & (m_min < 0),
            "margin_min": np.where(any_row, m_min, rows.m0), "margin_max": np.where(any_row, m_max, rows.m0)}


def _run(model, x, y, r: torch.Tensor, starts: tuple[torch.Tensor, torch.Tensor], *, steps: int, restarts: int,
         seed: int, temperatures, clean: torch.Tensor, norm: str = "linf") -> tuple[torch.Tensor, ...]:
    """One row on a batch: the RR attack at per-sample radius ``r`` from ``starts`` (down, up), plus
    ``restarts`` runs from seeded uniform starts. Per sample: P(ŷ) of the larger |ΔP(ŷ)|, the
    smallest and largest margin over all runs, and the down and up perturbations of the smallest
    and largest margin (the next warm starts: chosen by margin, so the same at every temperature)."""
    rr = r.to(x.device, x.dtype)

    def attack(k, down, up):
        atk = RRAttack(model, eps=rr, alpha=2.5 * rr / steps, steps=steps, random_start=False, seed=seed + k,
                       temperatures=temperatures, norm=norm)
        atk(x, y, start=down, start_up=up, clean_logits=clean)
        return atk

    atk = attack(0, *starts)
    change, p, lo, hi = atk.last_change, atk.last_p, atk.last_margin_min, atk.last_margin_max
    d_down, d_up = atk.last_down_adv - x, atk.last_up_adv - x
    for k in range(1, restarts + 1):
        g = torch.Generator().manual_seed(seed * 1_000_003 + k)
        noise = random_start(x.shape, rr.cpu(), norm, g, x.dtype).to(x.device)
        other = attack(k, noise, noise)
        better = other.last_change > change
        change, p = torch.where(better, other.last_change, change), torch.where(better, other.last_p, p)
        lower, higher = other.last_margin_min < lo, other.last_margin_max > hi
        d_down = torch.where(lower.view(-1, 1, 1, 1), other.last_down_adv - x, d_down)
        d_up = torch.where(higher.view(-1, 1, 1, 1), other.last_up_adv - x, d_up)
        lo, hi = torch.minimum(lo, other.last_margin_min), torch.maximum(hi, other.last_margin_max)
    return (d_down, d_up), p, lo, hi, atk.last_p0, atk.last_margin0, atk.down.last_logits0


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().double().cpu().numpy()


def _batch_rows(model, x, y, eps: list[float], b_pos: np.ndarray, *, steps, n_bisect, restarts, seed,
                temperatures, norm="linf") -> Rows:
    n = len(x)
    radius, p, m_min, m_max, deltas = [], [], [], [], []
    starts = (torch.zeros_like(x), torch.zeros_like(x))
    p0 = m0 = None
    clean = None                                                # the clean logits, from the first row on
    for j, e in enumerate(eps):                                 # grid rows, progressive
        r = torch.full((n,), e, dtype=x.dtype)
        starts, pj, lo, hi, p0t, m0t, clean = _run(model, x, y, r, starts, steps=steps, restarts=restarts,
                                            seed=seed + 7919 * j, temperatures=temperatures, clean=clean,
                                            norm=norm)
        p0, m0 = _np(p0t), _np(m0t)
        radius.append(np.full(n, e)), p.append(_np(pj)), m_min.append(_np(lo)), m_max.append(_np(hi))
        deltas.append(starts)
    for k in range(n_bisect):                                   # bisection rows
        rows = Rows(np.stack(radius), np.stack(p), np.stack(m_min), np.stack(m_max), p0, m0)
        flip, meet = rows.hits(b_pos)
        lo, hi, src = (np.stack(v) for v in zip(*[_bracket(rows.radius, h) for h in (flip, *meet)]))
        width = np.where(np.isfinite(hi) & (hi - lo > 1e-6 * hi), hi - lo, -1.0)
        cols = np.arange(n)
        crit = width.argmax(0)
        todo = np.flatnonzero(width[crit, cols] > 0)
        row = dict(radius=np.full(n, np.inf), p=p0.copy(), m_min=m0.copy(), m_max=m0.copy())
        new = (torch.zeros_like(x), torch.zeros_like(x))
        if len(todo):
            mid = ((lo[crit, cols] + hi[crit, cols]) / 2)[todo].astype(np.float32)
            r = torch.as_tensor(mid)
            idx = torch.as_tensor(todo).to(x.device)
            warm = tuple(project(torch.stack([deltas[src[crit[i], i]][d][i] for i in todo]), r, norm)
                         for d in (0, 1))
            found, pk, lo_m, hi_m, *_ = _run(model, x[idx], y[idx], r, warm, steps=steps, restarts=restarts,
                                               seed=seed + 104729 * (k + 1), temperatures=temperatures,
                                               clean=clean[idx], norm=norm)
            row["radius"][todo] = mid.astype(np.float64)
            row["p"][todo], row["m_min"][todo], row["m_max"][todo] = _np(pk), _np(lo_m), _np(hi_m)
            for d in (0, 1):
                new[d][idx] = found[d]
        radius.append(row["radius"]), p.append(row["p"]), m_min.append(row["m_min"]), m_max.append(row["m_max"])
        deltas.append(new)
    return Rows(np.stack(radius), np.stack(p), np.stack(m_min), np.stack(m_max), p0, m0)


def attack_rows(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, eps_grid: Sequence[float],
                b_grid: Sequence[float], *, steps: int = 1, n_bisect: int = 2, restarts: int = 0,
                temperatures: Sequence[float] | None = None, seed: int = 0, batch_size: int = 32,
                norm: str = "linf") -> Rows:
    """The RR attack's grid and bisection rows on ``images`` (the model's input size, [0, 1]) moving away
    from ``labels`` (the clean prediction ŷ). ``steps`` per run (step 2.5·r/steps), ``n_bisect`` rounds,
    ``restarts`` extra runs per row from random starts, ``temperatures`` as :class:`.rr.RRAttack`'s,
    ``norm`` the ball (``"linf"`` or ``"l2"``, radii in that norm).
    Cost: about ``(len(positive grid) + n_bisect) · (1 + restarts) · (steps + 1)`` gradient passes per
    image, up to twice that where the up run runs."""
    check_norm(norm)
    eps = sorted({check_eps(e) for e in eps_grid} - {0.0})
    if not eps:
        raise ValueError(f"eps_grid={list(eps_grid)!r}: expected at least one radius > 0")
    for what, v, lo in (("steps", steps, 1), ("n_bisect", n_bisect, 0), ("restarts", restarts, 0),
                        ("batch_size", batch_size, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{what}={v!r}: expected an integer >= {lo}")
    b_pos = np.asarray([b for b in b_grid if b > 0], float)
    device = next(iter(model.parameters()), torch.empty(0)).device
    parts = []
    for s in range(0, len(images), batch_size):
        x = images[s:s + batch_size].to(device)
        y = labels[s:s + batch_size].to(device).long()
        parts.append(_batch_rows(model, x, y, eps, b_pos, steps=int(steps), n_bisect=int(n_bisect),
                                 restarts=int(restarts), seed=int(seed), temperatures=temperatures, norm=norm))
    return Rows.concat(parts)


def fab_flip_radius(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *, steps: int = 20,
                    restarts: int = 1, max_radius: float = 1.0, seed: int = 0, norm: str = "linf") -> np.ndarray:
    """torchattacks' FAB (Croce & Hein 2020), L∞ or L2 (``norm``): per sample the norm of the smallest flip of
    ``labels`` it found (inf where it found none within ``max_radius``): an independent upper bound of r_flip.
    FAB seeds torch's global generator itself; it runs inside ``torch.random.fork_rng``."""
    check_norm(norm)
    atk = torchattacks.FAB(model, norm="Linf" if norm == "linf" else "L2", eps=float(max_radius), steps=int(steps),
                           n_restarts=int(restarts), n_classes=2, seed=int(seed))
    devices = [images.device.index or 0] if images.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        adv = atk(images, labels.long())
    with torch.no_grad():
        flipped = model(adv.to(images.device)).argmax(1).cpu() != labels.long().cpu()
    d = (adv.cpu() - images.cpu()).flatten(1).double()
    size = d.abs().amax(1) if norm == "linf" else d.norm(dim=1)
    return np.where(flipped.numpy(), size.numpy(), np.inf)
