"""attack_records: record layout, RR = 1 at ε = 0, budgets, seeds, validation (issue-10 defects: test_records_issue10.py)."""

import numpy as np
import pandas as pd
import pytest
import torch

from dfrobust import metrics
from dfrobust.core import results
from dfrobust.experiments import robustness
from dfrobust.experiments.records import (RECORD_VARS, attack_records, check_sweep, load_samples,
                                          minimal_records)
from dfrobust.data import sampling

torch.set_num_threads(1)


class Tiny(torch.nn.Module):
    def __init__(self, size=16, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(4 * 2 * 2, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
        self.input_size = size
        self.name = f"tiny{seed}"

    def forward(self, x):
        h = torch.relu(self.conv(x))
        return self.fc(torch.nn.functional.adaptive_avg_pool2d(h, 2).flatten(1)) * 4


class Exploding(Tiny):
    def forward(self, x):  # pragma: no cover - must never be reached
        raise AssertionError("validation must stop before the model runs")


N = 12
EPS = [0.0, 0.02, 0.1]
B = np.round(np.arange(0, 0.21, 0.01), 2)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, 3, 16, 16, generator=g)
    y = torch.randint(0, 2, (N,), generator=g)
    meta = pd.DataFrame({"group": ["asian_male", "african_female", "caucasian_male"] * 4,
                         "manipulation": ["none", "faceswap"] * 6,
                         "video_id": [f"v{i // 3}" for i in range(N)], "frame_index": list(range(N)),
                         "label": y.numpy()})
    return x, y, meta


@pytest.fixture(scope="module")
def records(data):
    x, y, meta = data
    models = {"a": Tiny(16, 0), "b": Tiny(12, 1)}  # b resizes the inputs
    return attack_records(models, ["fgsm", "pgd", "cwinf", "rr"], EPS, x, y, meta, seed=0,
                                     device="cpu", attack_kw={"pgd": {"steps": 3}, "cwinf": {"steps": 3},
                                                              "rr": {"steps": 3}})


def test_layout_and_sample_coords(records, data):
    _, y, meta = data
    assert dict(records["p_adv"].sizes) == {"model": 2, "attack": 4, "eps": 3, "sample": N}
    assert records.attrs["attacked_label"] == "y_hat"
    assert records["group"].values.tolist() == meta["group"].tolist()
    assert records["video_id"].values.tolist() == meta["video_id"].tolist()
    assert records["frame_index"].values.tolist() == meta["frame_index"].tolist()
    assert records["y"].values.tolist() == y.tolist()
    assert records["input_size"].values.tolist() == [16, 12]
    np.testing.assert_allclose(records["eps_l2"].sel(model="b").values, np.array(EPS) * np.sqrt(3 * 12 * 12))


def test_rr_is_one_at_eps_zero_for_every_attack_and_b(records):
    rr = metrics.robust_ratio(records, B)
    assert (rr.sel(eps=0.0) == 1.0).all()
    ra0 = metrics.robust_accuracy(records).sel(eps=0.0)
    ca = metrics.clean_accuracy(records)
    assert np.allclose(ra0.values, ca.values[:, None])


def test_linf_budget_and_p_adv_consistency(records):
    for a in ("fgsm", "pgd", "cwinf", "rr"):
        linf = records["linf"].sel(attack=a)
        assert (linf <= linf["eps"] + 1e-6).all()
        assert records["in_budget"].sel(attack=a).all()
    assert records["changed"].sel(attack="pgd", eps=0.1).all()
    # p_adv is P(clean-predicted class | x+δ) recomputed from P(fake | x+δ)
    pc = records["pred_clean"]
    p = xr_where(pc == 1, records["p_adv_fake"], 1 - records["p_adv_fake"])
    np.testing.assert_allclose(p.transpose(*records["p_adv"].dims).values, records["p_adv"].values)
    # stronger PGD budget never raises RA on these models
    ra = metrics.robust_accuracy(records).sel(attack="pgd")
    assert (ra.sel(eps=0.1) <= ra.sel(eps=0.0) + 1e-12).all()


def xr_where(c, a, b):
    import xarray as xr
    return xr.where(c, a, b)


def test_same_seed_same_records(data):
    x, y, meta = data
    kw = {"steps": 1, "alpha": 1e-4}
    run = lambda s: attack_records({"a": Tiny(16, 0)}, ["pgd", "rr"], [0.02, 0.05], x, y, meta, seed=s,
                                              device="cpu", attack_kw={"pgd": kw, "rr": kw}, ssim=False)
    r1, r2, r3 = run(5), run(5), run(6)
    for v in RECORD_VARS:
        assert np.array_equal(r1[v].values, r2[v].values, equal_nan=True), v
    assert not np.array_equal(r1["l2"].values, r3["l2"].values)


@pytest.mark.parametrize("kwargs, match", [
    (dict(attacks=["fgsm", "bim"]), "attack='bim'"),
    (dict(eps_grid=[0.0, -0.01]), "eps=-0.01"),
    (dict(eps_grid=[]), "eps_grid"),
    (dict(attack_kw={"pgd": {"stepz": 3}}), "unknown option"),
    (dict(labels=torch.tensor([0, 2])), "labels"),
    (dict(attacks=["pgd", "cw"]), "cw is the minimal-perturbation analysis"),
])
def test_bad_sweep_stops_before_any_attack(data, kwargs, match):
    x, y, meta = data
    args = dict(models={"x": Exploding()}, attacks=["fgsm", "pgd"], eps_grid=[0.0, 0.1],
                images=x[:2], labels=y[:2], meta=meta.iloc[:2])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        attack_records(**args)


def test_check_sweep_validates_b_and_models():
    with pytest.raises(ValueError, match="b=1.5"):
        check_sweep(["pgd"], [0.1], b_grid=[0.1, 1.5])
    with pytest.raises(ValueError, match="model='vgg'"):
        check_sweep(["pgd"], [0.1], models="meso4,vgg", known_models=("meso4",))
    assert metrics.linspace_grid(0.2, 21)[1] == 0.01


def test_records_round_trip_through_results(records, tmp_path, monkeypatch):
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path))
    path = results.save(records, tmp_path / "rec.nc")
    back = results.load(path)
    np.testing.assert_array_equal(back["p_adv"].values, records["p_adv"].values)
    assert back["group"].values.tolist() == records["group"].values.tolist()
    xr_rr = metrics.robust_ratio(back, B)
    np.testing.assert_array_equal(xr_rr.values, metrics.robust_ratio(records, B).values)


