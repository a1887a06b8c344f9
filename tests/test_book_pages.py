"""The book as a reader sees it, without a browser: how the runner presents an executed chapter
(set-up cells collapsed, injected parameters removed, the re-run box), the configuration that
makes math render offline, alt text from captions, opaque colour-blind-safe figures, the glossary.
The browser itself is driven in tests/test_browser.py."""

from __future__ import annotations

import io
import os
import shlex
import time
from pathlib import Path

import nbformat
import pytest
import yaml

from dfrobust import study
from dfrobust.study import pages, runner

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- a mini chapter
def _template(tmp_path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell(
        'profile: str = "quick"  # study profile\n'
        "n: int = 2  # how many | samples\n"
        'models: str = "meso4"  # comma-separated detectors\n'
        'out: str = ""  # result file to write')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# Mini chapter\n\nWhat it shows."),
        nbformat.v4.new_code_cell("import pathlib"),
        params,
        nbformat.v4.new_code_cell("assert n >= 1, f'n={n!r}: expected >= 1'"),
        nbformat.v4.new_markdown_cell("## Results"),
        nbformat.v4.new_code_cell("from dfrobust.core.results import staged\n"
                                  "if out:\n    staged(out).parent.mkdir(parents=True, exist_ok=True)\n"
                                  "    staged(out).write_text(str(n))\nprint(n * 2)"),
    ]
    tpl = tmp_path / "notebooks" / "mini.ipynb"
    tpl.parent.mkdir()
    nbformat.write(nb, tpl)
    (tpl.parent / "study.yml").write_text(yaml.safe_dump({
        "profiles": {"quick": "q", "default": "d"},
        "notebooks": [{"name": "mini", "template": str(tpl), "params": {"default": {"n": 5}}}]}))
    return tpl


