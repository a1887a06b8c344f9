"""Per-sample critical radii (issue #23.1): analytic radii of a linear two-logit detector (never below,
within one bisection bracket), rows independent of the batch, FAB's check, and the grid RA/RR as exact
reductions of the radii."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.special import expit, logit

from toys import SmallNet

from dfrobust import metrics
from dfrobust.attacks import radii

torch.set_num_threads(1)

EPS = [0.0, 0.005, 0.01, 0.02, 0.05, 0.1]
B = [0.05, 0.1, 0.2]


class LinearLogit(torch.nn.Module):
    """Two logits (0, w·x): the L∞ distance to the boundary is |w·x| / ||w||₁ (the box does not bind)."""

    def __init__(self, d=3 * 8 * 8, seed=0):
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(d, generator=torch.Generator().manual_seed(seed)) * 0.05)
        self.input_size = 8

    def forward(self, x):
        s = x.flatten(1) @ self.w
        return torch.stack([torch.zeros_like(s), s], 1)


def _linear_case(n=10):
    model = LinearLogit()
    x = 0.5 + 0.1 * (torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(3)) - 0.5)
    with torch.no_grad():
        s = (x.flatten(1) @ model.w).double().numpy()
    return model, x, torch.as_tensor((s > 0).astype(np.int64)), np.abs(s), model.w.detach().abs().sum().item()


def _analytic_r_b(m0, w1, b):
    """Smallest L∞ radius at which P(ŷ) = σ(m) moves by more than b, down (m − r·||w||₁) or up (m + r·||w||₁)."""
    p0 = expit(m0)
    with np.errstate(divide="ignore", invalid="ignore"):
        down = np.where(p0 - b > 0, (m0 - logit(np.clip(p0 - b, 1e-300, 1))) / w1, np.inf)
        up = np.where(p0 + b < 1, (logit(np.clip(p0 + b, 0, 1 - 1e-16)) - m0) / w1, np.inf)
    return np.minimum(down, up)


def test_linear_detector_radii_are_never_below_the_analytic_ones_and_within_one_bracket():
    model, x, yhat, m0, w1 = _linear_case()
    rows = radii.attack_rows(model, x, yhat, EPS, [0.0] + B, steps=2, n_bisect=6)
    out = radii.radii_from_rows(rows, B)
    exact = m0 / w1
    tol = 1e-5 * exact                                          # float32 arithmetic of the model
    assert np.isfinite(out["r_flip_upper"]).all()
    assert (out["r_flip_upper"] >= exact - tol).all()
    assert (out["r_flip_upper"] <= exact + out["r_flip_bracket"] + tol).all()
    assert (out["r_flip_bracket"] < np.diff(EPS).max()).all()   # bisection narrowed every grid bracket
    for bi, b in enumerate(B):
        ex = _analytic_r_b(m0, w1, b)
        found = out["r_b_upper"][bi]
        assert (np.isinf(found) == (ex > max(EPS))).all()         # none found only beyond the grid
        fin = np.isfinite(found)
        assert (found[fin] >= ex[fin] * (1 - 1e-4)).all()
        assert (found[fin] <= ex[fin] + out["r_b_bracket"][bi][fin] + 1e-4 * ex[fin]).all()


def test_fab_checks_the_flip_radius_on_the_linear_detector():
    model, x, yhat, m0, w1 = _linear_case(n=4)
    fab = radii.fab_flip_radius(model, x, yhat, steps=20)
    exact = m0 / w1
    assert (fab >= exact * (1 - 1e-4)).all() and (fab <= exact * 1.06).all()   # FAB overshoots by η = 1.05


def test_rows_do_not_depend_on_the_batch():
    net = SmallNet(size=8)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        y = net(x).argmax(1)
    grid = [0.02, 0.05, 0.1, 0.2]
    together = radii.attack_rows(net, x, y, grid, [0.1, 0.3], steps=3, n_bisect=3)
    alone = radii.attack_rows(net, x[2:3], y[2:3], grid, [0.1, 0.3], steps=3, n_bisect=3)
    np.testing.assert_array_equal(together.radius[:, 2], alone.radius[:, 0])
    np.testing.assert_allclose(together.p[:, 2], alone.p[:, 0], atol=1e-5)
    np.testing.assert_allclose(together.m_min[:, 2], alone.m_min[:, 0], atol=1e-4)
    split = radii.attack_rows(net, x, y, grid, [0.1, 0.3], steps=3, n_bisect=3, batch_size=4)   # batches 4 + 2
    np.testing.assert_array_equal(split.radius, together.radius)
    np.testing.assert_allclose(split.p, together.p, atol=1e-5)


@pytest.mark.parametrize("kw, match", [
    (dict(eps_grid=[0.0]), "at least one radius > 0"),
    (dict(eps_grid=[-0.1, 0.1]), "eps=-0.1"),
    (dict(steps=0), "steps=0"),
    (dict(n_bisect=-1), "n_bisect=-1"),
])
def test_bad_search_options_are_one_line_errors(kw, match):
    args = dict(eps_grid=[0.1], b_grid=[0.1]) | kw
    with pytest.raises(ValueError, match=match):
        radii.attack_rows(SmallNet(), torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), **args)


# ------------------------------------------------------------------------- the records of experiments.radii

def _records_case(n=12, **kw):
    from dfrobust.experiments import radii as rx
    import pandas as pd

    nets = {"a": SmallNet(0, 8), "b": SmallNet(1, 8)}
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1] * (n // 2))
    meta = pd.DataFrame({"identity": [f"id{i // 3}" for i in range(n)], "label": y.numpy(), "group": "g"})
    return rx.radii_records(nets, x, y, meta, [0.0, 0.02, 0.05, 0.1, 0.2], [0.0, 0.1, 0.2, 0.3], steps=2,
                            n_bisect=3, device="cpu", **kw)


def test_grid_ra_and_rr_are_exact_reductions_of_the_radii():
    ds = _records_case()
    eps = ds["eps"]
    ra = metrics.robust_accuracy(ds)                               # the study's RA/RR of the grid records
    rr = metrics.robust_ratio(ds, ds["b"].values)
    correct = ds["pred_clean"] == ds["y"]
    ra_radii = (correct & (ds["r_flip_upper"] > eps)).mean("sample")
    rr_radii = (ds["r_b_upper"] > eps).mean("sample")
    np.testing.assert_array_equal(ra.transpose("model", "eps").values, ra_radii.transpose("model", "eps").values)
    np.testing.assert_array_equal(rr.transpose("model", "eps", "b").values,
                                  rr_radii.transpose("model", "eps", "b").values)
    # the bisection placed radii between grid points: the readings are not all grid values
    fin = np.isfinite(ds["r_flip_upper"].values)
    assert not np.isin(ds["r_flip_upper"].values[fin], ds["eps"].values).all()
    assert (ds["rr_drop"].isnull()).all() and ds.attrs["convergence"] == "not run"
    assert list(ds["identity"].values[:4]) == ["id0", "id0", "id0", "id1"]   # identity copied from meta


def test_bad_records_options_are_one_line_errors_before_any_attack():
    from dfrobust.experiments import radii as rx

    x, y = torch.rand(2, 3, 8, 8), torch.tensor([0, 1])
    for kw, match in ((dict(eps_grid=[0.0]), "at least one radius > 0"), (dict(b_grid=[1.5]), "b"),
                      (dict(steps=0), "steps=0"), (dict(temperatures=[0.0]), "temperatures"),
                      (dict(convergence_n=-1), "convergence_n=-1")):
        args = dict(eps_grid=[0.0, 0.1], b_grid=[0.1]) | kw
        with pytest.raises(ValueError, match=match):
            rx.radii_records({"m": SmallNet()}, x, y, None, args.pop("eps_grid"), args.pop("b_grid"), **args)


# ------------------------------------------------------------------------- convergence (#23.5)

def test_convergence_reports_how_much_a_stronger_search_lowers_rr_and_the_radii():
    from dfrobust.experiments import radii as rx

    net = torch.nn.Sequential(SmallNet(3, 8), torch.nn.Identity())
    net[1].forward = lambda z: z / 10                          # a less confident detector: P(ŷ) moves by > b
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        y = net(x).argmax(1)
    grid, b = [0.0, 0.05, 0.1, 0.2], [0.1, 0.3]
    reported = radii.radii_from_rows(radii.attack_rows(net, x, y, grid, b, steps=1, n_bisect=2), b)
    conv = rx.convergence(net, x, y, reported, grid, b, steps=1, n_bisect=2, factor=5, restarts=1, fab_steps=10)
    assert conv["rr_drop"].shape == (len(grid), len(b)) and (conv["rr_drop"] >= 0).all()
    assert conv["rr_drop"][-1, -1] > 0                           # one step per radius missed changes > 0.3 at 0.2
    # a reported search that found nothing: every finite radius of the stronger one lowers it
    blind = {"r_flip_upper": np.full(6, np.inf), "r_flip_bracket": np.full(6, np.inf),
             "r_b_upper": np.full((2, 6), np.inf), "r_b_bracket": np.full((2, 6), np.inf)}
    worse = rx.convergence(net, x, y, blind, grid, b, steps=1, n_bisect=2, factor=5, restarts=1, fab_steps=10)
    assert (worse["r_b_lowered"] > 0).all() and (worse["r_b_lowered"] >= conv["r_b_lowered"]).all()
    assert (worse["rr_drop"] >= conv["rr_drop"]).all() and worse["rr_drop"].max() > 0
    assert worse["r_flip_lowered"] >= np.isfinite(worse["fab_r_flip"]).mean()   # every flip FAB found counts


def test_radii_records_keep_the_convergence_rows_of_a_seeded_subsample():
    ds = _records_case(convergence_n=4, convergence_factor=3, convergence_restarts=1)
    assert ds["rr_drop"].notnull().all() and (ds["rr_drop"] >= 0).all()
    assert ds.attrs["convergence"].startswith("4 samples, 3x steps, 1 restarts")
    assert len(json.loads(ds.attrs["convergence_samples"])) == 4
