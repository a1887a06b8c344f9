"""Attacks: every perturbation search of the study behind one call convention.

``attacks`` owns the gradient attacks on the two-logit detector interface (:mod:`.gradient`:
FGSM, PGD L∞/L2 and the CW margin, through torchattacks), the black-box masked NES attack
(:mod:`.nes`) and the progressive (video) driver (:mod:`.progressive`). Every attack is a
torchattacks-style callable ``attack(images, labels) -> adversarial images`` built by
:func:`make_attack` from a registry line; it imports only torch, torchattacks, ``dfrobust.core``
and ``dfrobust.models``.

Adding an attack: write a module with a ``torchattacks.Attack`` subclass (or any callable with
that signature) and register it with :func:`register` (name, norm of its budget, defaults,
builder); see ``docs/ARCHITECTURE.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from ..core.params import check_eps
from .gradient import FixedCW, SeededPGD, SeededPGDL2, cw_margin, fgsm_sweep, l2_radius
from .nes import MaskedNES, NESResult, nes_attack


@dataclass(frozen=True)
class AttackSpec:
    """One registry line: how to build an attack and what its budget means."""

    name: str
    norm: str                      # "linf" or "l2": the norm its radius is measured in
    build: Callable[..., Any]      # build(model, *, eps, seed, **options) -> attack(images, labels)
    defaults: dict = field(default_factory=dict)
    budgeted: bool = True          # False: the result does not depend on ε (run once, compared per radius)
    check: Callable[[dict], None] | None = None  # extra option checks (one-line ValueError)


#: name -> spec, in registration order (the order of every table and figure)
REGISTRY: dict[str, AttackSpec] = {}
#: views of the registry kept for callers: names, norm per name, unbudgeted names, defaults per name
ATTACKS: list[str] = []
NORM: dict[str, str] = {}
UNBUDGETED: list[str] = []
DEFAULTS: dict[str, dict] = {}


def register(name: str, *, norm: str, build: Callable[..., Any], defaults: dict | None = None,
             budgeted: bool = True, check: Callable[[dict], None] | None = None) -> AttackSpec:
    """Add an attack to the registry (one line per attack; see docs/ARCHITECTURE.md)."""
    if norm not in ("linf", "l2"):
        raise ValueError(f"norm={norm!r}: expected 'linf' or 'l2'")
    spec = AttackSpec(name, norm, build, dict(defaults or {}), bool(budgeted), check)
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


# ----------------------------------------------------------------------------- the registry

def _pgd_builder(cls):
    def build(model, *, eps, seed, steps, alpha, random_start):
        alpha = alpha if alpha is not None else 2.5 * eps / int(steps)  # Madry et al.'s step for the sweep
        return cls(model, eps=eps, alpha=float(alpha), steps=int(steps), random_start=bool(random_start), seed=seed)
    return build


def _check_cw(opts: dict) -> None:
    if float(opts["c"]) <= 0 or float(opts["lr"]) <= 0:
        raise ValueError(f"cw c={opts['c']}, lr={opts['lr']}: expected c > 0 and lr > 0")


def _build_fgsm(model, *, eps, seed):
    import torchattacks

    return torchattacks.FGSM(model, eps=eps)


def _build_cw(model, *, eps, seed, c, kappa, steps, lr):
    return FixedCW(model, c=float(c), kappa=float(kappa), steps=int(steps), lr=float(lr))


_PGD = {"steps": 10, "alpha": None, "random_start": True}
register("fgsm", norm="linf", build=_build_fgsm)
register("pgd", norm="linf", build=_pgd_builder(SeededPGD), defaults=_PGD)
register("pgdl2", norm="l2", build=_pgd_builder(SeededPGDL2), defaults=_PGD)
register("cw", norm="l2", build=_build_cw, defaults={"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01},
         budgeted=False, check=_check_cw)

__all__ = ["ATTACKS", "NORM", "UNBUDGETED", "DEFAULTS", "REGISTRY", "AttackSpec", "register", "check_attack",
           "check_options", "check_eps", "make_attack", "l2_radius", "cw_margin", "fgsm_sweep", "SeededPGD",
           "SeededPGDL2", "FixedCW", "MaskedNES", "NESResult", "nes_attack"]
