"""Chapter 03's validation call, quality-gate stand-in and table builders (no model runs)."""

import ast
import inspect

import numpy as np
import pytest
import xarray as xr

from dfrobust.experiments import records, robustness
from dfrobust.study import declared_parameters
from conftest import ROOT

TEMPLATE = ROOT / "notebooks" / "03_robustness.ipynb"


def _defaults():
    return {k: ast.literal_eval(v["default"]) for k, v in declared_parameters(TEMPLATE).items()}


def test_check_params_takes_every_notebook_parameter():
    declared = set(declared_parameters(TEMPLATE))
    accepted = set(inspect.signature(robustness.check_params).parameters)
    assert declared == accepted


def test_check_params_defaults_give_a_log_grid_and_reference_cell():
    p = robustness.check_params(**_defaults())
    assert p["eps_grid"][0] == 0.0 and len(p["eps_grid"]) == _defaults()["n_eps"] + 1
    assert p["eps_ref"] in p["eps_grid"] and p["eps_ref"] > 0
    assert p["b_ref"] in p["b_grid"]


def test_check_params_sets_up_the_run_and_returns_provenance():
    import json

    import torch

    d = {**_defaults(), "seed": 5, "device": "cpu"}
    p = robustness.check_params(**d)
    assert p["attacks"] == ["fgsm", "pgd", "cwinf", "rr"]  # the chapter's default sweep
    assert p["device"] == torch.device("cpu")
    assert p["attack_kw"] == {a: {"steps": d["pgd_steps"]} for a in ("pgd", "cwinf", "rr")}
    assert p["cw_kw"]["search_steps"] == d["cw_search_steps"] and p["cw_kw"]["c_init"] == d["cw_c_init"]
    prov = json.loads(json.dumps(p["params"]))  # serialisable provenance
    assert prov["seed"] == 5 and prov["eps_ref"] == p["eps_ref"] and prov["cw_kw"]["steps"] == d["cw_steps"]
    torch.manual_seed(123)
    first = torch.rand(3)
    torch.manual_seed(123)
    robustness.check_params(**{**d, "seed": 7})
    assert torch.equal(first, torch.rand(3))  # checking has no side effect: no seeding (prepare_run's job)
    assert p["claims"] == robustness.subclaims() and prov["claims"]["alpha"] == p["claims"]["alpha"]


