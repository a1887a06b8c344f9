"""The quality gate's second rule (issue 23, item 6): a detector whose chapter-02 "learned" claim is refuted is
not analysed by the attack chapters, unless the profile keeps it with a reason; without chapter 02's verdicts the
gate is the validation-AUC rule and says so."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import xarray as xr

from dfrobust.experiments import models as ch02
from dfrobust.models import gate as G


def _td(test_auc: float, val_auc: float = 0.9, ckpt: str = "x.pt", n: int = 400, n_fake: int = 200):
    rec = xr.Dataset({"auc": ("subset", [test_auc]), "n": ("subset", [n]), "n_fake": ("subset", [n_fake]),
                      "val_auc_best": val_auc}, coords={"subset": ["all"]})
    return SimpleNamespace(record=rec, checkpoint=Path("/ckpt") / ckpt)


def _trained():
    # meso4 clears 0.95 (holds); mesoinception4's whole interval is under 0.95 (refuted, as at the default
    # profile: test AUC 0.763); resnet34 sits on its 0.85 target (inconclusive); xception is near chance
    return {"meso4": _td(0.997, ckpt="meso4-a.pt"), "mesoinception4": _td(0.763, ckpt="mi4-a.pt"),
            "resnet34": _td(0.86, ckpt="r34-a.pt"), "xception": _td(0.99, val_auc=0.55, ckpt="x-a.pt")}


def _learned(trained):
    """Chapter 02's verdict rows as the gate reads them, through chapter 02's own functions."""
    return ch02.learned_table(trained, ch02.decide_table(trained, G.quality_gate(trained)))


def test_a_refuted_detector_is_excluded_and_holds_or_inconclusive_ones_pass():
    trained = _trained()
    learned = _learned(trained)
    assert learned.set_index("model")["verdict"].to_dict() == {
        "meso4": "holds", "mesoinception4": "refuted", "resnet34": "inconclusive", "xception": "holds"}
    gate = G.quality_gate(trained, 0.7, learned=learned).set_index("model")
    assert gate["analysed"].to_dict() == {"meso4": True, "mesoinception4": False, "resnet34": True, "xception": False}
    status = gate.loc["mesoinception4", "status"]
    # the reason names the claim, the test AUC against its target and the 95 % interval
    assert status.startswith("not analysed: chapter 02's learned claim refuted (test AUC 0.76 < 0.95, 95 % interval [")
    lo, hi = (float(v) for v in status.split("[")[1].rstrip("])").split(", "))
    assert lo < 0.763 < hi < 0.95
    assert gate.loc["xception", "status"] == "not analysed: near chance (val AUC 0.55 < 0.70)"  # the first rule first
    assert gate.loc["meso4", "status"] == gate.loc["resnet34", "status"] == "analysed"
    assert G.analysed_models(trained, learned=learned) == ["meso4", "resnet34"]
    text = G.gate_sentence(gate.reset_index(), 0.7)
    assert "mesoinception4 (chapter 02's learned claim refuted (test AUC 0.76 < 0.95" in text
    assert "rule: validation AUC ≥ 0.70 and chapter 02's learned claim not refuted" in text


def test_a_profile_may_keep_a_refuted_detector_and_the_page_prints_why():
    trained = _trained()
    gate = G.quality_gate(trained, 0.7, learned=_learned(trained), keep={"mesoinception4": "the paper's architecture"})
    row = gate.set_index("model").loc["mesoinception4"]
    assert row["analysed"] and row["learned"] == "refuted"
    assert row["status"].startswith("analysed although chapter 02's learned claim is refuted (test AUC 0.76 < 0.95")
    assert row["status"].endswith(": the paper's architecture")
    assert "Kept: mesoinception4 (although chapter 02's learned claim is refuted" in G.gate_sentence(gate, 0.7)
    # keeping never overrides the validation-AUC rule
    assert not G.quality_gate(trained, 0.7, learned=_learned(trained), keep={"xception": "r"}).set_index(
        "model").loc["xception", "analysed"]


def test_without_chapter_02s_verdicts_the_gate_is_the_val_auc_rule_and_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("DFROBUST_DATA_HOME", str(tmp_path))
    why = G.learned_verdicts("default")
    assert isinstance(why, str) and "absent" in why
    gate = G.study_gate(_trained(), 0.7, "default").set_index("model")
    assert gate.loc["mesoinception4", "analysed"]                    # refuted, but nobody read the verdict
    assert gate.loc["mesoinception4", "learned"] == f"not checked: {why}"
    assert G.gate_rule(gate.reset_index(), 0.7) == f"validation AUC ≥ 0.70 only ({why})"
    # a verdict file from before the rule (no model/checkpoint columns): the same fallback, with the reason
    (tmp_path / "results" / "default").mkdir(parents=True, exist_ok=True)
    path = tmp_path / "results" / "default" / G.VERDICTS_FILE
    ch02.decide_table(_trained(), G.quality_gate(_trained())).to_csv(path, index=False)
    assert "rerun 02_models" in G.learned_verdicts("default")
    # chapter 02's file, as its run() writes it: the gate reads it and excludes the refuted detector
    trained = _trained()
    decide = ch02.decide_table(trained, G.quality_gate(trained), pd.DataFrame({"abs_diff": [1e-7]}))
    names = [*trained, None]
    decide.assign(model=names, checkpoint=[trained[m].checkpoint.name if m else None for m in names]).to_csv(
        path, index=False)
    assert len(G.learned_verdicts("default")) == 4                     # the port row names no detector
    assert G.study_gate(trained, 0.7, "default")["analysed"].tolist() == [True, False, True, False]


def test_verdicts_are_matched_by_checkpoint_so_other_weights_are_not_judged():
    trained = _trained()
    learned = _learned(trained)
    retrained = {"mesoinception4": _td(0.763, ckpt="mi4-b.pt"), "xception@299": _td(0.9, ckpt="x-299.pt"),
                 "resnet34": _td(0.9, ckpt="r34-a.pt")}
    gate = G.quality_gate(retrained, 0.7, learned=learned).set_index("model")
    assert gate.loc["mesoinception4", "analysed"]
    assert gate.loc["mesoinception4", "learned"] == "not checked: chapter 02 judged other weights of it (rerun 02_models)"
    assert gate.loc["xception@299", "learned"].startswith("not checked: chapter 02 judged other weights")
    assert gate.loc["resnet34", "learned"] == "inconclusive"
    # bare AUCs (no checkpoint) are matched by name
    assert not G.quality_gate({"mesoinception4": 0.9}, 0.7, learned=learned)["analysed"].iloc[0]
    assert G.quality_gate({"other": 0.9}, 0.7, learned=learned)["learned"].iloc[0] == \
        "not checked: not among chapter 02's detectors"


def test_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(ValueError, match=r"learned=5: expected chapter 02's verdict table"):
        G.quality_gate({"a": 0.9}, learned=5)
    with pytest.raises(ValueError, match=r"learned: columns \['checkpoint'"):
        G.quality_gate({"a": 0.9}, learned=pd.DataFrame({"model": ["a"], "verdict": ["refuted"]}))
    bad = tmp_path / "v.csv"
    pd.DataFrame({"model": ["a"], "checkpoint": ["a.pt"], "verdict": ["maybe"], "estimate": [0.5], "lo": [0.4],
                  "hi": [0.6], "margin": [0.95]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match=r"v.csv: verdict 'maybe'; expected one of holds, refuted, inconclusive"):
        G.read_verdicts(bad)
    spec = {"notebooks": [{"name": "02_models", "keep_unlearned": {"default": {"mesoinception4": ""}}}]}
    with pytest.raises(ValueError, match=r"keep_unlearned.default=.*non-empty reason"):
        G.keep_unlearned("default", spec)
    with pytest.raises(ValueError, match=r"02_models keep_unlearned=\['x'\]"):
        G.keep_unlearned("default", {"notebooks": [{"name": "02_models", "keep_unlearned": ["x"]}]})


def test_the_studys_keep_lists_are_well_formed_and_name_known_detectors():
    from dfrobust.core.profiles import PROFILES
    from dfrobust.models import DETECTORS

    for profile in PROFILES:
        keep = G.keep_unlearned(profile)
        assert set(keep) <= set(DETECTORS), (profile, keep)
    # the real profile studies the published weights themselves, quick is a smoke test: kept, with the reason;
    # the study's own scales keep nothing, so a refuted detector is excluded there
    assert set(G.keep_unlearned("real")) == {"meso4_df", "mesoinception_df"}
    assert set(G.keep_unlearned("quick")) == {"meso4"}
    assert G.keep_unlearned("default") == G.keep_unlearned("paper") == {}
