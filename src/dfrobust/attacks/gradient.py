"""The gradient attacks on the two-logit detector interface: one seeded PGD family (L∞ / L2) with
a choice of loss and an optional start, FGSM as its one-step case, and the shared-gradient FGSM sweep.

Built on torchattacks 3.5.1 (the maintained implementation): its ``Attack`` base class does the
device and model-mode handling, and with the cross-entropy loss and no start :class:`SeededPGD`
returns exactly what ``torchattacks.PGD`` / ``torchattacks.PGDL2`` / ``torchattacks.FGSM`` return
for the same random numbers (a test checks equality). The PGD loop itself is written here because
torchattacks has neither of the two things the study needs:

* **a start perturbation** (``forward(images, labels, start=δ₀)``): the progressive (video)
  driver hands frame t−1's δ to frame t (:mod:`.progressive`);
* **a choice of loss**: ``ce`` (cross-entropy, Madry et al.'s PGD), ``cw`` (the Carlini–Wagner
  margin :func:`cw_margin` inside L∞ PGD: "CW-L∞", so every budgeted attack shares the L∞ ball),
  and the two directions of the RR attack (:mod:`.rr`): ``down`` / ``up`` push the log-odds
  ``z_label − max_other z`` (monotone in P(label) for two logits, and free of float32 saturation
  when P ≈ 1) down or up, keeping the best iterate of the run.

Also here:

* **Seeded random starts.** torchattacks draws PGD's random start from torch's global RNG;
  :class:`SeededPGD` draws it inside ``torch.random.fork_rng`` seeded with ``seed`` and a
  per-attack call counter, so the same seed, batch size and device give the same adversarial
  images without touching the caller's RNG state.
* **Step size scales with ε.** torchattacks' default ``alpha=2/255`` is tuned for ε=8/255; for
  a sweep up to ε=0.2 the registry's default is Madry et al.'s ``alpha = 2.5 ε / steps``.

Label convention: the label passed IS the label to move away from (the study passes the clean
prediction ŷ; see :mod:`dfrobust.attacks`).

Budgets: L∞ attacks take the radius ``eps`` on images in [0, 1]; L2 attacks take an L2 radius,
and :func:`l2_radius` maps an L∞ ε to ``ε·sqrt(d)`` (d = C·H·W), the L2 ball whose root-mean-square
per-pixel change is ε. CW-L2 (unbudgeted, the minimal-perturbation analysis) lives in :mod:`.cw`.
"""

from __future__ import annotations

import math

import torch
import torchattacks
from torchattacks.attack import Attack

from ..core.params import check_eps

#: losses of the PGD family (the value each step ascends)
LOSSES = ("ce", "cw", "down", "up")


def l2_radius(eps: float, shape) -> float:
    """L2 radius matched to an L∞ ε for images of ``shape`` (C, H, W): ``ε·sqrt(C·H·W)``."""
    d = 1
    for s in tuple(shape)[-3:]:
        d *= int(s)
    return float(eps) * math.sqrt(d)


def cw_margin(logits: torch.Tensor, labels: torch.Tensor, *, kappa: float = 0.0,
              targeted: bool = False) -> torch.Tensor:
    """Carlini–Wagner margin ``f`` done right for any sign of the logits.

    untargeted: ``max(Z_y - max_{j≠y} Z_j, -κ)``; targeted: ``max(max_{j≠t} Z_j - Z_t, -κ)``.
    (torchattacks' ``CW.f`` masks by multiplication, so a negative logit reads 0: upstream issue #184.)
    """
    labels = labels.long().view(-1, 1)
    real = logits.gather(1, labels).squeeze(1)
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(1, labels, True)
    other = logits.masked_fill(mask, float("-inf")).amax(dim=1)
    if targeted:
        return torch.clamp(other - real, min=-kappa)
    return torch.clamp(real - other, min=-kappa)