def _executed(tmp_path: Path, tpl: Path, params: dict) -> Path:
    """An executed copy as papermill writes it (injected cell after the parameters cell), no kernel."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = parameterize_notebook(load_notebook_node(str(tpl)), params)
    path = tmp_path / "out" / "mini.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbformat.write(nb, path)
    return path


def _tags(cell) -> list[str]:
    return cell.metadata.get("tags", [])


def test_present_chapter_collapses_setup_removes_injected_cell_and_adds_the_rerun_box(tmp_path):
    tpl = _template(tmp_path)
    result = tmp_path / "results" / "mini_records.nc"
    result.parent.mkdir()
    result.write_bytes(b"netcdf bytes")
    params = {"profile": "default", "n": 7}
    path = _executed(tmp_path, tpl, params)
    pages.present_chapter(path, "mini", tpl, params, results={result: result.stat().st_mtime_ns})
    cells = nbformat.read(path, as_version=4).cells
    src = [c.source.splitlines()[0] if c.source else "" for c in cells]
    # title, then the box, then the collapsed set-up cells, then the results
    assert src[0] == "# Mini chapter" and "rerun-box" in cells[1].source
    by_first = {s: c for s, c in zip(src, cells)}
    assert "hide-input" in _tags(by_first["import pathlib"])
    assert "hide-input" in _tags(by_first['profile: str = "quick"  # study profile'])
    injected = [c for c in cells if "injected-parameters" in _tags(c)]
    assert len(injected) == 1 and "remove-input" in _tags(injected[0])
    assert "hide-input" in _tags(by_first["assert n >= 1, f'n={n!r}: expected >= 1'"]), "validation cell"
    assert not _tags(by_first["from dfrobust.core.results import staged"]), "result cells stay as they are"
    box = cells[1].source
    # the exact command: the profile's own n=5 differs from this run's 7, so it is passed with -p
    assert ".venv/bin/dfrobust run mini --profile default -p n=7\n" in box
    # every parameter with the value used and where it came from; pipes in descriptions escaped
    assert "| `n` | `7` | this run | how many \\| samples |" in box
    assert "| `models` | `meso4` | template default |" in box
    assert '| `out` | `""` | template default |' in box
    # downloads: the executed notebook and the result, copied beside it so {download} resolves
    assert "{download}`executed notebook (mini.ipynb) <mini.ipynb>`" in box
    assert "{download}`mini_records.nc <downloads/mini/mini_records.nc>`" in box
    assert (path.parent / "downloads" / "mini" / "mini_records.nc").read_bytes() == b"netcdf bytes"
    # presenting twice changes nothing (one box)
    before = path.read_text()
    pages.present_chapter(path, "mini", tpl, params, results={})
    assert path.read_text() == before


def test_present_chapter_without_results_says_so(tmp_path):
    tpl = _template(tmp_path)
    path = _executed(tmp_path, tpl, {"profile": "quick"})
    pages.present_chapter(path, "mini", tpl, {"profile": "quick"})
    box = nbformat.read(path, as_version=4).cells[1].source
    assert "writes no result file" in box and ".venv/bin/dfrobust run mini --profile quick\n" in box


def test_present_chapter_names_a_template_without_parameters_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")]
    path = tmp_path / "t.ipynb"
    nbformat.write(nb, path)
    with pytest.raises(ValueError, match=r"t\.ipynb: no cell tagged 'parameters'"):
        pages.present_chapter(path, "t", path, {"profile": "quick"})


@pytest.mark.parametrize("value, shown", [
    ("fgsm,pgd", "attacks=fgsm,pgd"), ("", 'attacks=""'), ("3", 'attacks="3"'), ("true", 'attacks="true"'),
    ("a b", 'attacks=a b'), (True, "attacks=true"), (0.1, "attacks=0.1"), (64, "attacks=64"),
    (1e-05, "attacks=1.0e-05"), (2.5e-10, "attacks=2.5e-10"), (float("inf"), "attacks=.inf"),
])
def test_rerun_command_values_read_back_as_the_same_parameter(value, shown):
    cmd = pages.rerun_command("03_robustness", {"profile": "quick", "attacks": value}, {"profile": "quick"})
    argv = shlex.split(cmd)
    assert argv[:5] == [".venv/bin/dfrobust", "run", "03_robustness", "--profile", "quick"]
    assert argv[5:] == ["-p", shown]
    assert study.parse_override(argv[6]) == ("attacks", value)


def test_rerun_command_leaves_out_what_the_profile_already_sets():
    cmd = pages.rerun_command("mini", {"profile": "default", "n": 5, "scale": 2.0}, {"profile": "default", "n": 5})
    assert cmd == ".venv/bin/dfrobust run mini --profile default -p scale=2.0"


def test_the_runner_presents_what_it_executes_and_offers_the_results_it_wrote(tmp_path, data_home):
    tpl = _template(tmp_path)
    s = study.load_study(tpl.parent / "study.yml")
    res_dir = data_home / "results" / "quick"
    res_dir.mkdir(parents=True)
    old = res_dir / "older_chapter.nc"  # written by another chapter before this run
    old.write_text("old")
    os.utime(old, (time.time() - 60, time.time() - 60))
    out = tmp_path / "book"
    runner.run_study("quick", study=s, overrides={"out": str(res_dir / "mini.nc")}, out_dir=out, log=lambda m: None)
    cells = nbformat.read(out / "mini.ipynb", as_version=4).cells
    box = cells[1].source
    assert "rerun-box" in box and "downloads/mini/mini.nc" in box and "older_chapter" not in box
    assert (out / "downloads" / "mini" / "mini.nc").read_text() == "2"
    assert any("remove-input" in _tags(c) for c in cells if "injected-parameters" in _tags(c))


# --------------------------------------------------------------------------- configuration
def test_book_config_serves_mathjax_offline_in_english():
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    exts = cfg["sphinx"]["extra_extensions"]
    assert "sphinx-mathjax-offline" in exts and "dfrobust.study.sphinx_book" in exts
    assert cfg["sphinx"]["config"]["language"] == "en"
    assert "mathjax_path" not in cfg["sphinx"]["config"], "the offline extension sets mathjax_path"
    import importlib

    ext = importlib.import_module("sphinx-mathjax-offline")
    assert (Path(ext.__file__).parent / "static" / "mathjax" / "tex-chtml.js").is_file()


def test_glossary_defines_every_term_and_is_linked():
    text = (ROOT / "book" / "glossary.md").read_text()
    block = text.split("```{glossary}", 1)[1].split("```", 1)[0]
    terms = {line.strip() for line in block.splitlines() if line and not line.startswith(" ")}
    need = {"RA", "RR", "ε", "b", "tolerance", "ŷ", "FGSM", "PGD", "CW", "NES", "SLIC", "deletion/insertion",
            "bootstrap"}
    assert need <= terms, f"glossary lacks {sorted(need - terms)}"
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    assert "book/glossary" in [c["file"] for part in toc["parts"] for c in part["chapters"]]
    intro = (ROOT / "book" / "intro.md").read_text()
    assert "{doc}`glossary`" in intro and "{term}`RR`" in intro


def test_wrapping_css_is_in_the_book_static_folder():
    css = (ROOT / "_static" / "dfrobust.css").read_text()
    assert "white-space: pre-wrap" in css and "cell_input" in css


# --------------------------------------------------------------------------- figures
def test_finished_figures_are_opaque_even_under_the_inline_backends_transparent_default():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np
    from PIL import Image

    from dfrobust.figures import finish

    with matplotlib.rc_context({"figure.facecolor": (1, 1, 1, 0)}):  # what matplotlib-inline sets
        raw = plt.figure(figsize=(1, 1))
        fig = finish(plt.figure(figsize=(1, 1)))
        for f in (raw, fig):
            f.add_subplot().plot([0, 1])

        def alpha(f):
            buf = io.BytesIO()  # IPython's print_figure passes the figure's own facecolor
            f.savefig(buf, format="png", facecolor=f.get_facecolor(), edgecolor=f.get_edgecolor())
            return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGBA"))[..., 3]

        assert alpha(raw).min() == 0, "control: the inline default is transparent"
        assert alpha(fig).min() == 255
    plt.close(raw)


def test_palette_is_colour_blind_safe_and_the_default_cycle():
    import matplotlib as mpl
    import seaborn as sns

    from dfrobust import figures

    assert figures.palette(4) == list(sns.color_palette("colorblind", 4))
    cycle = [mpl.colors.to_rgb(c) for c in mpl.rcParams["axes.prop_cycle"].by_key()["color"]]
    assert cycle == [tuple(c) for c in sns.color_palette("colorblind")]
    assert mpl.rcParams["image.cmap"] == "viridis"
    assert figures.colour("RR") != figures.colour("RA")
    with pytest.raises(ValueError, match="role='purple': unknown; expected one of RR, RA"):
        figures.colour("purple")
    with pytest.raises(ValueError, match="n=0: expected an int >= 1"):
        figures.palette(0)


def test_no_figure_module_picks_colours_outside_the_palette():
    import re

    for path in sorted((ROOT / "src" / "dfrobust" / "figures").glob("*.py")):
        text = path.read_text()
        bad = re.findall(r"\"(?:tab:\w+|jet|rainbow|#[0-9a-fA-F]{6})\"|color=\"(?:red|green|blue|orange)\"", text)
        assert not bad, f"{path.name}: {bad} — use dfrobust.figures.palette()/colour()/SEQUENTIAL"


def test_figures_get_their_caption_as_alt_text():
    from docutils import nodes

    from dfrobust.figures import alt_from_captions

    doc = nodes.document(None, None)
    fig = nodes.figure()
    fig += nodes.image(uri="_images/a.png", alt="_images/a.png")  # myst-nb's default: the file name
    cap = nodes.caption(text="RR and RA vs the\n  radius ")
    cap += nodes.math(text=r"\varepsilon \le \|\delta\|_\infty")
    cap += nodes.Text(" (synthetic data).")
    fig += cap
    kept = nodes.figure()
    kept += nodes.image(uri="b.png", alt="a chosen alt text")
    kept += nodes.caption(text="other caption")
    bare = nodes.figure()
    bare += nodes.image(uri="c.png")
    doc += [fig, kept, bare]
    assert alt_from_captions(doc) == 1
    assert fig.next_node(nodes.image)["alt"] == "RR and RA vs the radius ε ≤ ‖δ‖∞ (synthetic data)."
    assert kept.next_node(nodes.image)["alt"] == "a chosen alt text"
    assert "alt" not in bare.next_node(nodes.image)


def test_each_inline_script_is_listed_once():
    from sphinx.builders.html._assets import _JavaScript

    from dfrobust.study.sphinx_book import unique_scripts

    body = 'const THEBE_JS_URL = "x"'
    scripts = [_JavaScript("_static/doctools.js", priority=200), _JavaScript(None, body=body),
               _JavaScript("_static/doctools.js", priority=200), _JavaScript("", body=body),
               _JavaScript("", body="var other = 1")]
    kept = unique_scripts(scripts)
    assert [(s.filename or "", s.attributes.get("body")) for s in kept] == [
        ("_static/doctools.js", None), ("", body), ("", "var other = 1")]
