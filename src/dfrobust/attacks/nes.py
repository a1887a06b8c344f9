"""Masked black-box NES attack (Ilyas et al., 2018) restricted to image segments, as a torchattacks.Attack.

torchattacks has no score-based black-box attack with a spatial mask, so the loop is written here on
top of its ``Attack`` base class (device handling, eval mode, ``__call__``).  Each step:

1. for every still-running sample, ``n_pairs`` antithetic Gaussian directions ``u`` (zero outside
   the mask) give the samples ``x ± σu``. **The samples live in the unclipped space**: the
   estimate below uses ``u`` itself, so every pair is exactly symmetric about ``x``, also at
   pixels saturated at 0 or 1; **only the query** sent to the model is clipped to [0, 1]
   (the detector accepts nothing else). All queries of the step, across samples — the current
   ``x`` and the ``2 * n_pairs`` clipped samples each —, are built as one batch and evaluated under
   ``torch.inference_mode`` in chunks of ``batch_size`` (default:
   ``dfrobust.core.device.auto_batch_size``) — only the scores are used;
2. **per-sample early stop**: a sample whose current ``x`` is already classified as another class
   than its label has flipped: it stops, keeps ``x`` and leaves the query batch of later steps
   (``early_stop=False`` keeps attacking it and returns the image and counts of its first flip: the
   same per-sample results, the reference the early stop is tested against);
3. the NES estimate ``g = Σ (L(x+σu) − L(x−σu)) u / (2σ n)`` of the log-odds of the label,
   ``L = z_label − max_other z`` (from the logits: the same number as from the probabilities, but
   without float32 saturation when p(label) ≈ 1), gives a signed step ``x ← x − α sign(g)`` on the
   mask only, then ``x`` is projected onto the L∞ ε-ball around the original and onto [0, 1].

**One noise stream per sample** (seeded from ``seed`` and the sample's index): a sample's directions
do not depend on which other samples are still in the batch, so a pair's result is the same alone,
in any batch, with or without the early stop.

**Queries to flip** (``last_queries``), counted as a sequential attacker would: each step costs
``1 + 2 n_pairs`` queries (its centre and the antithetic samples); the flip is seen at a centre
query, so a sample that flips before update step ``t`` (``last_steps == t``) took ``t (1 + 2 n_pairs) + 1``
queries. A sample that never flips is **censored at the budget** ``steps (1 + 2 n_pairs) + 1`` (the
final check included; ``last_success`` False, ``last_censored`` True).

Label convention (:mod:`dfrobust.attacks`): the label passed is the label to move away from
(the clean prediction).  Defaults are **our choice** (the paper's
exact values are not public): σ = 0.001, 40 antithetic pairs, 50 iterations, α = 1/255, ε = 16/255.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchattacks.attack import Attack

from ..core.device import auto_batch_size


@dataclass
class NESResult:
    adv: torch.Tensor          # [N, 3, H, W]
    queries: np.ndarray        # [N] int
    success: np.ndarray        # [N] bool: predicted class != label at the end
    steps: np.ndarray          # [N] int: NES update steps taken
    censored: np.ndarray       # [N] bool: no flip within the budget (queries == budget)
    budget: int                # queries of a censored sample: steps * (1 + 2 * n_pairs) + 1


def nes_budget(steps: int, n_pairs: int) -> int:
    """Queries of a censored sample: ``steps`` steps of ``1 + 2 n_pairs`` queries and the final check."""
    return int(steps) * (1 + 2 * int(n_pairs)) + 1


def _margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_label − max_{other} z (the label's log-odds against the strongest other class)."""
    own = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return own - other