def prob_of(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """P(label | logits) per row."""
    return torch.softmax(logits.float(), dim=1).gather(1, labels.long().view(-1, 1)).squeeze(1)


class SeededPGD(Attack):
    """PGD in the L∞ (``norm="linf"``) or L2 ball with a seeded random start, a loss from
    :data:`LOSSES` and an optional start: ``atk(images, labels, start=None)``.

    ``start`` (a δ like ``images``): the iteration starts at ``x + proj(start)`` instead of the
    random start (no random number is drawn, so each sample's path is its own). ``eps`` and
    ``alpha`` are floats or tensors [N] (one radius and step per sample: the bisection of
    :mod:`.radii`). ``keep_best``: return, per sample, the iterate with the largest
    ``|P(label|x+δ) − P(label|x)|`` seen (the RR objective) instead of the last one; that change
    is then in ``last_change``, P(label) at it in ``last_p``, the clean P(label|x) in ``last_p0``,
    and the clean margin ``z_label − max_other z`` and the smallest and largest margin over every
    iterate in ``last_margin0``, ``last_margin_min``, ``last_margin_max`` (what RR at another
    temperature needs: :mod:`dfrobust.metrics.calibration`); for the ``down`` and ``up`` losses
    ``last_extreme`` is the iterate of the smallest (down) or largest (up) margin, the clean image
    when none passed it: unlike the kept iterate it does not depend on a temperature.
    """

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True, seed=0, *,
                 norm: str = "linf", loss: str = "ce", kappa: float = 0.0, keep_best: bool = False):
        super().__init__("SeededPGD", model)
        if norm not in ("linf", "l2"):
            raise ValueError(f"norm={norm!r}: expected 'linf' or 'l2'")
        if loss not in LOSSES:
            raise ValueError(f"loss={loss!r}: expected one of {', '.join(LOSSES)}")
        self.eps, self.alpha, self.steps = _radius(eps), _radius(alpha), int(steps)
        self.random_start, self.seed = bool(random_start), int(seed)
        self.norm, self.loss, self.kappa, self.keep_best = norm, loss, float(kappa), bool(keep_best)
        self.eps_for_division = 1e-10
        self.supported_mode = ["default"]
        self._calls = 0
        self.last_change = self.last_p = self.last_p0 = None
        self.last_margin0 = self.last_margin_min = self.last_margin_max = self.last_extreme = None
        self.last_logits0 = None   # the clean logits (keep_best), for a caller that attacks the same images again

    # -- pieces ------------------------------------------------------------------------------
    def _objective(self, logits, labels):
        if self.loss == "ce":
            return torch.nn.functional.cross_entropy(logits, labels)      # torchattacks' mean CE
        margin = cw_margin(logits, labels, kappa=self.kappa if self.loss == "cw" else math.inf)
        return (margin if self.loss == "up" else -margin).sum()

    def _per_sample(self, v, images):
        """A radius or step as torchattacks uses it: a float, or a tensor [N, 1, 1, 1]."""
        return v.to(images.device, images.dtype).view(-1, 1, 1, 1) if torch.is_tensor(v) else v

    def _project(self, images, adv):
        delta = adv - images
        eps = self._per_sample(self.eps, images)
        if self.norm == "linf":
            delta = torch.clamp(delta, min=-eps, max=eps)
        else:
            norms = torch.norm(delta.view(len(delta), -1), p=2, dim=1)
            eps = eps.view(-1) if torch.is_tensor(eps) else eps
            factor = torch.min(eps / norms, torch.ones_like(norms))
            delta = delta * factor.view(-1, 1, 1, 1)
        return torch.clamp(images + delta, min=0, max=1).detach()

    def _random_start(self, images):
        eps = self._per_sample(self.eps, images)
        if self.norm == "linf" and torch.is_tensor(eps):
            adv = images + (torch.rand_like(images) * 2 - 1) * eps
        elif self.norm == "linf":   # torchattacks.PGD's draw
            adv = images + torch.empty_like(images).uniform_(-eps, eps)
        else:                     # torchattacks.PGDL2's draw
            delta = torch.empty_like(images).normal_()
            n = delta.view(len(images), -1).norm(p=2, dim=1).view(len(images), 1, 1, 1)
            r = torch.zeros_like(n).uniform_(0, 1)
            adv = images + delta * (r / n * eps)
        return torch.clamp(adv, min=0, max=1).detach()

    def _step(self, adv, grad):
        alpha = self._per_sample(self.alpha, adv)
        if self.norm == "linf":
            return adv.detach() + alpha * grad.sign()
        norms = torch.norm(grad.view(len(grad), -1), p=2, dim=1) + self.eps_for_division
        return adv.detach() + alpha * grad / norms.view(-1, 1, 1, 1)

    # -- the loop -----------------------------------------------------------------------------
    def forward(self, images, labels, start=None, clean_logits=None):  # noqa: D401 - torchattacks API
        """``clean_logits``: the model's logits on ``images`` when the caller has them (saves a forward)."""
        self._calls += 1
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device).long()
        devices = [images.device.index or 0] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed((self.seed * 1_000_003 + self._calls) % (2**63 - 1))
            if start is not None:
                adv = self._project(images, images + start.to(images.device, images.dtype))
            elif self.random_start:
                adv = self._random_start(images)
            else:
                adv = images.clone().detach()
        if self.keep_best:
            with torch.no_grad():
                logits0 = self.get_logits(images) if clean_logits is None else clean_logits.to(images.device)
                p0 = prob_of(logits0, labels)
                m0 = cw_margin(logits0, labels, kappa=math.inf)
            kept = dict(best=adv.clone(), change=torch.full_like(p0, -1.0), p=p0.clone(), lo=m0.clone(),
                        hi=m0.clone(), extreme=images.clone())
        for _ in range(self.steps):
            adv.requires_grad = True
            logits = self.get_logits(adv)
            if self.keep_best:
                self._keep(kept, adv.detach(), logits.detach(), labels, p0)
            grad = torch.autograd.grad(self._objective(logits, labels), adv,
                                       retain_graph=False, create_graph=False)[0]
            adv = self._project(images, self._step(adv, grad))
        if self.keep_best:
            with torch.no_grad():
                self._keep(kept, adv, self.get_logits(adv), labels, p0)
            self.last_change = kept["change"]          # |ΔP(label)| of the returned iterate, per sample
            self.last_p = kept["p"]                    # P(label | x+δ) of the returned iterate
            self.last_p0 = p0.detach()                 # P(label | x), the clean probability it is measured from
            self.last_margin0, self.last_margin_min, self.last_margin_max = m0, kept["lo"], kept["hi"]
            self.last_extreme, self.last_logits0 = kept["extreme"].detach(), logits0.detach()
            return kept["best"].detach()
        return adv

    def _keep(self, kept, adv, logits, labels, p0):
        p = prob_of(logits, labels)
        change = (p - p0).abs()
        better = change > kept["change"]
        kept["best"] = torch.where(better.view(-1, 1, 1, 1), adv, kept["best"])
        kept["change"], kept["p"] = torch.where(better, change, kept["change"]), torch.where(better, p, kept["p"])
        margin = cw_margin(logits, labels, kappa=math.inf)
        further = margin > kept["hi"] if self.loss == "up" else margin < kept["lo"]
        kept["extreme"] = torch.where(further.view(-1, 1, 1, 1), adv, kept["extreme"])
        kept["lo"], kept["hi"] = torch.minimum(kept["lo"], margin), torch.maximum(kept["hi"], margin)


