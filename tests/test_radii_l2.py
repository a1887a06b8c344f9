"""The L2-ball RR (issue #23.5: "an L2-ball RR sweep beside L∞, as the paper defines RR"): on a linear two-logit
detector the L2 rows reach the analytic L2 margin change ε·||w||₂ and the analytic L2 radii (never below, within
one bisection bracket); RR on the L2 grid is an exact reduction of the L2 radii; the L2 perturbation never leaves
its ball or [0, 1]; chapter 03's CW-L2 subsample keeps whole identities and is seed-stable; the L2 section on two
tiny detectors; bad input is a one-line ValueError naming the value."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from test_radii import LinearLogit, _analytic_r_b
from toys import SmallNet

from dfrobust import metrics
from dfrobust.attacks import radii
from dfrobust.attacks.rr import RRAttack
from dfrobust.data.sampling import identity_subsample
from dfrobust.experiments import radii as rx
from dfrobust.experiments import robustness
from dfrobust.experiments.records import identity_subset

torch.set_num_threads(1)

L2_EPS = [0.0, 0.05, 0.1, 0.2, 0.5, 1.0, 1.5]
B = [0.05, 0.1, 0.2]


def _linear_case(n=10):
    """Inputs in [0.45, 0.55]: at the largest L2 radius 1.5 no pixel moves by more than r·max|w|/||w||₂ ≈ 0.38,
    so the [0, 1] box never binds and the L2 answers are analytic (checked below)."""
    model = LinearLogit()
    x = 0.5 + 0.1 * (torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(3)) - 0.5)
    with torch.no_grad():
        s = (x.flatten(1) @ model.w).double().numpy()
    w = model.w.detach().double()
    assert max(L2_EPS) * float(w.abs().max() / w.norm()) + 0.05 < 0.45      # the box does not bind
    return model, x, torch.as_tensor((s > 0).astype(np.int64)), np.abs(s), float(w.norm())


def test_l2_rows_move_the_linear_margin_by_exactly_eps_times_the_l2_norm_of_w():
    model, x, yhat, m0, w2 = _linear_case()
    rows = radii.attack_rows(model, x, yhat, L2_EPS, [0.0], steps=1, n_bisect=0, norm="l2")
    eps = np.asarray(L2_EPS[1:])[:, None]
    # the down run's smallest margin is m0 − ε·||w||₂ (an L∞ sign step would give m0 − ε·||w||₁/√d: ~20 % less)
    np.testing.assert_allclose(rows.m_min, m0[None] - eps * w2, rtol=0, atol=2e-5)
    l1 = float(model.w.detach().abs().sum())
    assert np.all(m0[None] - eps * l1 / np.sqrt(x[0].numel()) - rows.m_min > 0.01 * eps * w2)


def test_linear_detector_l2_radii_match_the_analytic_ones_never_below_within_one_bracket():
    model, x, yhat, m0, w2 = _linear_case()
    rows = radii.attack_rows(model, x, yhat, L2_EPS, [0.0] + B, steps=2, n_bisect=6, norm="l2")
    out = radii.radii_from_rows(rows, B)
    exact = m0 / w2                                             # L2 distance to the boundary
    tol = 1e-5 * exact
    assert np.isfinite(out["r_flip_upper"]).all()
    assert (out["r_flip_upper"] >= exact - tol).all()
    assert (out["r_flip_upper"] <= exact + out["r_flip_bracket"] + tol).all()
    assert (out["r_flip_bracket"] < np.diff(L2_EPS).max()).all()
    for bi, b in enumerate(B):
        ex = _analytic_r_b(m0, w2, b)                           # σ(m ± r·||w||₂) moves by b
        found = out["r_b_upper"][bi]
        assert (np.isinf(found) == (ex > max(L2_EPS))).all()
        fin = np.isfinite(found)
        assert fin.any()
        assert (found[fin] >= ex[fin] * (1 - 1e-4)).all()
        assert (found[fin] <= ex[fin] + out["r_b_bracket"][bi][fin] + 1e-4 * ex[fin]).all()


def test_the_l2_rr_attack_never_leaves_its_ball_or_the_box():
    net = SmallNet(0, 8)
    x = torch.rand(6, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    x[0] = 0.0                                                  # on the box's corners: clipping binds
    x[1] = 1.0
    y = net(x).argmax(1)
    r = torch.tensor([0.01, 0.1, 0.3, 0.5, 1.0, 3.0])
    atk = RRAttack(net, eps=r, alpha=2.5 * r / 4, steps=4, random_start=False, temperatures=[0.5, 2.0], norm="l2")
    start = radii.random_start(x.shape, 2 * r, "l2", torch.Generator().manual_seed(2), x.dtype)   # outside: projected
    adv = atk(x, y, start=start)
    for a in (adv, atk.last_down_adv, atk.last_up_adv):
        d = (a - x).flatten(1)
        assert (d.norm(dim=1) <= r * (1 + 1e-5)).all()
        assert a.min() >= 0 and a.max() <= 1
    # the helpers: projection onto the ball of each norm, random starts inside it
    d = torch.randn(6, 3, 8, 8)
    assert (radii.project(d, r, "l2").flatten(1).norm(dim=1) <= r * (1 + 1e-6)).all()
    assert (radii.project(d, r, "linf").flatten(1).abs().amax(1) <= r).all()
    small = d * 1e-4
    torch.testing.assert_close(radii.project(small, r[1:].max().expand(6), "l2"), small)   # inside: unchanged
    s = radii.random_start((6, 3, 8, 8), r, "l2", torch.Generator().manual_seed(0), torch.float32)
    assert (s.flatten(1).norm(dim=1) <= r * (1 + 1e-6)).all()


def _records(norm="l2", n=12):
    nets = {"a": SmallNet(0, 8), "b": SmallNet(1, 8)}
    x = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1] * (n // 2))
    meta = pd.DataFrame({"identity": [f"id{i // 3}" for i in range(n)], "label": y.numpy(), "group": "g"})
    return rx.radii_records(nets, x, y, meta, [0.0, 0.1, 0.3, 1.0, 3.0], [0.0, 0.1, 0.2, 0.3], steps=2,
                            n_bisect=3, device="cpu", norm=norm)


def test_rr_on_the_l2_grid_is_an_exact_reduction_of_the_l2_radii():
    ds = _records("l2")
    assert ds.attrs["norm"] == "l2" and ds["eps"].attrs["long_name"].startswith("L2 radius")
    rr = metrics.robust_ratio(ds, ds["b"].values)
    rr_radii = (ds["r_b_upper"] > ds["eps"]).mean("sample")
    np.testing.assert_array_equal(rr.transpose("model", "eps", "b").values,
                                  rr_radii.transpose("model", "eps", "b").values)
    assert 0 < float(rr.sel(b=0.1).isel(eps=slice(1, None)).mean()) < 1      # the grid sees RR move
    assert rx.reductions_gap(ds) == 0
    # the section's table reads the same reduction, with a bootstrap interval around it
    t = rx.rr_from_radii(ds, 0.1, by="identity", n_boot=50)
    for row in t.itertuples():
        assert row.RR == pytest.approx(float((ds["r_b_upper"].sel(b=0.1, model=row.model) > row.eps).mean()))
        assert row.lo <= row.RR <= row.hi and row.norm == "L2" and row.n == 4
    # the L∞ rows of the same images differ (another ball): the norm reaches the attack
    assert not np.array_equal(_records("linf")["r_b_upper"].values, ds["r_b_upper"].values)


def _meta(n_ids=10, seed=0):
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 12, n_ids)
    ids = np.repeat([f"id{i:02d}" for i in range(n_ids)], sizes)
    groups = np.repeat([f"g{i % 3}" for i in range(n_ids)], sizes)
    return pd.DataFrame({"identity": ids, "group": groups, "label": np.arange(len(ids)) % 2}).sample(
        frac=1.0, random_state=1).reset_index(drop=True)


def test_the_cw_subsample_takes_whole_identities_and_is_seed_stable():
    meta = _meta()
    n = len(meta) // 2
    pos = identity_subsample(meta, n, seed=3)
    assert np.array_equal(pos, identity_subsample(meta, n, seed=3))           # same seed, same subsample
    kept = set(meta["identity"].iloc[pos])
    assert meta.index[meta["identity"].isin(kept)].tolist() == pos.tolist()   # every image of a kept identity
    sizes = meta.groupby("identity").size()
    assert n <= len(pos) < n + sizes.max()                                   # the first identities reaching n
    assert len(pos) - sizes[list(kept)].min() < n                            # one identity fewer would not
    assert len({g for g in meta["group"].iloc[pos]}) == 3                    # balanced over groups
    others = [frozenset(meta["identity"].iloc[identity_subsample(meta, n, seed=s)]) for s in range(6)]
    assert len(set(others)) > 1                                              # the seed draws it
    assert np.array_equal(identity_subsample(meta, 0), np.arange(len(meta)))  # 0: all
    assert np.array_equal(identity_subsample(meta, 10 ** 6), np.arange(len(meta)))
    # on the attacked images: tensors and rows cut alike
    samples = robustness.Samples(torch.arange(len(meta)).view(-1, 1, 1, 1).float(),
                                 torch.as_tensor(meta["label"].to_numpy().copy()), meta, [])
    sub, p2 = identity_subset(samples, n, seed=3)
    assert np.array_equal(p2, pos) and sub.images.flatten().long().tolist() == pos.tolist()
    assert sub.labels.tolist() == meta["label"].iloc[pos].tolist() and len(sub.meta) == len(pos)


@pytest.mark.parametrize("call,match", [
    (lambda: identity_subsample(_meta(), -1), r"^cw_n=-1: expected an integer >= 0"),
    (lambda: identity_subsample(_meta(), 2.5), r"^cw_n=2\.5: expected an integer >= 0"),
    (lambda: radii.attack_rows(SmallNet(), torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long), [0.1], [0.1],
                               norm="l3"), r"^norm='l3': expected 'linf' or 'l2'$"),
    (lambda: _records("l3"), r"^norm='l3': expected 'linf' or 'l2'$"),
    (lambda: radii.fab_flip_radius(SmallNet(), torch.rand(2, 3, 8, 8), torch.zeros(2, dtype=torch.long),
                                   norm="L2"), r"^norm='L2': expected 'linf' or 'l2'$"),
])
def test_bad_norm_and_cw_n_are_one_line_errors(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kw,match", [({"cw_n": -1}, r"^cw_n=-1: expected an integer >= 0"),
                                      ({"cw_n": 25}, r"^cw_n=25: expected at most n_samples=24"),
                                      ({"l2_eps_min": 0.0}, r"^l2_eps_min=0\.0: expected a number in \(0, 1000\]$"),
                                      ({"l2_eps_max": 0.01}, r"^l2_eps_max=0\.01: expected an L2 radius above"),
                                      ({"n_l2": 0}, r"^n_l2=0: expected an integer")])
def test_bad_l2_parameters_of_chapter_03_are_one_line_errors(kw, match):
    import ast

    from conftest import ROOT
    from dfrobust.study import declared_parameters

    d = {k: ast.literal_eval(v["default"])
         for k, v in declared_parameters(ROOT / "notebooks" / "03_robustness.ipynb").items()}
    p = robustness.check_params(**{**d, "device": "cpu"})
    assert p["cw_n"] == 0 and p["l2_grid"] == [0.0, 0.05, 0.170998, 0.584804, 2.0]
    with pytest.raises(ValueError, match=match):
        robustness.check_params(**{**d, "device": "cpu", **kw})


def test_l2_section_on_two_tiny_detectors_beside_the_linf_radii(tmp_path):
    n = 12
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 2
    meta = pd.DataFrame({"identity": [f"id{i // 2}" for i in range(n)], "group": [f"g{i // 4}" for i in range(n)],
                         "label": labels.numpy(), "path": [f"synth/img{i}.png" for i in range(n)]})
    nets = {"m1": SmallNet(1), "m2": SmallNet(2)}
    for net in nets.values():
        with torch.no_grad():
            net.fc.weight.mul_(0.1)
    s = SimpleNamespace(analysed=list(nets), trained={m: SimpleNamespace(model=v) for m, v in nets.items()},
                        manifest=pd.DataFrame({"label": [0, 1]}), size=8)
    p = {"claims": robustness.subclaims(), "eps_grid": [0.0, 0.01, 0.05, 0.2], "b_grid": [0.0, 0.05, 0.1, 0.2],
         "eps_ref": 0.05, "b_ref": 0.1, "radii": {"steps": 1, "n_bisect": 2, "convergence_n": 0}, "cw_n": 6,
         "l2_grid": [0.0, 0.1, 0.5, 2.0], "params": {"profile": "quick", "seed": 0}}
    samples = robustness.Samples(images, labels, meta, [])
    linf = rx.radii_records(nets, images, labels, meta, p["eps_grid"], p["b_grid"], n_bisect=2, device="cpu")
    l2 = rx.l2_section(p, s, samples, linf=linf, by="identity", n_boot=50, seed=0, device="cpu", out_dir=tmp_path,
                       provenance={"synthetic": 1})
    v = l2.result.values
    with xr.open_dataset(tmp_path / "rr_radii_l2.nc") as saved:
        assert saved.attrs["kind"] == "radii_records" and saved.attrs["norm"] == "l2"
        assert saved.attrs["profile"] == "quick" and "identity" in saved.coords
        ids = set(saved["identity"].values.tolist())
    pos = identity_subsample(meta, 6, seed=0)
    assert ids == set(meta["identity"].iloc[pos]) and len(ids) == 3        # whole identities, the CW images
    assert v["l2_n_units"] == "3 identities (6 images)" and v["l2_answer"].endswith("n = 3 identities (6 images).")
    assert "upper bound" in v["l2_answer"] and "RR_L2(ε, b = 0.1)" in v["l2_answer"]
    assert "RR_L∞(ε, b = 0.1)" in v["l2_answer"] and v["l2_grid"] == "0.1, 0.5, 2"
    t = l2.rr
    assert set(t["norm"]) == {"L2", "L∞"} and len(t) == 2 * (3 + 3)
    lin = t[t["norm"] == "L∞"]                                            # L∞ RR read on the same images only
    for row in lin.itertuples():
        r = linf["r_b_upper"].sel(b=0.1, model=row.model).isel(sample=pos)
        assert row.RR == pytest.approx(float((r > row.eps).mean()))
    from dfrobust.figures import robustness as rfig

    fig = rfig.rr_norms_figure(t)
    assert len(fig.axes) == 2
    none = rx.l2_section(p, SimpleNamespace(analysed=[]), None, linf=None, by="identity", n_boot=10, seed=0,
                         device="cpu", out_dir=tmp_path / "x", provenance={})
    assert none.records is None and "No detector" in none.result.values["l2_answer"]


def test_cw_section_runs_on_the_identity_subsample_and_reports_n_in_identities(tmp_path):
    from dfrobust.experiments.records import cw_options

    n = 12
    images, labels = torch.rand(n, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(n) % 2
    meta = pd.DataFrame({"identity": [f"id{i // 2}" for i in range(n)], "group": [f"g{i // 4}" for i in range(n)],
                         "label": labels.numpy(), "path": [f"synth/img{i}.png" for i in range(n)]})
    s = SimpleNamespace(analysed=["m1"], trained={"m1": SimpleNamespace(model=SmallNet(1))})
    p = {"cw_kw": cw_options(c_init=1.0, search_steps=1, steps=5, lr=0.05), "b_ref": 0.1, "cw_n": 5,
         "params": {"profile": "quick", "seed": 0}}
    cw = robustness.minimal_section(p, s, robustness.Samples(images, labels, meta, []), by="identity", n_boot=20,
                                    seed=0, device="cpu", out_dir=tmp_path, provenance={})
    pos = identity_subsample(meta, 5, seed=0)
    assert len(pos) == 6 and cw.records.sizes["sample"] == 6                 # 3 whole identities reach 5 images
    assert set(cw.records["identity"].values.tolist()) == set(meta["identity"].iloc[pos])
    assert cw.result.values["cw_n_units"].startswith("3 identities (6 images) of the images above")
    assert (cw.result.tables["cw_summary"]["n"] == 3).all()                  # the table's n: identities
    p["cw_n"] = 0
    cw = robustness.minimal_section(p, s, robustness.Samples(images, labels, meta, []), by="identity", n_boot=20,
                                    seed=0, device="cpu", out_dir=tmp_path, provenance={})
    assert cw.records.sizes["sample"] == n and cw.result.values["cw_n_units"] == "6 identities (12 images), every image above"
