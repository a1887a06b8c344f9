"""Chapter 03's "Critical radii" section (issue #23): the paired log-radius comparison decided on constructed
radii with a known answer (holds, refuted, no difference detected), Holm over the pairs and the simulated power;
the censoring of r_b at the largest grid radius; the convergence rows' Wilson rule; and the whole section on
two tiny detectors (records saved, grid reductions gap 0, verdict rows joining the decide table)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from toys import SmallNet

from dfrobust.experiments import radii as rx
from dfrobust.experiments import robustness

torch.set_num_threads(1)


def _log_radii(diffs: dict[str, np.ndarray], n_ids: int, per_id: int = 2, seed: int = 0) -> xr.Dataset:
    """log r per (model, sample): model "base" random, every other model = base + its per-identity shift."""
    rng = np.random.default_rng(seed)
    n = n_ids * per_id
    base = rng.normal(np.log(0.01), 0.8, n)
    models = ["base", *diffs]
    vals = np.stack([base] + [base + np.repeat(d, per_id) for d in diffs.values()])
    ids = np.repeat([f"id{i:03d}" for i in range(n_ids)], per_id)
    return xr.Dataset({"log_r": (("model", "sample"), vals)},
                      coords={"model": models, "sample": np.arange(n), "identity": ("sample", ids)})


def test_log_radius_rule_on_constructed_radii_with_a_known_answer():
    rng = np.random.default_rng(1)
    n = 60
    lr = _log_radii({"double": np.log(2) + rng.normal(0, 0.1, n),      # radii twice as large: holds (|Δ| = 0.69)
                     "same": rng.normal(0, 0.05, n),                   # equal up to noise: inside ±0.223, refuted
                     "copy": np.zeros(n)}, n)                          # identical: no difference detected
    kw = dict(margin=0.223, alpha=0.05, by="identity", n_boot=400)
    held = rx.log_radius_verdict(lr, "double", "base", **kw)
    assert held.verdict == "holds" and held.n == n and held.lo > 0.223
    assert abs(held.estimate - np.log(2)) < 0.05
    assert rx.log_radius_verdict(lr, "same", "base", **kw).verdict == "refuted"
    copy = rx.log_radius_verdict(lr, "copy", "base", **kw)
    assert copy.verdict == "inconclusive" and "no difference detected" in copy.note
    # a shift inside the margin but with the interval crossing it: inconclusive at this n
    wide = _log_radii({"noisy": 0.2 + rng.normal(0, 1.0, 10)}, 10)
    assert rx.log_radius_verdict(wide, "noisy", "base", **kw).verdict == "inconclusive"


def test_compare_radii_holm_headline_and_power():
    rng = np.random.default_rng(2)
    n = 40
    lr = _log_radii({"double": np.log(2) + rng.normal(0, 0.2, n), "same": rng.normal(0, 0.05, n)}, n)
    out = rx.compare_radii(lr, margin=0.223, alpha=0.05, by="identity", n_boot=300, n_sim=20, sim_boot=150)
    t = out["table"].set_index(["model_a", "model_b"])
    assert len(t) == 3 and set(t["n"]) == {n}                          # three pairs, n in identities
    assert t.loc[("base", "double"), "verdict"] == "holds" and t.loc[("base", "double"), "ratio"] < 0.6
    assert out["headline"].verdict == "holds"
    assert out["deciding"] in {("base", "double"), ("double", "same")}
    assert out["power"] >= 0.8                                        # a twofold radius at n = 40: decided every time
    # Holm: the first round tests at α/3, then the rest at a larger level
    assert t["level"].min() == pytest.approx(0.05 / 3)
    one = _log_radii({}, 10)
    assert rx.compare_radii(one, margin=0.223, alpha=0.05, by="identity", n_boot=50)["deciding"] is None


def test_compare_radii_primary_pair_fixed_before_the_run_decides_the_power():
    rng = np.random.default_rng(3)
    n = 40
    lr = _log_radii({"double": np.log(2) + rng.normal(0, 0.2, n), "same": rng.normal(0, 0.05, n)}, n)
    kw = dict(margin=0.223, alpha=0.05, by="identity", n_boot=300, n_sim=20, sim_boot=150)
    # without a primary pair the largest held difference decides; with one, that pair does, in its order
    free = rx.compare_radii(lr, **kw)
    assert not free["primary"] and free["deciding"] != ("same", "base")
    out = rx.compare_radii(lr, primary=["same", "base"], **kw)
    assert out["primary"] and out["deciding"] == ("same", "base")
    t = out["table"].set_index(["model_a", "model_b"])
    assert ("same", "base") in t.index and ("base", "same") not in t.index and len(t) == 3
    assert t.loc[("same", "base"), "verdict"] == "refuted"            # equal up to noise: inside ±0.223
    assert out["power"] == 0.0                                         # power is that of "holds": never, here
    # a primary pair that was not analysed falls back to the choice after the run, and says so
    gone = rx.compare_radii(lr, primary=["meso4_adv", "meso4"], **kw)
    assert not gone["primary"] and gone["deciding"] == free["deciding"]


def test_subclaims_primary_pair_is_checked():
    from dfrobust.core.profiles import load_spec

    assert robustness.subclaims()["log_radius"]["primary"] == ["meso4_adv", "meso4"]
    spec = load_spec()
    for bad in (["meso4"], ["meso4", "meso4"], "meso4"):
        broken = {**spec, "notebooks": [
            {**e, "claims": {**e["claims"], "log_radius": {**e["claims"]["log_radius"], "primary": bad}}}
            if e["name"] == "03_robustness" else e for e in spec["notebooks"]]}
        with pytest.raises(ValueError, match=r"^claims.log_radius.primary=.*: expected two different detector names"):
            robustness.subclaims(broken)


def test_log_radii_censor_at_the_largest_grid_radius():
    ds = xr.Dataset({"r_flip_upper": (("model", "sample"), [[0.01, np.inf]]),
                     "r_b_upper": (("model", "b", "sample"), [[[0.02, np.inf], [0.05, 0.3]]])},
                    coords={"model": ["m"], "b": [0.1, 0.2], "sample": [0, 1], "eps": [0.0, 0.1, 0.2]})
    np.testing.assert_allclose(rx.log_radii(ds)["log_r"].values, np.log([[0.01, 0.2]]))
    np.testing.assert_allclose(rx.log_radii(ds, 0.1)["log_r"].values, np.log([[0.02, 0.2]]))
    np.testing.assert_allclose(rx.log_radii(ds, 0.2)["log_r"].values, np.log([[0.05, 0.2]]))   # 0.3 > ε_max: censored


def _conv(k: int, n: int) -> xr.Dataset:
    drop = np.zeros((2, 2))
    drop[1, 1] = k / n
    return xr.Dataset({"rr_drop": (("model", "eps", "b"), drop[None]), "r_b_lowered": (("model", "b"), [[0.0, k / n]]),
                       "r_flip_lowered": (("model",), [0.0])},
                      coords={"model": ["m"], "eps": [0.0, 0.1], "b": [0.1, 0.2]},
                      attrs={"convergence_samples": str(list(range(n)))})


def test_a_refuted_convergence_row_puts_a_caution_on_the_radii_answer():
    ok, loose = rx.convergence_verdicts(_conv(0, 80), margin=0.05), rx.convergence_verdicts(_conv(2, 4), margin=0.05)
    assert rx.convergence_caution(["m"], ok) == ""
    assert rx.convergence_caution(["m"], rx.convergence_verdicts(_conv(1, 4), margin=0.05)) == ""   # inconclusive
    caution = rx.convergence_caution(["a", "b"], [*ok, *loose])
    assert "for b (convergence refuted)" in caution and "a," not in caution and "loose upper bounds" in caution


@pytest.mark.parametrize("k,n,verdict", [(0, 4, "inconclusive"), (1, 4, "inconclusive"), (2, 4, "refuted"),
                                         (0, 80, "holds"), (0, 60, "inconclusive")])
def test_convergence_rows_are_decided_on_the_wilson_interval(k, n, verdict):
    (v,) = rx.convergence_verdicts(_conv(k, n), margin=0.05)
    assert v.verdict == verdict and v.n == n and v.estimate == pytest.approx(k / n)
    if k == 0:
        assert "≤ 0.05 from n = 73" in v.note     # 0 of n bounds the share below 0.05 from n = 73 on
    else:
        assert f"{k} of {n} samples lowered at ε = 0.1, b = 0.2" in v.note
    assert rx.convergence_verdicts(_conv(0, 4).assign_attrs(convergence_samples="[]"), margin=0.05) == []


def _section_case(tmp_path, convergence_n=3):
    n = 12
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 2
    meta = pd.DataFrame({"identity": [f"id{i // 2}" for i in range(n)], "group": "g", "label": labels.numpy(),
                         "path": [f"synth/img{i}.png" for i in range(n)]})
    nets = {"m1": SmallNet(1), "m2": SmallNet(2)}
    for net in nets.values():
        with torch.no_grad():
            net.fc.weight.mul_(0.1)                                    # less confident: P(ŷ) moves within the grid
    s = SimpleNamespace(analysed=list(nets), trained={m: SimpleNamespace(model=v) for m, v in nets.items()},
                        manifest=pd.DataFrame({"label": [0, 1]}), size=8)
    claims = robustness.subclaims()
    p = {"claims": claims, "eps_grid": [0.0, 0.01, 0.05, 0.2], "b_grid": [0.0, 0.05, 0.1, 0.2], "eps_ref": 0.05,
         "b_ref": 0.1, "radii": {"steps": 1, "n_bisect": 2, "convergence_n": convergence_n},
         "params": {"profile": "quick", "seed": 0}}
    samples = robustness.Samples(images, labels, meta, [])
    return rx.radii_section(p, s, samples, by="identity", n_boot=100, seed=0, device="cpu", out_dir=tmp_path,
                            provenance={"synthetic": 1}, n_sim=3), p


def test_radii_section_on_two_tiny_detectors(tmp_path):
    rad, p = _section_case(tmp_path)
    v = rad.result.values
    assert (tmp_path / "rr_radii.nc").is_file()
    with xr.open_dataset(tmp_path / "rr_radii.nc") as saved:
        assert saved.attrs["kind"] == "radii_records" and saved.attrs["profile"] == "quick"
        assert set(saved["model"].values) == {"m1", "m2"} and "identity" in saved.coords
    assert v["radii_gap"] == "0"                                     # grid RA/RR = reductions of the radii
    assert v["radii_n_units"] == "6 identities" and "n = 6 identities" in v["radii_answer"]
    assert v["radii_verdict"] in ("holds", "refuted", "inconclusive") and v["radii_counts"].endswith("inconclusive")
    assert "not run" not in v["radii_conv"] and v["radii_conv"].startswith("m1: ") and "; m2: " in v["radii_conv"]
    t = rad.result.tables
    assert len(t["radii_pairs"]) == 1 and len(t["radii_convergence"]) == 2
    assert set(t["radii_temperature"]["T"]) >= set(rx.T_GRID)
    # RA does not move with the temperature, exactly
    assert t["radii_temperature"].groupby("model")["RA"].nunique().eq(1).all()
    assert len(rad.verdicts) == 3                                   # one pair + two convergence rows
    # the rows join the chapter's decide table
    a = robustness.Analysis(SimpleNamespace(values={"n_units": "6 identities"}), "identity")
    decide = robustness.decide_rows(a, p, target_half_width=0.07, out_dir=tmp_path, extra=rad.verdicts)
    assert len(decide) == 3 and decide["claim"].str.startswith("convergence").sum() == 2
    from dfrobust.figures import robustness as rfig

    fig = rfig.radii_figure(rad.records, t["radii_temperature"], b=0.1)
    assert len(fig.axes) == 3 and len(fig.axes[2].lines) == 4      # RR(T) line and the fitted ★ per detector


def test_radii_section_without_an_analysed_detector(tmp_path):
    s = SimpleNamespace(analysed=[], trained={}, manifest=pd.DataFrame(), size=8)
    p = {"claims": robustness.subclaims(), "radii": {"steps": 1, "n_bisect": 2, "convergence_n": 0}}
    rad = rx.radii_section(p, s, None, by="sample", n_boot=10, seed=0, device="cpu", out_dir=tmp_path, provenance={})
    assert rad.records is None and rad.verdicts == [] and "No detector" in rad.result.values["radii_answer"]
    assert not (tmp_path / "rr_radii.nc").exists()


@pytest.mark.parametrize("kw,match", [({"radii_steps": 0}, r"^radii_steps=0: expected an integer in \[1, 100\]$"),
                                      ({"radii_bisect": -1}, r"^radii_bisect=-1: expected an integer"),
                                      ({"radii_bisect": True}, r"^radii_bisect=True: expected an integer"),
                                      ({"convergence_n": 25}, r"^convergence_n=25: expected at most n_samples=24")])
def test_bad_radii_parameters_are_one_line_errors(kw, match):
    import ast

    from dfrobust.study import declared_parameters
    from conftest import ROOT

    d = {k: ast.literal_eval(v["default"])
         for k, v in declared_parameters(ROOT / "notebooks" / "03_robustness.ipynb").items()}
    with pytest.raises(ValueError, match=match):
        robustness.check_params(**{**d, "device": "cpu", **kw})


def test_check_params_returns_the_radii_settings_and_the_log_radius_margin():
    import ast

    from dfrobust.study import declared_parameters
    from conftest import ROOT

    d = {k: ast.literal_eval(v["default"])
         for k, v in declared_parameters(ROOT / "notebooks" / "03_robustness.ipynb").items()}
    p = robustness.check_params(**{**d, "device": "cpu", "radii_steps": 2, "convergence_n": 3})
    assert p["radii"] == {"steps": 2, "n_bisect": d["radii_bisect"], "convergence_n": 3}
    assert p["params"]["radii_steps"] == 2 and p["claims"]["log_radius"]["margin"] == pytest.approx(0.223)