def _radius(v):
    """A radius or step: a float, or a tensor [N] of one value per sample (kept as given)."""
    return v.detach().flatten() if torch.is_tensor(v) else float(v)


def fgsm(model, eps: float, seed: int = 0) -> SeededPGD:
    """FGSM as one PGD step of size ε without a random start (equal to ``torchattacks.FGSM``);
    with ``start`` it takes the gradient at ``x + start`` and projects back onto the ε-ball of ``x``."""
    return SeededPGD(model, eps=eps, alpha=eps, steps=1, random_start=False, seed=seed)


def fgsm_sweep(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
               eps_list) -> list[torch.Tensor]:
    """FGSM at every ε of ``eps_list`` from ONE gradient.

    FGSM's step ``sign(∇ₓ CE)`` does not depend on ε, so this returns exactly what
    ``torchattacks.FGSM(model, eps=e)(images, labels)`` returns for each ``e`` (same loss, same
    expression ``clamp(x + e·sign(g), 0, 1)``; a test checks equality) at the cost of one
    forward+backward instead of one per ε.
    """
    eps_list = [check_eps(e) for e in eps_list]
    atk = torchattacks.FGSM(model, eps=0.0)  # for torchattacks' model-mode handling and device
    given = model.training
    atk._change_model_mode(given)
    try:
        x = images.clone().detach().to(atk.device)
        y = labels.clone().detach().to(atk.device)
        x.requires_grad = True
        cost = torch.nn.CrossEntropyLoss()(atk.get_logits(x), y)
        grad = torch.autograd.grad(cost, x, retain_graph=False, create_graph=False)[0]
        return [torch.clamp(x + e * grad.sign(), min=0, max=1).detach() for e in eps_list]
    finally:
        atk._recover_model_mode(given)
