"""XAI experiment records: pairing, dims/coords, reductions, deletion/insertion, rank agreement."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from torch import nn

from dfrobust.experiments import xai
from dfrobust.core.results import load, save
from dfrobust.data import sampling
from dfrobust.metrics import faithfulness as faith

torch.set_num_threads(1)


class Toy(nn.Module):
    def __init__(self, size, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.input_size = size
        self.f = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1), nn.ReLU(),
                               nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.f(x)


def _manifest(n=3):
    rows = []
    for i in range(n):
        for lab in (1, 0):
            rows.append(dict(path=f"{'fr'[lab == 0]}{i}", label=lab, pair_id=f"p{i}", split="test",
                             group=["asian_male", "african_female"][i % 2], dataset="synthetic",
                             manipulation="faceswap" if lab else "none", identity=f"id{i}"))
    rows.append(dict(path="lonely", label=1, pair_id="", split="test", group="", dataset="synthetic",
                     manipulation="faceswap", identity="x"))
    return pd.DataFrame(rows)


def _load(df, size):
    out = []
    for p in df["path"]:
        g = torch.Generator().manual_seed(sum(map(ord, p)) * 1000 + size)
        out.append(torch.rand(3, size, size, generator=g))
    return torch.stack(out)


def test_select_pairs_links_fake_to_its_real():
    pairs = sampling.select_pairs(_manifest(), 10)
    assert len(pairs) == 3                                     # the unpaired fake is left out
    assert (pairs["label"] == 1).all() and (pairs["real_label"] == 0).all()
    assert (pairs["path"].str[1:] == pairs["real_path"].str[1:]).all()
    with pytest.raises(ValueError, match="pair_id"):
        sampling.select_pairs(_manifest().assign(pair_id=""), 2)


@pytest.fixture(scope="module")
def run():
    pairs = sampling.select_pairs(_manifest(), 3)
    return xai.run_xai({"a": Toy(24), "b@28": Toy(28, 1)}, pairs, tools=["gradcam", "rise", "random"],
                       top_k="1,4", n_segments=12, seed=0, device="cpu", keep=1, load=_load,
                       nes={"steps": 3, "n_pairs": 2, "eps": 0.05},
                       explain_options={"rise": {"n_masks": 16, "cells": 3}})


def test_records_dims_coords_and_roundtrip(run, tmp_path):
    ds = run.records
    assert dict(ds["p_fake_adv"].sizes) == {"model": 2, "tool": 3, "k": 2, "pair": 3}
    assert list(ds["input_size"].values) == [24, 28] and list(ds["arch"].values) == ["a", "b"]
    assert set(ds["group"].values) == {"asian_male", "african_female"}
    assert (ds["mask_fraction"].sel(k=4) >= ds["mask_fraction"].sel(k=1)).all()
    assert ((ds["p_fake_adv"] >= 0) & (ds["p_fake_adv"] <= 1)).all()
    assert run.gallery["b@28"]["adv"].shape == (3, 2, 1, 3, 28, 28)
    back = load(save(ds, tmp_path / "xai.nc"))
    xr.testing.assert_allclose(back["p_fake_adv"], ds["p_fake_adv"])


def test_reductions_match_direct_computation(run):
    ds = run.records
    acc = faith.adv_accuracy(ds)
    manual = (ds["p_fake_adv"].values > 0.5).mean(-1)
    np.testing.assert_allclose(acc.values, manual)
    table = faith.accuracy_table(ds, n_resamples=200)
    assert len(table) == 2 * 3 * 2
    row = table[(table.model == "b@28") & (table.tool == "rise") & (table.k == 4)].iloc[0]
    assert row.adv_acc == pytest.approx(manual[1, 1, 1])
    assert row.ci_low <= row.adv_acc <= row.ci_high
    assert row.clean_acc == pytest.approx((ds["p_fake_clean"].values[1] > 0.5).mean())
    by = faith.accuracy_table(ds, by="group", n_resamples=50)
    assert set(by["group"]) == {"asian_male", "african_female"} and by["n"].sum() == 2 * 3 * 2 * 3
    tt = xai.time_table(ds)
    assert len(tt) == 6 and (tt["explain_s"] >= 0).all()


def test_attack_never_raises_fake_accuracy_above_clean(run):
    ds = run.records
    # NES only moves a fake toward "real" and stops once it is classified real
    assert (faith.adv_accuracy(ds) <= faith.clean_accuracy(ds) + 1e-9).all()
    assert ((ds["success"] == 1) == (ds["p_fake_adv"] <= 0.5)).all()


def test_rank_agreement_on_hand_made_scores():
    tools, n = ["t1", "t2", "t3", "t4"], 2
    acc = np.array([0.9, 0.6, 0.3, 0.1])                      # t4 most faithful by the attack
    p_adv = np.repeat(np.where(np.arange(10)[None] < (acc * 10)[:, None], 0.9, 0.1)[:, None, :], 1, 1)
    ds = xr.Dataset({"p_fake_adv": (("model", "tool", "k", "pair"), p_adv[None]),
                     "deletion_auc": (("model", "tool", "pair"), np.tile([0.8, 0.6, 0.5, 0.2], (1, 10, 1)).transpose(0, 2, 1)),
                     "insertion_auc": (("model", "tool", "pair"), np.tile([0.1, 0.3, 0.4, 0.9], (1, 10, 1)).transpose(0, 2, 1))},
                    coords={"model": ["m"], "tool": tools, "k": [1], "pair": np.arange(10)})
    sc = faith.faithfulness_scores(ds)
    np.testing.assert_allclose(sc["attack_score"], 1 - acc)
    ra = faith.rank_agreement(ds).iloc[0]
    assert ra["tau_del_ins_score"] == pytest.approx(1.0) and ra["tau_deletion"] == pytest.approx(1.0)
    ds2 = ds.assign(insertion_auc=ds["insertion_auc"][:, ::-1].assign_coords(tool=tools),
                    deletion_auc=ds["deletion_auc"][:, ::-1].assign_coords(tool=tools))
    assert faith.rank_agreement(ds2).iloc[0]["tau_del_ins_score"] == pytest.approx(-1.0)


def test_deletion_insertion_rewards_the_right_segment():
    class Left(nn.Module):      # P(real) rises with the brightness of the left half only
        def __init__(self):
            super().__init__()
            self.p = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            z = 8 * (x[:, :, :, :4].mean((1, 2, 3)) - 0.25)
            return torch.stack([z, -z], 1)

    x = torch.full((1, 3, 8, 8), 0.6)
    seg = np.zeros((1, 8, 8), int)
    seg[:, :, 4:] = 1
    good, bad = [np.array([0, 1])], [np.array([1, 0])]
    d_good, i_good = xai.deletion_insertion(Left(), x, seg, good, 0, n_steps=2)
    d_bad, i_bad = xai.deletion_insertion(Left(), x, seg, bad, 0, n_steps=2)
    assert d_good[0] < d_bad[0]
    assert i_good[0] >= i_bad[0]


def test_bad_parameters_raise():
    pairs = sampling.select_pairs(_manifest(), 2)
    with pytest.raises(ValueError, match="tools"):
        xai.run_xai({"a": Toy(16)}, pairs, tools=["shap"], load=_load)
    with pytest.raises(ValueError, match="top_k"):
        xai.run_xai({"a": Toy(16)}, pairs, top_k="1,x", load=_load)
    with pytest.raises(ValueError, match="nes options"):
        xai.run_xai({"a": Toy(16)}, pairs, nes={"iters": 3}, load=_load)
