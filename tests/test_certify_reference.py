"""Certified bounds against the tightness oracle in ``../shared/certify`` (not part of the repository).

The oracle holds fixed random 64 px Meso4 / MesoInception4 networks (two with non-trivial batch-norm
statistics), fixed images, an independent implementation's IBP / CROWN / alpha-CROWN bounds on the
margin, and a strong two-sided PGD estimate of its true range (read its README). Per network and ε,
on every image it has: our CROWN is at least as tight as its CROWN (lower bound ≥ its lower − 1e-4,
upper ≤ its upper + 1e-4), our alpha-CROWN at least as tight as its alpha-CROWN (and as its CROWN), and
no bound is beaten by its attack. Minutes on a CPU (full CROWN on 64 px images), hence ``slow``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import torch

from dfrobust.certify import margin_bounds, trace
from dfrobust.certify.bounds import ALPHA_LR, ALPHA_STEPS, _margin_spec
from dfrobust.models import build

REF = Path(__file__).resolve().parents[2] / "shared" / "certify"
TIGHT = 1e-4  # the tolerance against the reference's bounds
ATTACK_TOL = 1e-5  # the reference's own tolerance for "bound beaten by PGD"


def _cases():
    p = REF / "reference.json"
    if not p.is_file():
        return [pytest.param(None, None, marks=pytest.mark.skip(
            reason=f"certification references not present at {REF} (they are not part of the repository)"))]
    ref = json.loads(p.read_text())
    return [(net, float(eps)) for net in ref["_meta"]["networks"] for eps in ref["_meta"]["eps"]]


@functools.lru_cache(maxsize=None)
def _reference():
    return json.loads((REF / "reference.json").read_text())


@functools.lru_cache(maxsize=None)
def _graph(net: str):
    meta = _reference()["_meta"]["networks"][net]
    det = build(meta["model"], input_size=meta["input_size"])
    det.load_state_dict(torch.load(REF / meta["state_dict"]))
    return trace(det.eval())


@pytest.mark.slow
@pytest.mark.parametrize("net,eps", _cases())
def test_bounds_at_least_as_tight_as_the_reference_and_never_beaten(net, eps):
    recs = sorted((r for r in _reference()["records"] if r["network"] == net and r["eps"] == eps),
                  key=lambda r: r["image"])
    assert recs, (net, eps)
    x = torch.load(REF / "inputs.pt")[[r["image"] for r in recs]].double()
    pred = torch.tensor([r["pred_clean"] for r in recs])
    g = _graph(net)

    def ref(key):
        return torch.tensor([r[key] for r in recs], dtype=torch.float64)

    a_min, a_max = ref("attack_min"), ref("attack_max")
    ibp = margin_bounds(g, x, eps, method="ibp", pred=pred)
    assert torch.equal(ibp.pred_clean, pred)
    # CROWN and alpha-CROWN as margin_bounds(method=...) computes them, sharing CROWN's
    # intermediate bounds (the slow part) instead of computing them twice
    x_lo, x_hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
    spec = _margin_spec(g, pred)
    c_lo, c_hi, B, _ = g.bounds(x_lo, x_hi, "crown", spec)
    a_lo, a_hi = g._alpha_crown(len(g.nodes) - 1, spec, B, {}, x_lo, x_hi, 256 * 2**20, ALPHA_STEPS, ALPHA_LR)
    bounds = {"ibp": (ibp.m_lo, ibp.m_hi), "crown": (c_lo, c_hi),
              "alpha-crown": (torch.maximum(c_lo, a_lo), torch.minimum(c_hi, a_hi))}
    for method, (lo, hi) in bounds.items():
        assert (lo <= a_min + ATTACK_TOL).all(), (net, eps, method, lo, a_min)
        assert (hi >= a_max - ATTACK_TOL).all(), (net, eps, method, hi, a_max)
    for method, keys in (("crown", ("lirpa_crown",)), ("alpha-crown", ("lirpa_crown", "lirpa_alpha_crown"))):
        lo, hi = bounds[method]
        for key in keys:
            assert (lo >= ref(key + "_lo") - TIGHT).all(), (net, eps, method, key, lo, ref(key + "_lo"))
            assert (hi <= ref(key + "_hi") + TIGHT).all(), (net, eps, method, key, hi, ref(key + "_hi"))
    width = {m: hi - lo for m, (lo, hi) in bounds.items()}
    assert (width["crown"] <= width["ibp"] + 1e-12).all()
    assert (width["alpha-crown"] <= width["crown"] + 1e-12).all()