class MaskedNES(Attack):
    """Untargeted score-based NES attack inside a mask; call ``atk(images, labels, mask)``.

    ``mask``: bool/float [N, H, W] or [N, 1|3, H, W] (nonzero = may change); ``None`` = whole image.
    After a call, ``last_queries`` (queries to flip, the budget when censored), ``last_success``,
    ``last_censored`` and ``last_steps`` hold per-sample numpy arrays; ``budget`` the censoring point.
    """

    def __init__(self, model, eps: float = 16 / 255, alpha: float = 1 / 255, steps: int = 50,
                 sigma: float = 0.001, n_pairs: int = 40, seed: int = 0, batch_size: int | None = None,
                 early_stop: bool = True):
        super().__init__("MaskedNES", model)
        for name, v in (("eps", eps), ("alpha", alpha), ("sigma", sigma)):
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and v > 0):
                raise ValueError(f"{name}={v!r}: expected a positive number")
        for name, v in (("steps", steps), ("n_pairs", n_pairs)):
            if isinstance(v, bool) or not (isinstance(v, (int, np.integer)) and v >= 1):
                raise ValueError(f"{name}={v!r}: expected a positive int")
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r}: expected a positive int or None")
        self.eps, self.alpha, self.steps = float(eps), float(alpha), int(steps)
        self.sigma, self.n_pairs, self.seed = float(sigma), int(n_pairs), int(seed)
        self.batch_size = None if batch_size is None else int(batch_size)
        self.early_stop = bool(early_stop)
        self.budget = nes_budget(self.steps, self.n_pairs)
        self.supported_mode = ["default"]
        self.last_queries = self.last_success = self.last_steps = self.last_censored = None
        self.n_model_calls = 0

    @torch.inference_mode()
    def _scores(self, x: torch.Tensor) -> torch.Tensor:
        """Logit scores, evaluated in chunks of ``batch_size`` (automatic when None)."""
        bs = self.batch_size or auto_batch_size(x.device, x.shape[-1])
        outs = []
        for i in range(0, len(x), bs):
            outs.append(self.get_logits(x[i:i + bs]).float())
            self.n_model_calls += 1
        return torch.cat(outs)

    @staticmethod
    def _mask(mask, images: torch.Tensor) -> torch.Tensor:
        n, c, h, w = images.shape
        if mask is None:
            return torch.ones_like(images)
        m = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        m = m.to(images.device).float()
        if m.ndim == 3:
            m = m[:, None]
        if m.ndim != 4 or m.shape[0] != n or tuple(m.shape[-2:]) != (h, w) or m.shape[1] not in (1, c):
            raise ValueError(f"mask shape {tuple(m.shape)}: expected [N, H, W] or [N, 1|{c}, H, W] with N, H, W = {n}, {h}, {w}")
        return (m > 0).float().expand(n, c, h, w).contiguous()

    @staticmethod
    def generators(seed: int, n: int, device) -> list[torch.Generator]:
        """One noise stream per sample (from ``seed`` and its index): its directions do not depend on
        the rest of the batch."""
        states = np.random.SeedSequence(int(seed)).generate_state(n, dtype=np.uint64)
        return [torch.Generator(device=device).manual_seed(int(s) & (2 ** 63 - 1)) for s in states]

    @staticmethod
    def antithetic(x: torch.Tensor, u: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The sample pair ``x ± σu`` in the unclipped space (``x`` [n, C, H, W], ``u`` [n, q, C, H, W])."""
        return x[:, None] + sigma * u, x[:, None] - sigma * u

    @staticmethod
    def estimate(l_plus: torch.Tensor, l_minus: torch.Tensor, u: torch.Tensor, sigma: float) -> torch.Tensor:
        """The antithetic NES gradient ``Σ_q (L⁺ − L⁻) u / (2σq)`` from the scores of the pairs."""
        q = u.shape[1]
        return ((l_plus - l_minus)[..., None, None, None] * u).sum(1) / (2 * sigma * q)

    def forward(self, images, labels, mask=None):
        # the loop runs in inference mode; the clone outside it is an ordinary tensor again
        # (an inference tensor could not enter a later autograd computation of the caller)
        return self._run(images, labels, mask).clone()

    @torch.inference_mode()
    def _run(self, images, labels, mask=None):
        images = images.clone().detach().to(self.device).float()
        if images.ndim != 4 or float(images.min()) < 0 or float(images.max()) > 1:
            raise ValueError(f"images {tuple(images.shape)}: expected [N, C, H, W] in [0, 1]")
        labels = torch.as_tensor(labels).to(self.device).long()
        if tuple(labels.shape) != (len(images),):
            raise ValueError(f"labels shape {tuple(labels.shape)}: expected ({len(images)},)")
        m = self._mask(mask, images)
        n, q, dev = len(images), self.n_pairs, images.device
        gens = self.generators(self.seed, n, dev)
        x = images.clone()
        active = torch.ones(n, dtype=torch.bool, device=dev)
        success = torch.zeros(n, dtype=torch.bool, device=dev)
        first = images.clone()                       # the image at the first flip
        queries = torch.full((n,), self.budget, dtype=torch.long)
        steps = torch.full((n,), self.steps, dtype=torch.long)
        per_step = 1 + 2 * q
        for t in range(self.steps + 1):              # step `steps` is the final check only
            idx = torch.nonzero(active).flatten()
            if len(idx) == 0:
                break
            na = len(idx)
            xa, ma, x0, lab = x[idx], m[idx], images[idx], labels[idx]
            if t == self.steps:
                s = self._scores(xa)
            else:
                u = torch.stack([torch.randn((q, *images.shape[1:]), generator=gens[i], device=dev)
                                 for i in idx.tolist()]) * ma[:, None]
                plus, minus = self.antithetic(xa, u, self.sigma)     # unclipped samples
                query = torch.cat([xa, plus.flatten(0, 1), minus.flatten(0, 1)]).clamp_(0, 1)  # clip the query only
                s = self._scores(query)                                  # ONE batch for the whole step
            flipped = s[:na].argmax(1) != lab
            new_flip = flipped & ~success[idx]
            hit = idx[new_flip]
            success[hit] = True
            first[hit] = xa[new_flip]
            queries[hit.cpu()] = t * per_step + 1
            steps[hit.cpu()] = t
            if self.early_stop:
                active[idx[flipped]] = False
            if t == self.steps:
                break
            lab_q = lab.repeat_interleave(q)
            lp = _margin(s[na:na + na * q], lab_q).view(na, q)
            lm = _margin(s[na + na * q:], lab_q).view(na, q)
            g = self.estimate(lp, lm, u, self.sigma)
            new = xa - self.alpha * torch.sign(g) * ma
            new = torch.min(torch.max(new, x0 - self.eps), x0 + self.eps).clamp(0, 1)
            new = torch.where(ma > 0, new, x0)
            x[idx] = new if not self.early_stop else torch.where(flipped[:, None, None, None], xa, new)
        x = torch.where(success[:, None, None, None], first, x)
        self.last_success = success.cpu().numpy()
        self.last_censored = ~self.last_success
        self.last_queries = queries.numpy()
        self.last_steps = steps.numpy()
        return x.detach()


def nes_attack(model, images: torch.Tensor, labels, mask=None, **kw) -> NESResult:
    """Run :class:`MaskedNES` and return the adversarial images with per-sample queries/success/steps."""
    atk = MaskedNES(model, **kw)
    adv = atk(images, labels, mask)
    return NESResult(adv=adv, queries=atk.last_queries, success=atk.last_success, steps=atk.last_steps,
                     censored=atk.last_censored, budget=atk.budget)
