"""Attacks: every perturbation search of the study behind one call convention.

``attacks`` owns the gradient attacks on the two-logit detector interface (:mod:`.gradient`:
the seeded PGD family — FGSM, PGD L∞/L2, CW-L∞ — through torchattacks' base class), the RR
attack (:mod:`.rr`), per-sample critical radii from its warm-started bisection (:mod:`.radii`),
CW-L2 with a per-sample stop and a binary search over c (:mod:`.cw`, the minimal-perturbation
analysis), the black-box masked NES attack (:mod:`.nes`) and the progressive (video) driver
(:mod:`.progressive`). Every attack is a torchattacks-style callable
``attack(images, labels) -> adversarial images`` built by :func:`make_attack` from a registry
line; it imports only torch, torchattacks, ``dfrobust.core`` and ``dfrobust.models``.

**Label convention.** The label passed to an attack IS the label to move away from: untargeted
attacks lower (``rr`` also raises) the score of that label. The study passes the *clean
prediction* ŷ (RR is defined on P(ŷ|x+δ); where ŷ = y this is also the attack RA needs), never
the true label y — :func:`dfrobust.experiments.records.attack_records` computes ŷ itself.

**Budgeted attacks** (the ε sweep, all in the L∞ ball unless ``norm="l2"``): ``fgsm``, ``pgd``,
``pgdl2`` (L2 radius), ``cwinf`` (CW margin inside L∞ PGD) and ``rr`` (the RR attack). Those
registered with ``start=True`` also take ``atk(images, labels, start=δ₀)`` (begin the search at
``x + δ₀``), which the progressive driver uses. ``cw`` is unbudgeted: the minimal-perturbation
analysis (:func:`dfrobust.experiments.records.minimal_records`), not part of the sweep.

Adding an attack: write a module with a ``torchattacks.Attack`` subclass (or any callable with
that signature) and register it with :func:`register` (name, norm of its budget, defaults,
builder); see ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.params import check_eps
from .cw import CW_DEFAULTS, FixedCW, SearchCW, build_cw, check_cw
from .gradient import LOSSES, SeededPGD, cw_margin, fgsm, fgsm_sweep, l2_radius, prob_of
from .nes import MaskedNES, NESResult, nes_attack
from .rr import RRAttack
from .training import adversarial_loss  # registers the "pgd" training objective of dfrobust.models.train


@dataclass(frozen=True)
class AttackSpec:
    """One registry line: how to build an attack and what its budget means."""

    name: str
    norm: str                      # "linf" or "l2": the norm its radius is measured in
    build: Callable[..., Any]      # build(model, *, eps, seed, **options) -> attack(images, labels)
    defaults: dict = field(default_factory=dict)
    budgeted: bool = True          # False: the result does not depend on ε (run once, compared per radius)
    check: Callable[[dict], None] | None = None  # extra option checks (one-line ValueError)
    start: bool = False            # True: attack(images, labels, start=δ₀) begins at x + δ₀


#: name -> spec, in registration order (the order of every table and figure)
REGISTRY: dict[str, AttackSpec] = {}
#: views of the registry kept for callers: names, norm per name, unbudgeted names, defaults per name
ATTACKS: list[str] = []
NORM: dict[str, str] = {}
UNBUDGETED: list[str] = []
DEFAULTS: dict[str, dict] = {}


def register(name: str, *, norm: str, build: Callable[..., Any], defaults: dict | None = None,
             budgeted: bool = True, check: Callable[[dict], None] | None = None,
             start: bool = False) -> AttackSpec:
    """Add an attack to the registry (one line per attack; see docs/ARCHITECTURE.md)."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm={norm!r}: expected 'linf' or 'l2'")
    spec = AttackSpec(name, norm, build, dict(defaults or {}), bool(budgeted), check, bool(start))
    REGISTRY[name] = spec
    if name not in ATTACKS:
        ATTACKS.append(name)
    NORM[name] = norm
    DEFAULTS[name] = spec.defaults
    if not budgeted and name not in UNBUDGETED:
        UNBUDGETED.append(name)
    return spec