@pytest.mark.parametrize("key,value,match", [
    ("models", "meso4,vgg", "models: 'vgg' is unknown"),
    ("models", "meso4,meso4", "duplicate meso4"),
    ("attacks", "pgd,pgd", "duplicate pgd"),
    ("attacks", "nope", "attacks: 'nope' is unknown"),
    ("eps_min", 0.0, "eps_min=0.0"),
    ("eps_max", 0.001, "eps_max=0.001"),
    ("n_eps", 0, "n_eps=0"),
    ("n_b", 1, "n_b=1"),
    ("n_samples", 0, "n_samples=0"),
    ("n_boot", 1, "n_boot=1"),
    ("min_val_auc", 1.5, "min_val_auc=1.5"),
    ("target_half_width", 0, "target_half_width=0"),
    ("profile", "huge", "profile='huge'"),
    ("device", "tpu", "device='tpu'"),
    ("attacks", "pgd,cw", "cw has no budget"),
    ("cw_c_init", 0.0, "cw_c_init=0.0"),
    ("cw_c_init", 5e3, "cw_c_init=5000.0"),
    ("cw_search_steps", 0, "cw_search_steps=0"),
    ("cw_steps", 0, "cw_steps=0"),
    ("cw_lr", 0.0, "cw_lr=0.0"),
    ("pgd_steps", 0, "pgd_steps=0"),
    ("shard_size", 0, "shard_size=0"),
    ("workers", -1, "workers=-1"),
])
def test_check_params_names_the_bad_parameter(key, value, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        robustness.check_params(**{**_defaults(), key: value})


def test_attack_options_give_steps_to_iterative_attacks_only():
    kw = records.attack_options(["fgsm", "pgd", "cwinf", "rr"], steps=4)
    assert kw == {"pgd": {"steps": 4}, "cwinf": {"steps": 4}, "rr": {"steps": 4}}
    assert records.budgeted_linf(["fgsm", "pgd", "pgdl2", "cw"]) == ["fgsm", "pgd"]
    cw = records.cw_options(c_init=2.0, search_steps=4, steps=7, lr=0.05)
    assert (cw["c_init"], cw["search_steps"], cw["steps"], cw["lr"]) == (2.0, 4, 7, 0.05)


def test_bound_table_is_zero_for_the_attack_that_is_the_worst_case():
    from test_metrics import _records

    rec = _records([0.9, 0.2, 0.6, 0.3], [[0.85, 0.45, 0.3, 0.3], [0.55, 0.25, 0.55, 0.3]], [1, 0, 1, 1],
                   attacks=("fgsm", "pgd"))
    rec = records.with_worst_case(rec)
    t = robustness.bound_table(rec, eps=0.1, b=0.1, n_boot=200)
    # fgsm: changes .05 .25 .30 0 (RR .5); pgd .35 .05 .05 0 (RR .75); worst .35 .25 .30 0 (RR .25)
    assert t.set_index("attack")["tightening"].to_dict() == pytest.approx({"fgsm": 0.25, "pgd": 0.5})
    assert (t["lo"] <= t["tightening"]).all() and (t["tightening"] <= t["hi"]).all()


def _two_attack_records():
    from test_metrics import _records

    # p_clean_fake .9 .2 .6 .3 (ŷ = 1 0 1 0); pgd changes .05 .05 .30 0; rr changes .35 .25 .30 .15
    return _records([0.9, 0.2, 0.6, 0.3], [[0.85, 0.25, 0.3, 0.3], [0.55, 0.45, 0.3, 0.45]], [1, 0, 1, 1],
                    attacks=("pgd", "rr"))


def test_tightening_table_is_the_paired_rr_difference():
    t = robustness.tightening_table(_two_attack_records(), [0.0, 0.1, 0.2], loose="pgd", tight="rr", n_boot=200)
    assert sorted(t["b"].unique()) == [0.1, 0.2]  # b = 0 excluded
    row = t.set_index("b").loc[0.1]
    # b = .1: pgd within b on 3 of 4 (RR .75), rr on 0 of 4 (RR 0): tightening .75
    assert (row["RR_loose"], row["RR_tight"], row["tightening"]) == pytest.approx((0.75, 0.0, 0.75))
    assert row["lo"] <= 0.75 <= row["hi"] and row["lo"] > 0
    assert t.set_index("b").loc[0.2, "tightening"] == pytest.approx(0.5)  # pgd .75, rr .25
    with pytest.raises(ValueError, match="tight='cw'"):
        robustness.tightening_table(_two_attack_records(), [0.1], tight="cw")


def _minimal(l2, p_clean, p_adv, y, pred):
    n = len(l2)
    return xr.Dataset({"l2_min": (("model", "sample"), [l2]), "p_clean": (("model", "sample"), [p_clean]),
                       "p_adv": (("model", "sample"), [p_adv]), "y": ("sample", y),
                       "pred_clean": (("model", "sample"), [pred]),
                       "linf_at_min": (("model", "sample"), [[v / 10 for v in l2]])},
                      coords={"model": ["m"], "sample": np.arange(n)})


def test_minimal_readings_count_flips_within_the_radius():
    inf = np.inf
    mn = _minimal([0.5, 1.0, inf, 2.0], [0.9, 0.6, 0.8, 0.7], [0.3, 0.45, 0.8, 0.4], [1, 1, 0, 0], [1, 1, 1, 0])
    ps = robustness.minimal_per_sample(mn, [0.0, 0.5, 1.5, 3.0], [0.1, 0.2])
    # clean correct: samples 0, 1, 3; flipped within r when l2_min <= r
    np.testing.assert_array_equal(ps["correct"].mean("sample").values[0], [0.75, 0.5, 0.25, 0.0])
    # changes at the flip: .6 .15 (none) .3; at b = .2 sample 1 stays within b even once flipped
    np.testing.assert_array_equal(ps["robust"].sel(b=0.2).mean("sample").values[0], [1.0, 0.75, 0.75, 0.5])
    np.testing.assert_array_equal(ps["robust"].sel(b=0.1).mean("sample").values[0], [1.0, 0.75, 0.5, 0.25])
    cur = robustness.minimal_curves(mn, [0.0, 1.5], 0.2, n_boot=200)
    ra = cur[cur["metric"] == "RA"].set_index("r")["value"]
    assert ra.to_dict() == pytest.approx({0.0: 0.75, 1.5: 0.25})
    assert ((cur["lo"] <= cur["value"]) & (cur["value"] <= cur["hi"])).all()
    with pytest.raises(ValueError, match="radii="):
        robustness.minimal_per_sample(mn, [-1.0], [0.1])


def test_minimal_summary_counts_unflipped_samples_as_infinite():
    inf = np.inf
    half = _minimal([0.5, 1.0, inf], [0.9] * 3, [0.4] * 3, [1, 1, 1], [1, 1, 1])
    s = robustness.minimal_summary(half, n_boot=300).iloc[0]
    assert s["median_l2"] == 1.0 and s["found"] == pytest.approx(2 / 3)
    assert s["median_lo"] <= 1.0 <= s["median_hi"] and np.isfinite(s["median_lo"])
    most = _minimal([0.5, inf, inf], [0.9] * 3, [0.4] * 3, [1, 1, 1], [1, 1, 1])
    s = robustness.minimal_summary(most, n_boot=300).iloc[0]
    assert np.isinf(s["median_l2"])  # fewer than half flipped: the median is not reached (not 0.5)
    assert s["median_linf"] == pytest.approx(0.05)
    g = robustness.radius_grid(half, n=5)
    assert g[0] == 0 and g[-1] == pytest.approx(1.05) and len(g) == 5


def test_minimal_and_tightening_figures():
    from dfrobust.figures import robustness as rfig

    inf = np.inf
    mn = _minimal([0.5, 1.0, inf, 2.0], [0.9, 0.6, 0.8, 0.7], [0.3, 0.45, 0.8, 0.4], [1, 1, 0, 0], [1, 1, 1, 0])
    fig = rfig.minimal_distribution(mn)
    step = fig.axes[0].lines[0]
    np.testing.assert_allclose(step.get_ydata(), [0, 0.25, 0.5, 0.75])  # ends at 3/4: one never flipped
    cur = robustness.minimal_curves(mn, robustness.radius_grid(mn, 9), 0.1, n_boot=50)
    assert len(rfig.minimal_curves(cur).axes) == 2
    t = robustness.tightening_table(_two_attack_records(), [0.1], n_boot=50)
    assert len(rfig.tightening(t, b=0.1).axes) == 1


def test_chapter_is_thin_one_check_one_prepare_run_one_glue():
    import nbformat

    nb = nbformat.read(TEMPLATE, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    src = "\n".join(code)
    assert src.count("from_namespace(robustness.check_params, globals())") == 1
    assert src.count("prepare_run(") == 1 and src.count("glue_result(") == 1 and "glue(" not in src.replace("glue_result(", "")
    assert "def " not in src and "lambda" not in src
    logic = [c for c in nb.cells if c.cell_type == "code" and "parameters" not in c.metadata.get("tags", [])]
    assert max(len(c.source.splitlines()) for c in logic) <= 15
    assert sum(len(c.splitlines()) for c in code) <= 120
    d = _defaults()
    assert d["attacks"] == "fgsm,pgd,cwinf,rr"
    assert {"cw_c_init", "cw_search_steps", "cw_steps", "cw_lr"} <= set(d) and "cw_c" not in d
    assert not {"ra_margin", "rr_margin", "alpha", "ra_lo", "ra_hi", "radii"} & set(d)  # sub-claims: study.yml


def _identity_records(n=200):
    """The verdict tests' 'equal RA, different RR' records with two images per identity."""
    from test_verdicts import _equal_ra_different_rr

    rec = _equal_ra_different_rr(n=n)
    return rec.assign_coords(identity=("sample", np.repeat([f"id{i:03d}" for i in range(n // 2)], 2)))


def test_subclaims_are_read_from_the_study_spec_and_checked():
    c = robustness.subclaims()
    assert set(c["sub_claims"]) == {"similar_ra", "different_rr", "literal"} and 0 < c["alpha"] < 0.25
    assert all(s["primary"] for s in c["sub_claims"].values()) and c["by_construction"]
    from dfrobust.core.profiles import load_spec

    spec = load_spec()
    bad = {**spec, "notebooks": [{**e, "claims": {**e["claims"], "alpha": 0.6}} if e["name"] == "03_robustness"
                                 else e for e in spec["notebooks"]]}
    with pytest.raises(ValueError, match=r"^claims.alpha=0.6: expected"):
        robustness.subclaims(bad)


def test_decide_claims_reports_identities_power_and_one_sentence_per_sub_claim():
    from dfrobust import metrics
    from dfrobust.metrics.bootstrap import cluster_unit

    rec = _identity_records()
    claims = robustness.subclaims()
    unit = cluster_unit(rec)
    d = robustness.decide_claims(rec, metrics.linspace_grid(0.2, 21, what="b"), claims, by=unit, n_boot=300,
                                 n_sim=20, sim_boot=100)
    assert unit == "identity" and d["deciding"] == ("pgd", "a", "b")
    assert d["sub"]["literal"].verdict == "holds" and d["sub"]["literal"].n == 100  # identities, not 200 images
    assert d["power"]["literal"] >= 0.8 and d["n_needed"] == 100
    text = robustness.claim_sentences(d, claims, unit=unit)
    assert text.count("\n- ") == 3 and "n = 100 identities" in text and "simulated power" in text


def test_sections_read_real_records_into_one_page_result(tmp_path):
    """analyse → decide_rows → chapter_result on records of the real engine (two tiny detectors)."""
    import pandas as pd
    import torch

    from dfrobust import metrics
    from dfrobust.core.results import ChapterResult
    from dfrobust.figures import robustness as rfig
    from toys import SmallNet

    n = 16
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(n, 3, 8, 8, generator=g), torch.arange(n) % 2
    meta = pd.DataFrame({"identity": [f"id{i // 2}" for i in range(n)], "group": ["asian_male", "african_female"] * 8,
                         "label": labels.numpy(), "path": [f"synth/img{i}.png" for i in range(n)]})
    rec = records.with_worst_case(records.attack_records(
        {"m1": SmallNet(1), "m2": SmallNet(2)}, ["pgd", "rr"], [0.0, 0.01, 0.05], images, labels, meta,
        attack_kw={"pgd": {"steps": 2}, "rr": {"steps": 2}}, device="cpu"))
    b_grid = metrics.linspace_grid(0.2, 5, what="b")
    cfg = {"claims": robustness.subclaims(), "b_grid": b_grid, "eps_ref": 0.01, "b_ref": 0.1,
           "attacks": ["pgd", "rr"], "params": {"rr_level": 0.9}}
    a = robustness.analyse(cfg, rec, analysed=["m1", "m2"], n_boot=50, seed=0, out_dir=tmp_path, n_sim=3)
    assert a.unit == "identity" and a.result.values["n_units"] == "8 identities"
    assert set(a.result.tables["claims"]["n"]) == {8} and set(a.result.tables["claims"]["unit"]) == {"identity"}
    assert a.result.values["answer"].count("n = 8 identities") == 3
    decide = robustness.decide_rows(a, cfg, target_half_width=0.07, out_dir=tmp_path)
    assert decide.columns[2] == "n (identities)" and (tmp_path / "rr_verdicts.csv").is_file()
    cw = robustness.Minimal(ChapterResult(values={"cw_settings": "-", "cw_medians": "-", "cw_time_s": 0.0}))
    res = rfig.chapter_result(ChapterResult(values={"data_label": "synthetic"}), a, cw, p=cfg, decide=decide)
    assert {"fig1_b", "claim_fig", "tight_fig", "cw_fig_dist"} <= set(res.figures)
    assert {"claim_verdict", "claim_counts", "decide_table", "answer", "ex1_answer"} <= set(res.values)
    assert res.values["answer"].data.count("\n- ") == 3  # one bullet per sub-claim, then the n for the power
    assert {"rr_metrics.nc", "rr_complementary.nc"} <= {p.name for p in tmp_path.iterdir()}


def test_records_and_skipped_files_keep_paths_relative_to_the_data_home(tmp_path, monkeypatch):
    import pandas as pd
    import torch

    from toys import SmallNet

    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path))
    inside = tmp_path / "synth" / "quick" / "img0.png"
    assert records.home_relative(inside) == "synth/quick/img0.png"
    assert records.home_relative("/elsewhere/data/ffpp/a.png") == "…/ffpp/a.png"
    meta = pd.DataFrame({"path": [str(inside), "/elsewhere/data/ffpp/a.png"], "label": [0, 1]})
    rec = records.attack_records({"m": SmallNet(0)}, ["fgsm"], [0.0, 0.01], torch.rand(2, 3, 8, 8),
                                    torch.tensor([0, 1]), meta, device="cpu")
    assert list(rec["path"].values) == ["synth/quick/img0.png", "…/ffpp/a.png"]  # the old code kept str(tmp_path)
    bad = pd.DataFrame({"path": [str(inside), str(inside)], "label": [0, 1], "split": "test"})
    inside.parent.mkdir(parents=True)
    inside.write_bytes(b"not an image")
    with pytest.raises(FileNotFoundError, match="synth/quick/img0.png") as err:
        records.load_samples(bad, 8)
    assert str(tmp_path) not in str(err.value)