def test_select_and_load_samples_skip_unreadable_files(tmp_path):
    cv2 = pytest.importorskip("cv2")
    rows = []
    for i in range(6):
        p = tmp_path / f"img{i}.png"
        if i == 2:
            p.write_bytes(b"not an image")
        else:
            cv2.imwrite(str(p), np.full((20, 20, 3), 40 * i, np.uint8))
        rows.append({"path": str(p), "label": i % 2, "group": ["asian_male", "african_female"][i % 2 == 0],
                     "split": "test" if i < 5 else "train"})
    df = pd.DataFrame(rows)
    sel = sampling.select_samples(df, 10, seed=0)
    assert len(sel) == 5 and set(sel["split"]) == {"test"}
    assert sampling.select_samples(df, 2, seed=0)["label"].tolist().count(0) == 1  # balanced
    x, y, kept, skipped = load_samples(sel, 16)
    assert x.shape == (4, 3, 16, 16) and len(kept) == 4 and y.tolist() == kept["label"].tolist()
    assert len(skipped) == 1 and skipped[0]["path"].endswith("img2.png")
    with pytest.raises(ValueError, match="n_samples=0"):
        sampling.select_samples(df, 0)


def test_figures_have_one_panel_per_model_and_attack(records):
    from dfrobust.figures import robustness as rfig

    ra, rr = metrics.robust_accuracy(records), metrics.robust_ratio(records, B)
    fig = rfig.figure1(ra, rr, reading="eps", at=0.1)
    assert len(fig.axes) == 2 * 2 * 4  # model × attack panels, each with a twin RA axis
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), rr.sel(model="a", attack="fgsm", b=0.1).values)
    assert len(rfig.region_maps(rr, 0.9).axes) == 2 * 4 + 1  # + colorbar
    with pytest.raises(ValueError, match="reading='x'"):
        rfig.figure1(ra, rr, reading="x", at=0.1)


def test_attack_factory_hook_builds_every_attack(data):
    from dfrobust import attacks

    x, y, meta = data
    built = []

    def factory(name, model, *, eps, seed=0, **kw):
        built.append((name, eps))
        return attacks.make_attack(name, model, eps=eps, seed=seed, **kw)

    via = attack_records({"a": Tiny(16, 0)}, ["fgsm", "pgd"], [0.0, 0.05], x, y, meta, device="cpu",
                                    attack_kw={"pgd": {"steps": 1}}, ssim=False, attack_factory=factory)
    plain = attack_records({"a": Tiny(16, 0)}, ["fgsm", "pgd"], [0.0, 0.05], x, y, meta, device="cpu",
                                      attack_kw={"pgd": {"steps": 1}}, ssim=False)
    assert sorted(built) == [("fgsm", 0.05), ("pgd", 0.05)]  # ε = 0 never attacks
    np.testing.assert_array_equal(via["p_adv"].values, plain["p_adv"].values)


def test_minimal_records_read_as_ra_against_the_radius(data):
    """RA(r) from CW-L2's minimal records: clean accuracy at r = 0, non-increasing in r, and at a
    radius past every minimal ||δ||₂ only the clean-correct samples CW never flipped remain."""
    x, y, meta = data
    mn = minimal_records({"a": Tiny(16, 0)}, x, y, meta, device="cpu",
                                    cw_kw={"search_steps": 2, "steps": 5, "lr": 0.05})
    grid = robustness.radius_grid(mn, 11)
    ps = robustness.minimal_per_sample(mn, grid, [0.1])
    ra = ps["correct"].mean("sample").values[0]
    clean_ok = mn["pred_clean"].values[0] == y.numpy()
    assert ra[0] == pytest.approx(clean_ok.mean())
    assert (np.diff(ra) <= 0).all()
    assert ra[-1] == pytest.approx((clean_ok & ~mn["found"].values[0]).mean())
    assert mn["found"].values.any()  # the toy detector is flippable: the readings are not vacuous
    rr = ps["robust"].mean("sample").values[0, :, 0]
    assert rr[0] == 1.0 and (np.diff(rr) <= 0).all()


def test_sampler_returns_equal_real_and_fake_counts_in_every_group():
    rng = np.random.default_rng(0)
    groups = ["african_female", "asian_male", "caucasian_female"]
    rows = [{"path": f"p{i}", "group": g, "label": int(lab), "split": "test"}
            for i, (g, lab) in enumerate((g, lab) for g in groups for lab in rng.random(40) < 0.8)]  # 4:1 fake
    df = pd.DataFrame(rows)
    sel = sampling.select_samples(df, 24, seed=3)
    counts = sel.groupby(["group", "label"]).size().unstack()
    assert len(sel) == 24 and (counts[0] == counts[1]).all() and (counts[0] == 4).all()
