"""Page presentation: how a chapter's result reaches its page (glue) and what the runner adds to an
executed chapter (the re-run box, the collapsed set-up cells, the download links; the runner calls it after a successful run): :func:`present_chapter`.

A chapter notebook calls :func:`glue_result` once with the :class:`~dfrobust.core.results.ChapterResult`
its chapter function returned; the Markdown cells quote ``{glue:text}`<prefix>_<name>``` etc.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..core.results import ChapterResult
from .spec import declared_parameters, load_study, parse_override, resolve_params


def glue_result(result: ChapterResult, prefix: str) -> list[str]:
    """Glue every value, table and figure of ``result`` as ``<prefix>_<name>`` (not displayed in place);
    ``decide`` as ``<prefix>_decide`` (HTML table). Returns the glued names."""
    from myst_nb import glue

    from ..figures import decide_html

    names = []
    for group in (result.values, result.tables, result.figures):
        for name, value in group.items():
            glue(f"{prefix}_{name}", value, display=False)
            names.append(f"{prefix}_{name}")
    if result.decide is not None:
        glue(f"{prefix}_decide", decide_html(result.decide), display=False)
        names.append(f"{prefix}_decide")
    return names


# --------------------------------------------------------------------------- the executed copy as a page
# The templates stay plain notebooks; the runner turns the executed copy into a book page:
# results first (set-up cells collapsed, papermill's injected cell removed) and a re-run box after
# the title with the exact command, the parameters used and download links (executed notebook and
# the chapter's .nc results, copied beside it so Sphinx's {download} role puts them in the build).
RERUN_CLASS = "rerun-box"
DOWNLOADS = "downloads"  # book/generated/downloads/<chapter>/<result>.nc


def _cli_value(value: Any) -> str:
    """``value`` as ``-p`` reads it back (:func:`~dfrobust.study.spec.parse_override`), on one line."""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
        if value != value or value in (float("inf"), float("-inf")):
            text = {"nan": ".nan", "inf": ".inf", "-inf": "-.inf"}[text]
        elif "e" in text and "." not in text.split("e")[0]:
            text = text.replace("e", ".0e", 1)  # YAML 1.1 (PyYAML) reads 1e-05 as a string, 1.0e-05 as a float
    elif isinstance(value, int):
        text = repr(value)
    else:
        text = str(value)
        # quoted (JSON) unless -p reads it back as this very string; control characters (a newline) escaped
        if text == "" or not text.isprintable() or parse_override(f"v={text}")[1] != text:
            text = json.dumps(text)
    return text


def rerun_command(name: str, params: Mapping[str, Any], baseline: Mapping[str, Any] | None = None) -> str:
    """The command that re-runs a chapter with ``params``; ``-p`` only where they differ from ``baseline``
    (the profile's own values)."""
    import shlex

    profile = params.get("profile", "default")
    base = dict(baseline or {"profile": profile})
    extra = [f"-p {shlex.quote(f'{k}={_cli_value(v)}')}" for k, v in params.items()
             if k != "profile" and (k not in base or base[k] != v)]
    return " ".join([".venv/bin/dfrobust", "run", shlex.quote(name), "--profile", shlex.quote(str(profile)), *extra])


def _profile_baseline(name: str, template: Path, profile: str) -> dict[str, Any] | None:
    """The parameters the study spec beside ``template`` gives this chapter under ``profile``, if any."""
    try:
        spec = load_study(Path(template).parent / "study.yml")
        nb = spec.notebook(name)
        if nb.template.resolve() != Path(template).resolve():
            return None
        return resolve_params(spec, nb, profile, {})
    except Exception:  # noqa: BLE001 - a missing or foreign spec only makes the command longer
        return None


def _cell_text(value: Any) -> str:
    """``value`` for a code span in a Markdown table cell: on one line (a string with surrounding spaces or a
    control character such as a newline is shown JSON-quoted, escapes visible), no backtick to close the span,
    pipes escaped for the table. Inside the code span Markdown and HTML are shown as text, not interpreted."""
    text = str(value)
    if (isinstance(value, str) and (text == "" or text != text.strip())) or not text.isprintable():
        text = json.dumps(text)
    return text.replace("|", "\\|").replace("`", "'")


def _rerun_markdown(name: str, template: Path, params: Mapping[str, Any], downloads: list[str]) -> str:
    import ast

    profile = str(params.get("profile", ""))
    declared = declared_parameters(template)
    rows = []
    for key, info in declared.items():
        if key in params:
            value, source = params[key], "this run"
        else:
            try:
                value = ast.literal_eval(str(info.get("default")))
            except (ValueError, SyntaxError):
                value = info.get("default")
            source = "template default"
        help_ = str(info.get("help", "")).replace("|", "\\|")
        rows.append(f"| `{key}` | `{_cell_text(value)}` | {source} | {help_} |")
    links = [f"{{download}}`executed notebook ({name}.ipynb) <{name}.ipynb>`"]
    links += [f"{{download}}`{Path(d).name} <{d}>`" for d in downloads]
    results_note = "" if downloads else " This chapter writes no result file."
    cmd = rerun_command(name, params, _profile_baseline(name, template, profile))
    return "\n".join([
        f"::::{{admonition}} Re-run this chapter (built with the `{profile}` profile)",
        f":class: tip {RERUN_CLASS}",
        "",
        "Every number and figure below was computed by this command; change or add `-p name=value` to "
        f"re-run it with other parameters (`.venv/bin/dfrobust params {name}` lists them all):",
        "",
        "```bash",
        cmd,
        "```",
        "",
        "**Downloads:** " + " · ".join(links) + "." + results_note,
        "",
        ":::{admonition} Parameters used",
        ":class: dropdown",
        "",
        "| parameter | value | set by | description |",
        "|---|---|---|---|",
        *rows,
        ":::",
        "::::",
    ])


def _add_tag(cell, tag: str) -> None:
    tags = list(cell.metadata.get("tags", []))
    if tag not in tags:
        cell.metadata["tags"] = tags + [tag]


def present_chapter(path: Path, name: str, template: Path, params: Mapping[str, Any], *,
                    results: Sequence[Path] = ()) -> Path:
    """Turn the executed notebook at ``path`` into a book page, in place (see the section comment).

    Code cells before the ``parameters`` cell (imports), the ``parameters`` cell and the cell after
    it (validation) get ``hide-input``; papermill's ``injected-parameters`` cell gets
    ``remove-input``; a markdown re-run box is inserted after the cell holding the H1 title. The
    ``results`` files are copied to ``downloads/<name>/`` beside the notebook.
    """
    import shutil

    import nbformat

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if any(RERUN_CLASS in c.source for c in nb.cells if c.cell_type == "markdown"):
        return path  # already presented
    cells = nb.cells
    is_param = ["parameters" in c.metadata.get("tags", []) for c in cells]
    is_injected = ["injected-parameters" in c.metadata.get("tags", []) for c in cells]
    if not any(is_param):
        raise ValueError(f"{path}: no cell tagged 'parameters'; expected the template's parameters cell")
    p = is_param.index(True)
    for i, c in enumerate(cells):
        if is_injected[i]:
            _add_tag(c, "remove-input")
        elif c.cell_type == "code" and i <= p:
            _add_tag(c, "hide-input")
    after = next((i for i in range(p + 1, len(cells)) if cells[i].cell_type == "code" and not is_injected[i]), None)
    if after is not None:
        _add_tag(cells[after], "hide-input")
    dest = path.parent / DOWNLOADS / name
    if dest.is_dir():
        shutil.rmtree(dest)
    downloads = []
    for src in sorted(results):
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / src.name)
        downloads.append(f"{DOWNLOADS}/{name}/{src.name}")
    title = next((i for i, c in enumerate(cells) if c.cell_type == "markdown"
                  and any(line.startswith("# ") for line in c.source.splitlines())), None)
    box = nbformat.v4.new_markdown_cell(_rerun_markdown(name, template, params, downloads))
    box.id = RERUN_CLASS  # a fixed id: the same run gives the same notebook
    cells.insert(0 if title is None else title + 1, box)
    nbformat.write(nb, path)
    return path
