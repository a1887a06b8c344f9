"""Power of "some tool beats random" at the estimated effect (faithfulness.power_resampled), on hand-made records."""

from __future__ import annotations

import numpy as np
import pytest

from dfrobust.metrics import faithfulness as faith
from test_xai import _records


def test_a_tool_far_below_random_on_every_pair_has_power_near_one():
    n = 40
    rng = np.random.default_rng(0)
    tool = (rng.random(n) < 0.1).astype(int)                  # fools about 90 % of the fakes; random fools none
    ds = _records({"t": tool, "random": np.ones(n, int)}, identity=[f"id{i}" for i in range(n)])
    assert faith.tool_verdicts(ds, margin=0.1, n_boot=500).iloc[0]["verdict"] == "holds"
    p = faith.power_resampled(ds, "m", margin=0.1, n_sim=60, n_boot=200)
    assert p["power"] >= 0.95 and p["power_2n"] >= 0.95
    assert p["n"] == n and p["n_2n"] == 2 * n and p["n_sim"] == 60 and p["claim"] == "some tool beats random on m"


def test_tools_identical_to_random_have_power_zero():
    n = 60
    rng = np.random.default_rng(1)
    rand = (rng.random(n) > 0.3).astype(int)                  # random fools 30 % of the fakes; the tools the same ones
    ds = _records({"t1": rand, "t2": rand.copy(), "random": rand.copy()})
    p = faith.power_resampled(ds, "m", margin=0.05, n_sim=40, n_boot=100)
    assert p["power"] == 0 and p["power_2n"] == 0             # no discordant pair: never "holds", at any n


def test_a_weak_effect_gains_power_at_twice_the_units():
    n = 40
    rng = np.random.default_rng(1)
    tool = (rng.random(n) > 0.2).astype(int)                  # Δ ≈ -0.09 against a margin of 0.05: undecided at n
    ds = _records({"t": tool, "u": np.ones(n, int), "random": np.ones(n, int)})
    assert (faith.tool_verdicts(ds, margin=0.05, n_boot=500)["verdict"] != "holds").all()
    p = faith.power_resampled(ds, "m", margin=0.05, n_sim=100, n_boot=200)
    assert 0 < p["power"] < 0.6
    assert p["power_2n"] >= p["power"] + 0.05                 # measured 0.17 -> 0.38 (seed 0)


def test_pairs_of_one_identity_are_resampled_together():
    n = 30
    rng = np.random.default_rng(2)
    tool = (rng.random(n) > 0.35).astype(int)
    rand = np.ones(n, int)
    single = _records({"t": tool, "random": rand}, identity=[f"id{i:02d}" for i in range(n)])
    # every pair twice, both copies from one identity: 60 pairs, 30 units
    twice = _records({"t": np.repeat(tool, 2), "random": np.repeat(rand, 2)},
                     identity=[f"id{i // 2:02d}" for i in range(2 * n)])
    a = faith.power_resampled(single, "m", margin=0.1, n_sim=50, n_boot=100)
    b = faith.power_resampled(twice, "m", margin=0.1, n_sim=50, n_boot=100)
    assert (b["n"], b["n_pairs"], b["n_2n"]) == (n, 2 * n, 2 * n)
    # a copy travels with its identity, so the doubled records carry no more information: the same power;
    # resampling pairs instead would count 60 units and give more
    assert (b["power"], b["power_2n"]) == (a["power"], a["power_2n"])
    assert 0 < a["power"] < 1
    apart = _records({"t": np.repeat(tool, 2), "random": np.repeat(rand, 2)},   # the same 60 pairs, 60 identities
                     identity=[f"id{i:02d}" for i in range(2 * n)])
    c = faith.power_resampled(apart, "m", margin=0.1, n_sim=50, n_boot=100)
    assert c["n"] == 2 * n and c["power"] > a["power"]      # measured 0.90 against 0.66
    one = faith.power_resampled(_records({"t": tool, "random": rand}, identity=["a"] * n), "m", n_sim=5)
    assert one["n"] == 1 and np.isnan(one["power"]) and "fewer than 2 identities" in one["note"]


def test_bad_input_names_the_value():
    ds = _records({"t": np.zeros(10, int), "random": np.ones(10, int)})
    with pytest.raises(ValueError, match=r"n_sim=0"):
        faith.power_resampled(ds, "m", n_sim=0)
    with pytest.raises(ValueError, match=r"model='nope'"):
        faith.power_resampled(ds, "nope")
    with pytest.raises(ValueError, match=r"baseline='rnd'"):
        faith.power_resampled(ds, "m", baseline="rnd")