def check_attack(name: str) -> str:
    """The canonical attack name, or a one-line ValueError."""
    key = str(name).strip().lower()
    if key not in REGISTRY:
        raise ValueError(f"attack={name!r}: unknown; expected one of {', '.join(ATTACKS)}")
    return key


def check_options(name: str, **kw) -> dict:
    """The attack's options (defaults updated by ``kw``), checked without building anything."""
    key = check_attack(name)
    spec = REGISTRY[key]
    opts = dict(spec.defaults)
    unknown = set(kw) - set(opts)
    if unknown:
        raise ValueError(f"attack={key!r}: unknown option(s) {', '.join(sorted(unknown))}; "
                         f"expected {', '.join(opts) or 'none'}")
    opts.update(kw)
    if "steps" in opts and (isinstance(opts["steps"], bool) or int(opts["steps"]) < 1):
        raise ValueError(f"{key} steps={opts['steps']!r}: expected an integer >= 1")
    if spec.check is not None:
        spec.check(opts)
    return opts


def make_attack(name: str, model: torch.nn.Module, *, eps: float, seed: int = 0, **kw):
    """An attack on ``model`` (two logits, inputs in [0, 1]): ``attack(images, labels) -> adv``.

    ``eps`` is the radius in the attack's norm (:data:`NORM`; use :func:`l2_radius` to match an
    L∞ ε with an L2 radius); unbudgeted attacks ignore it. Keyword arguments are the attack's
    options (:data:`DEFAULTS`); unknown ones are an error.
    """
    key = check_attack(name)
    opts = check_options(key, **kw)
    return REGISTRY[key].build(model, eps=check_eps(eps), seed=int(seed), **opts)


def budgeted_attacks(*, start: bool = False) -> list[str]:
    """Names of the budgeted attacks (the ε sweep); with ``start=True`` only those taking a start."""
    return [k for k, v in REGISTRY.items() if v.budgeted and (v.start or not start)]


# ----------------------------------------------------------------------------- the registry

def _pgd_builder(norm: str, loss: str):
    def build(model, *, eps, seed, steps, alpha, random_start, **extra):
        alpha = alpha if alpha is not None else 2.5 * eps / int(steps)  # Madry et al.'s step for the sweep
        return SeededPGD(model, eps=eps, alpha=float(alpha), steps=int(steps), random_start=bool(random_start),
                         seed=seed, norm=norm, loss=loss, **extra)
    return build


def _build_rr(model, *, eps, seed, steps, alpha, random_start):
    alpha = alpha if alpha is not None else 2.5 * eps / int(steps)
    return RRAttack(model, eps=eps, alpha=float(alpha), steps=int(steps), random_start=bool(random_start), seed=seed)


_PGD = {"steps": 10, "alpha": None, "random_start": True}
register("fgsm", norm="linf", build=lambda model, *, eps, seed: fgsm(model, eps, seed), start=True)
register("pgd", norm="linf", build=_pgd_builder("linf", "ce"), defaults=_PGD, start=True)
register("pgdl2", norm="l2", build=_pgd_builder("l2", "ce"), defaults=_PGD, start=True)
register("cwinf", norm="linf", build=_pgd_builder("linf", "cw"), defaults={**_PGD, "kappa": 0.0}, start=True)
register("rr", norm="linf", build=_build_rr, defaults=_PGD, start=True)
register("cw", norm="l2", build=build_cw, defaults=CW_DEFAULTS, budgeted=False, check=check_cw)

__all__ = ["ATTACKS", "NORM", "UNBUDGETED", "DEFAULTS", "REGISTRY", "AttackSpec", "register", "check_attack",
           "check_options", "check_eps", "make_attack", "budgeted_attacks", "l2_radius", "cw_margin", "prob_of",
           "fgsm", "fgsm_sweep", "LOSSES", "SeededPGD", "RRAttack", "FixedCW", "SearchCW", "MaskedNES", "NESResult",
           "nes_attack"]
