"""The harness: study spec, parameter validation, runner caching/failures, results store, pins."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import numpy as np
import pytest
import xarray as xr
import yaml

from dfrobust import study
from dfrobust.core import results
from dfrobust.study import runner

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((ROOT / "notebooks").glob("*.ipynb"))


# --------------------------------------------------------------------------- templates
@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_template_has_no_outputs_and_one_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not [i for i, c in enumerate(code) if c.outputs or c.execution_count], \
        f"{path.name}: clear outputs and execution counts before committing"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name}: {len(tagged)} cells tagged 'parameters'"
    assert nb.metadata.get("kernelspec", {}).get("name") == "dfrobust"
    titles = [line for c in nb.cells if c.cell_type == "markdown" for line in c.source.splitlines()
              if line.startswith("# ")]
    assert len(titles) == 1, f"{path.name}: expected exactly one H1 title, found {titles}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda p: p.name)
def test_every_parameter_has_a_type_and_a_description(path):
    declared = study.declared_parameters(path)
    assert next(iter(declared)) == "profile"
    for name, info in declared.items():
        assert info["inferred_type_name"] in ("str", "int", "float", "bool"), (name, info)
        assert info["help"].strip(), f"{path.name}: parameter {name} has no description comment"
    out = subprocess.run([sys.executable, "-m", "papermill", "--help-notebook", str(path)],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    for name in declared:
        assert re.search(rf"^\s+{name}: ", out.stdout, re.M), f"papermill --help-notebook misses {name}"


def test_study_spec_lists_every_template():
    s = study.load_study()
    assert {nb.template.resolve() for nb in s.notebooks} == {p.resolve() for p in TEMPLATES}
    assert list(s.profiles) == list(study.PROFILES)
    for prof in s.profiles:  # every profile's parameters are valid for its notebook
        for nb in s.notebooks:
            study.resolve_params(s, nb, prof)


# --------------------------------------------------------------------------- a mini study
@pytest.mark.parametrize("profile, overrides, fragment", [
    ("huge", {}, "profile='huge': unknown; expected one of quick, default"),
    ("quick", {"nn": 3}, "parameter 'nn'"),
    ("quick", {"n": "three"}, "n='three'"),
    ("quick", {"n": 2.5}, "expected int"),
    ("quick", {"scale": True}, "expected float"),
])
def test_bad_parameters_stop_before_any_computation(tmp_path, mini_study, profile, overrides, fragment):
    s = mini_study(tmp_path)
    marker = tmp_path / "ran.txt"
    with pytest.raises(study.StudyError) as err:
        runner.run_study(profile, study=s, only=["mini"], overrides={"marker": str(marker), **overrides},
                         out_dir=tmp_path / "out")
    msg = str(err.value)
    assert fragment in msg and "\n" not in msg
    assert not marker.exists(), "nothing may run when a parameter is bad"


def test_unknown_key_error_lists_accepted_names(tmp_path, mini_study):
    s = mini_study(tmp_path)
    with pytest.raises(study.StudyError, match="expected one of profile, n, scale, marker"):
        runner.run_study("quick", study=s, only=["mini"], overrides={"bogus": 1}, out_dir=tmp_path / "o")


def test_override_parsing_reads_yaml_literals():
    assert study.parse_override("n=3") == ("n", 3)
    assert study.parse_override("eps=0.1") == ("eps", 0.1)
    assert study.parse_override("models=meso4,resnet34") == ("models", "meso4,resnet34")
    assert study.parse_override("flag=true") == ("flag", True)
    with pytest.raises(study.StudyError, match="expected key=value"):
        study.parse_override("n3")


def test_runner_executes_then_skips_unchanged_and_reruns_on_change(tmp_path, mini_study):
    s = mini_study(tmp_path)
    marker = tmp_path / "ran.txt"
    out = tmp_path / "out"
    kw = dict(study=s, out_dir=out, log=lambda m: None)
    first = runner.run_study("default", overrides={"marker": str(marker)}, **kw)
    assert first[0].executed and marker.read_text() == "5.0"  # the profile's n=5 reached the kernel
    marker.unlink()
    second = runner.run_study("default", overrides={"marker": str(marker)}, **kw)
    assert not second[0].executed and not marker.exists()
    third = runner.run_study("default", overrides={"marker": str(marker), "scale": 2}, **kw)
    assert third[0].executed and marker.read_text() == "10.0"
    stamp = json.loads((out / "mini.run.json").read_text())
    assert stamp["params"]["scale"] == 2.0 and stamp["wall_s"] > 0
    executed = nbformat.read(out / "mini.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)


def test_failing_cell_stops_with_its_error_in_one_line(tmp_path, mini_study):
    s = mini_study(tmp_path, body="raise ValueError('eps=-1: expected eps >= 0')")
    with pytest.raises(runner.NotebookFailed) as err:
        runner.run_study("quick", study=s, out_dir=tmp_path / "out", log=lambda m: None)
    msg = str(err.value)
    assert msg.startswith("notebook mini failed") and "ValueError: eps=-1: expected eps >= 0" in msg
    assert not (tmp_path / "out" / "mini.run.json").exists(), "a failed run must not be cached"


def test_cli_reports_a_bad_profile_with_exit_code_2():
    out = subprocess.run([sys.executable, "-m", "dfrobust.study.cli", "run", "01_data", "--profile", "nope"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert "profile='nope'" in out.stderr and "quick, default, paper" in out.stderr


# --------------------------------------------------------------------------- results store
def _toy_result():
    ds = xr.Dataset(
        {"ra": (("model", "eps"), np.array([[1.0, 0.5], [1.0, 0.25]]), {"units": "1", "long_name": "robust accuracy"})},
        coords={"model": ["meso4", "resnet34"], "eps": [0.0, 0.01]})
    ds.attrs.update(results.provenance({"eps_max": 0.01, "models": ["meso4", "resnet34"]}, profile="quick",
                                       seed=3, device="cpu", wall_time_s=1.5, flags={"a": 1}))
    return ds


def test_results_roundtrip_keeps_coords_units_and_provenance(tmp_path):
    path = results.save(_toy_result(), tmp_path / "r" / "toy.nc")
    back = results.load(path)
    xr.testing.assert_equal(back["ra"], _toy_result()["ra"])
    assert back["ra"].attrs["long_name"] == "robust accuracy"
    assert results.parameters(back) == {"eps_max": 0.01, "models": ["meso4", "resnet34"]}
    assert back.attrs["seed"] == 3 and back.attrs["profile"] == "quick"
    assert path.stat().st_mode & 0o777 == 0o644
    for key in ("torch_version", "git_commit", "created_utc", "dfrobust_version", "wall_time_s"):
        assert key in back.attrs


def test_a_failed_write_leaves_the_previous_result_intact(tmp_path, monkeypatch):
    path = results.save(_toy_result(), tmp_path / "toy.nc")
    before = path.read_bytes()

    def boom(self, *a, **k):  # the bytes are made in memory (to_netcdf without a path), then written
        raise OSError("disk full")

    monkeypatch.setattr(xr.Dataset, "to_netcdf", boom)
    with pytest.raises(OSError, match="disk full"):
        results.save(_toy_result() * 2, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["toy.nc"], "no temporary file may be left behind"


def test_loading_a_missing_result_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no result file at .*missing.nc"):
        results.load(tmp_path / "missing.nc")


# --------------------------------------------------------------------------- environment
def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^\s*(?:-\s*)?([A-Za-z0-9_.\-]+)(\[[^\]]*\])?==([^\s#]+)", line)
        if m:
            pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    return pins


def test_environment_yml_and_pyproject_agree_with_the_constraints():
    from packaging.requirements import Requirement

    constraints = _pins(ROOT / "requirements" / "constraints.txt")
    env = _pins(ROOT / "environment.yml")
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in constraints, f"{name} is not pinned in requirements/constraints.txt"
        assert req.specifier.contains(constraints[name], prereleases=True), (name, req.specifier, constraints[name])
        assert env.get(name) == constraints[name], f"environment.yml pins {name}=={env.get(name)}, constraints {constraints[name]}"
    assert constraints["torch"] == "2.14.1" and constraints["torchvision"] == "0.29.1"
    assert constraints["torchattacks"] == "3.5.1"
    # facenet-pytorch (MTCNN) pins torch<2.3: installed with --no-deps at the same version everywhere
    fnp = constraints["facenet-pytorch"]
    assert f"facenet-pytorch=={fnp}" in (ROOT / "environment.yml").read_text()
    assert "facenet-pytorch" in [ln for ln in (ROOT / "Makefile").read_text().splitlines() if "pip install" in ln and "--no-deps" in ln][0]
    assert int(constraints["opencv-python-headless"].split(".")[0]) < 5
    assert int(constraints["jupyter-book"].split(".")[0]) == 1
    assert "robustbench" not in constraints
    # requests must not be the 2.25 line torchattacks' metadata asks for (it would break Sphinx)
    assert not constraints["requests"].startswith("2.25")


def test_the_run_key_covers_every_home_of_the_package():
    files = {p.relative_to(ROOT / "src" / "dfrobust").as_posix() for p in runner.package_files()}
    assert {"core/paths.py", "models/train.py", "experiments/robustness.py", "study/runner.py"} <= files


def test_unit_costs_divide_each_chapters_seconds_by_its_work(tmp_path):
    import numpy as np
    import xarray as xr

    from dfrobust.study import perf

    assert perf.unit_costs(tmp_path).empty                       # nothing run: no rows, no error
    rec = xr.Dataset(coords={"eps": [0.0, 0.01, 0.1], "sample": np.arange(10)})
    rec.attrs["attack_time_s"] = str({"meso4/pgd": 4.0, "meso4/fgsm": 0.5})
    rec.to_netcdf(tmp_path / "rr_records.nc")
    cert = xr.Dataset({"time_s": (("model", "eps", "sample"), np.full((1, 3, 4), 0.25))},
                      coords={"model": ["meso4"], "eps": [0.0, 0.001, 0.002], "sample": np.arange(4)})
    cert.to_netcdf(tmp_path / "certified_records.nc")
    radii = xr.Dataset(coords={"model": ["meso4"], "sample": np.arange(8)}, attrs={"attack_time_s": str({"meso4": 6.0})})
    radii.to_netcdf(tmp_path / "rr_radii.nc")
    radii.assign_attrs(attack_time_s=str({"meso4": 2.0})).isel(sample=slice(0, 4)).to_netcdf(tmp_path / "rr_radii_l2.nc")
    t = perf.unit_costs(tmp_path).set_index("work")
    assert t.loc["meso4/L2-ball radii (grid, bisection)", "ms per unit"] == 500.0             # 2 s over 4 images
    row = t.loc["meso4/critical radii (grid, bisection, convergence)"]
    assert row["chapter"] == "03_robustness" and row["units"] == 8 and row["ms per unit"] == 750.0
    assert t.loc["meso4/pgd", "units"] == 20 and t.loc["meso4/pgd", "ms per unit"] == 200.0   # 2 radii x 10 images
    assert t.loc["meso4", "chapter"] == "07_certified" and t.loc["meso4", "seconds"] == 2.0   # ε = 0 not counted


def test_appendix_check_params_names_the_bad_value():
    from dfrobust.study import perf

    assert perf.check_params(bench_scale="full", budget_min=30.0, device="cpu").bench_args == ["--device", "cpu", "--full"]
    with pytest.raises(ValueError, match="budget_min=-1"):
        perf.check_params(bench_scale="small", budget_min=-1, device="cpu")
    with pytest.raises(ValueError, match="bench_scale='huge'"):
        perf.check_params(bench_scale="huge", budget_min=0, device="cpu")
