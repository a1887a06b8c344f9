"""RA, RR, complementary metrics and the bootstrap against hand-computed values on tiny records."""

import numpy as np
import pytest
import xarray as xr

from dfrobust import metrics


def _records(p_clean_fake, p_adv_fake, y, *, in_budget=None, l2=None, linf=None, ssim=None,
             x_l2=None, video_id=None, attacks=("pgd",)):
    """One model, one ε, records written by hand (shapes: sample or attack × sample)."""
    pcf = np.asarray(p_clean_fake, float)
    paf = np.asarray(p_adv_fake, float).reshape(len(attacks), 1, -1)
    n = pcf.size
    y = np.asarray(y)
    pc = (pcf >= 0.5).astype(int)
    pa = (paf >= 0.5).astype(int)
    ib = np.ones_like(paf, bool) if in_budget is None else np.asarray(in_budget, bool).reshape(paf.shape)
    d4 = ("model", "attack", "eps", "sample")
    ones = np.ones_like(paf)
    ds = xr.Dataset(
        {
            "p_adv_fake": (d4, paf[None]),
            "p_adv": (d4, np.where(pc == 1, paf, 1 - paf)[None]),
            "pred_adv": (d4, pa[None]),
            "in_budget": (d4, ib[None]),
            "success": (d4, ((pc == y) & (pa != y))[None]),
            "changed": (d4, (paf != pcf)[None]),
            "l2": (d4, (ones if l2 is None else np.asarray(l2, float).reshape(paf.shape))[None]),
            "linf": (d4, (ones * 0.1 if linf is None else np.asarray(linf, float).reshape(paf.shape))[None]),
            "ssim": (d4, (ones * 0.9 if ssim is None else np.asarray(ssim, float).reshape(paf.shape))[None]),
            "y": (("sample",), y),
            "pred_clean": (("model", "sample"), pc[None]),
            "p_clean": (("model", "sample"), np.where(pc == 1, pcf, 1 - pcf)[None]),
            "p_clean_fake": (("model", "sample"), pcf[None]),
            "x_l2": (("model", "sample"), (np.full(n, 10.0) if x_l2 is None else np.asarray(x_l2, float))[None]),
            "x_linf": (("model", "sample"), np.ones((1, n))),
        },
        coords={"model": ["m"], "attack": list(attacks), "eps": [0.1], "sample": np.arange(n),
                "group": ("sample", np.array(["g1", "g2"] * (n // 2) + ["g1"] * (n % 2), dtype=object)),
                "video_id": ("sample", np.array(video_id if video_id is not None else [""] * n, dtype=object))},
    )
    return ds


# 4 samples; clean P(fake), adversarial P(fake), labels
PC = [0.9, 0.2, 0.6, 0.3]
PA = [0.85, 0.45, 0.3, 0.7]
Y = [1, 0, 1, 1]
# clean preds 1,0,1,0 (3 correct); adv preds 1,0,0,1 -> clean and adv correct: T,T,F,F -> RA = 0.5
# |ΔP(ŷ)| = 0.05, 0.25, 0.30, 0.40


def test_ra_and_rr_by_hand():
    rec = _records(PC, PA, Y)
    assert metrics.clean_accuracy(rec).item() == pytest.approx(0.75)
    assert metrics.robust_accuracy(rec).item() == pytest.approx(0.5)
    rr = metrics.robust_ratio(rec, [0.0, 0.05, 0.25, 0.3, 0.39, 0.4, 1.0]).squeeze()
    assert rr.values.tolist() == pytest.approx([0.0, 0.25, 0.5, 0.75, 0.75, 1.0, 1.0])
    assert np.allclose(metrics.prob_change(rec).squeeze().values, [0.05, 0.25, 0.30, 0.40])


def test_ra_needs_the_clean_prediction_correct():
    # issue 10: RA = mean 1[clean correct ∧ adversarial correct]; the attack moves away from ŷ, so a
    # wrong clean prediction that it pushes onto y is still not robustly correct
    rec = _records([0.3], [0.6], [1])
    assert metrics.clean_accuracy(rec).item() == 0.0
    assert metrics.robust_accuracy(rec).item() == 0.0


def test_rr_is_monotone_in_b():
    rng = np.random.default_rng(0)
    rec = _records(rng.random(50), rng.random(50), rng.integers(0, 2, 50))
    rr = metrics.robust_ratio(rec, np.linspace(0, 1, 41)).squeeze().values
    assert np.all(np.diff(rr) >= 0)
    assert rr[-1] == 1.0


def test_cw_rule_out_of_budget_samples_keep_their_clean_outcome():
    # sample 2 and 3 were "found" outside the radius: change 0 and clean prediction stand
    rec = _records(PC, PA, Y, in_budget=[True, True, False, False])
    assert metrics.robust_accuracy(rec).item() == pytest.approx(0.75)  # clean preds: T,T,T,F
    assert metrics.robust_ratio(rec, [0.0, 0.05, 0.25]).squeeze().values.tolist() == \
        pytest.approx([0.5, 0.75, 1.0])


def test_groupby_group():
    rec = _records(PC, PA, Y)
    ra = metrics.robust_accuracy(rec, groupby="group").squeeze()
    assert ra.sel(group="g1").item() == pytest.approx(0.5)  # samples 0, 2
    assert ra.sel(group="g2").item() == pytest.approx(0.5)  # samples 1, 3 (3: clean wrong)
    with pytest.raises(ValueError, match="groupby='nope'"):
        metrics.robust_accuracy(rec, groupby="nope")


def test_b_outside_unit_interval_is_rejected():
    rec = _records(PC, PA, Y)
    for bad in ([-0.1], [1.5], [float("nan")]):
        with pytest.raises(ValueError, match="expected a probability bound"):
            metrics.robust_ratio(rec, bad)


def test_complementary_by_hand():
    # sample 0: clean correct fake, adversarial real -> success; sample 1: correct, stays; sample 2: wrong
    rec = _records([0.9, 0.2, 0.7, 0.8], [0.2, 0.1, 0.9, 0.4], [1, 0, 0, 1],
                   l2=[2.0, 1.0, 1.0, 4.0], x_l2=[10.0, 10.0, 10.0, 20.0], ssim=[0.8, 1, 1, 0.6])
    comp = metrics.complementary(rec).squeeze()
    # successes: samples 0 (P(adv class=real)=0.8) and 3 (P(real)=0.6)
    assert comp["n_success"].item() == 2
    assert comp["attack_success_rate"].item() == pytest.approx(0.5)
    assert comp["ACAC"].item() == pytest.approx(0.7)
    assert comp["ACTC"].item() == pytest.approx(0.3)
    assert comp["ACTC"].item() == pytest.approx(1 - comp["ACAC"].item())
    assert comp["NTE"].item() == pytest.approx(2 * 0.7 - 1)
    assert comp["ALD_2"].item() == pytest.approx((0.2 + 0.2) / 2)
    assert comp["mean_l2"].item() == pytest.approx(3.0)
    assert comp["ASS"].item() == pytest.approx(0.7)


def test_bootstrap_by_video_resamples_whole_videos():
    n = 100
    vid = ["a"] * 50 + ["b"] * 50
    vals = xr.DataArray(np.r_[np.ones(50), np.zeros(50)], dims="sample",
                        coords={"sample": np.arange(n), "video_id": ("sample", np.array(vid, dtype=object))})
    w = metrics.bootstrap_weights(vals, by="video_id", n_boot=200, seed=1)
    assert np.all(w[:, :50] == w[:, [0]]) and np.all(w[:, 50:] == w[:, [50]])  # one weight per video
    assert np.all(w.sum(1) == n)
    by_video = metrics.bootstrap(vals, by="video_id", n_boot=400, seed=1)
    by_frame = metrics.bootstrap(vals, by="sample", n_boot=400, seed=1)
    assert by_video["estimate"].item() == pytest.approx(0.5) == by_frame["estimate"].item()
    # two videos: a resample is aa, ab or bb -> means 1, 0.5, 0; the 95% CI spans [0, 1]
    assert by_video["lo"].item() == 0.0 and by_video["hi"].item() == 1.0
    assert by_frame["hi"].item() - by_frame["lo"].item() < 0.4
    again = metrics.bootstrap(vals, by="video_id", n_boot=400, seed=1)
    assert again["lo"].item() == by_video["lo"].item() and again["se"].item() == by_video["se"].item()


def test_bootstrap_by_video_needs_video_ids():
    rec = _records(PC, PA, Y)
    with pytest.raises(ValueError, match="by='video_id'"):
        metrics.bootstrap(metrics.correct_adv(rec), by="video_id", n_boot=10)


def test_paired_difference_of_identical_models_is_exactly_zero():
    rng = np.random.default_rng(0)
    v = rng.integers(0, 2, 30).astype(float)
    vals = xr.DataArray(np.stack([v, v, 1 - v]), dims=("model", "sample"),
                        coords={"model": ["a", "b", "c"], "sample": np.arange(30)})
    same = metrics.bootstrap_difference(vals, "model", "a", "b", n_boot=200)
    assert same["lo"].item() == 0.0 and same["hi"].item() == 0.0
    diff = metrics.bootstrap_difference(vals, "model", "a", "c", n_boot=200)
    assert diff["estimate"].item() == pytest.approx(2 * v.mean() - 1)
    assert diff["lo"].item() < diff["estimate"].item() < diff["hi"].item()
    with pytest.raises(ValueError, match="model='z'"):
        metrics.bootstrap_difference(vals, "model", "a", "z")


def test_bootstrap_ci_covers_estimate_and_shrinks_with_n():
    rng = np.random.default_rng(2)
    small = xr.DataArray(rng.integers(0, 2, 40).astype(float), dims="sample")
    big = xr.DataArray(rng.integers(0, 2, 4000).astype(float), dims="sample")
    s = metrics.bootstrap(small, n_boot=300)
    b = metrics.bootstrap(big, n_boot=300)
    assert s["lo"] <= s["estimate"] <= s["hi"]
    assert (b["hi"] - b["lo"]).item() < (s["hi"] - s["lo"]).item() / 3
