"""Chapter 03's validation call, quality-gate stand-in and table builders (no model runs)."""

import ast
import inspect

import numpy as np
import pytest
import xarray as xr

from dfrobust.experiments import robustness
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
    ("ra_margin", 0.0, "ra_margin=0.0"),
    ("alpha", 0.6, "alpha=0.6"),
    ("ra_hi", 0.1, "ra_hi=0.1"),
    ("radii", "some", "radii='some'"),
    ("min_val_auc", 1.5, "min_val_auc=1.5"),
    ("target_half_width", 0, "target_half_width=0"),
    ("profile", "huge", "profile='huge'"),
    ("device", "tpu", "device='tpu'"),
])
def test_check_params_names_the_bad_parameter(key, value, match):
    with pytest.raises(ValueError, match=match.replace("(", r"\(")):
        robustness.check_params(**{**_defaults(), key: value})


def test_quality_gate_stand_in_excludes_near_chance():
    g = robustness.quality_gate({"good": 0.93, "coin": 0.52, "nan": float("nan")}, 0.7)
    assert g["analysed"].tolist() == [True, False, False]
    assert g.loc[1, "status"] == "not analysed: near chance (val AUC 0.52 < 0.70)"
    rec = xr.Dataset({"val_auc": ("epoch", [0.5, 0.8, 0.7]), "best_epoch": 2})
    assert robustness.validation_auc(rec) == 0.8


def test_attack_options_give_steps_to_iterative_attacks_only():
    kw = robustness.attack_options(["fgsm", "pgd", "cw"], steps=4, cw={"c": 2.0})
    assert kw == {"pgd": {"steps": 4}, "cw": {"c": 2.0}}
    assert robustness.budgeted_linf(["fgsm", "pgd", "pgdl2", "cw"]) == ["fgsm", "pgd"]


def test_bound_table_is_zero_for_the_attack_that_is_the_worst_case():
    from test_metrics import _records

    rec = _records([0.9, 0.2, 0.6, 0.3], [[0.85, 0.45, 0.3, 0.3], [0.55, 0.25, 0.55, 0.3]], [1, 0, 1, 1],
                   attacks=("fgsm", "pgd"))
    rec = robustness.with_worst_case(rec)
    t = robustness.bound_table(rec, eps=0.1, b=0.1, n_boot=200)
    # fgsm: changes .05 .25 .30 0 (RR .5); pgd .35 .05 .05 0 (RR .75); worst .35 .25 .30 0 (RR .25)
    assert t.set_index("attack")["tightening"].to_dict() == pytest.approx({"fgsm": 0.25, "pgd": 0.5})
    assert (t["lo"] <= t["tightening"]).all() and (t["tightening"] <= t["hi"]).all()
