"""The study spec (``notebooks/study.yml``): notebooks in book order, their parameters per profile and the
book's structure (``book:`` and each notebook's ``part:``; ``_toc.yml`` is generated from it, :func:`toc_text`).

Validation happens here, before anything runs: an unknown profile, an unknown notebook, an
unknown parameter or a value of the wrong type stops with a one-line error that names the
parameter and what is accepted. Parameter names and types come from each template's
``parameters`` cell (``name: type = value  # description``) as papermill reads it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

import yaml

from ..core.paths import project_root

from ..core.profiles import PROFILES  # noqa: E402  (one list of profiles for every layer)
_TYPES: dict[str, tuple[type, ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (float, int),
    "bool": (bool,),
}


class StudyError(ValueError):
    """A bad study spec or parameter; the message is one line naming the value and what is expected."""


@dataclass(frozen=True)
class NotebookSpec:
    name: str
    template: Path
    title: str
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # profile -> overrides
    #: the chapters whose results or stamps this one reads (``reads:``): it re-runs when one of them did
    reads: tuple[str, ...] = ()
    #: the caption of the book part the chapter is in (``part:``; the first part when unset)
    part: str = ""


@dataclass(frozen=True)
class BookPart:
    caption: str
    #: narrative pages (``book/<page>``, no suffix) after the part's chapters
    pages: tuple[str, ...] = ()


@dataclass(frozen=True)
class Study:
    path: Path
    profiles: Mapping[str, str]  # profile -> description
    notebooks: tuple[NotebookSpec, ...]
    #: profile -> detector (or ``common``) -> training hyper-parameters (``training:`` block;
    #: read by :func:`dfrobust.models.train.study_hparams`, which checks the keys)
    training: Mapping[str, Mapping[str, Mapping[str, Any]]] = field(default_factory=dict)
    #: the book's landing page and parts (``book:``); a spec without one is a single part
    root: str = "book/intro"
    parts: tuple[BookPart, ...] = (BookPart("The study"),)

    def notebook(self, name: str) -> NotebookSpec:
        for nb in self.notebooks:
            if nb.name == name or nb.template.stem == name or str(nb.template) == name:
                return nb
        raise StudyError(f"notebook={name!r}: unknown; expected one of {', '.join(n.name for n in self.notebooks)}")

    def check_profile(self, profile: str) -> str:
        if profile not in self.profiles:
            raise StudyError(f"profile={profile!r}: unknown; expected one of {', '.join(self.profiles)}")
        return profile


def load_study(path: str | Path | None = None) -> Study:
    """Read and check the study spec."""
    root = project_root()
    path = Path(path) if path else root / "notebooks" / "study.yml"
    if not path.is_file():
        raise StudyError(f"study spec {path} does not exist; expected notebooks/study.yml in the project")
    spec = yaml.safe_load(path.read_text()) or {}
    profiles = spec.get("profiles") or {}
    if not isinstance(profiles, dict) or not profiles:
        raise StudyError(f"{path}: 'profiles' must map each profile name to a description")
    notebooks = []
    for i, entry in enumerate(spec.get("notebooks") or []):
        try:
            name, template = entry["name"], entry["template"]
        except (KeyError, TypeError):
            raise StudyError(f"{path}: notebooks[{i}] needs 'name' and 'template'") from None
        params = entry.get("params") or {}
        for prof in params:
            if prof not in profiles:
                raise StudyError(f"{path}: notebook {name!r} sets params for profile={prof!r}; "
                                 f"expected one of {', '.join(profiles)}")
        tpl = (path.parent.parent / template) if not Path(template).is_absolute() else Path(template)
        reads = entry.get("reads") or []
        if not isinstance(reads, list) or not all(isinstance(r, str) for r in reads):
            raise StudyError(f"{path}: notebook {name!r} has reads={reads!r}; expected a list of notebook names")
        notebooks.append(NotebookSpec(name=name, template=tpl, title=entry.get("title", name),
                                      params={k: dict(v or {}) for k, v in params.items()}, reads=tuple(reads),
                                      part=str(entry.get("part") or "")))
    if not notebooks:
        raise StudyError(f"{path}: lists no notebooks")
    names = {nb.name for nb in notebooks}
    for nb in notebooks:
        if unknown := [r for r in nb.reads if r not in names]:
            raise StudyError(f"{path}: notebook {nb.name!r} reads {unknown}; expected notebooks of the study "
                             f"({', '.join(sorted(names))})")
    training = (spec.get("settings") or {}).get("training") or {}
    if not isinstance(training, dict):
        raise StudyError(f"{path}: 'training' must map profile -> detector -> hyper-parameters")
    for prof, block in training.items():
        if prof not in profiles:
            raise StudyError(f"{path}: training sets values for profile={prof!r}; expected one of {', '.join(profiles)}")
        if not isinstance(block, dict) or not all(isinstance(v, dict) for v in block.values()):
            raise StudyError(f"{path}: training.{prof} must map each detector (or 'common') to a mapping of values")
    root, parts = _book(path, spec.get("book"), notebooks)
    return Study(path=path, profiles=dict(profiles), notebooks=tuple(notebooks),
                 training={k: {m: dict(v) for m, v in (b or {}).items()} for k, b in training.items()},
                 root=root, parts=parts)


def _book(path: Path, book: Any, notebooks: list[NotebookSpec]) -> tuple[str, tuple[BookPart, ...]]:
    """The ``book:`` section checked: a landing page and parts whose pages exist, every ``part:`` a caption."""
    root, parts = Study.root, Study.parts
    if book is not None:
        try:
            root = str(book["root"])
            parts = tuple(BookPart(str(p["caption"]), tuple(str(x) for x in p.get("pages") or ()))
                          for p in book["parts"])
        except (KeyError, TypeError, AttributeError):
            raise StudyError(f"{path}: book needs 'root' (a page) and 'parts' (each a 'caption' and optional "
                             "'pages')") from None
        for page in (root, *(x for p in parts for x in p.pages)):
            if not any((path.parent.parent / f"{page}{suffix}").is_file() for suffix in (".md", ".ipynb")):
                raise StudyError(f"{path}: book page {page!r} has no {page}.md; expected a page of the project")
    captions = [p.caption for p in parts]
    for nb in notebooks:
        if nb.part and nb.part not in captions:
            raise StudyError(f"{path}: notebook {nb.name!r} has part={nb.part!r}; expected one of "
                             f"{', '.join(captions)}")
    return root, parts


def toc_text(study: Study) -> str:
    """``_toc.yml`` of the study's book: each part's chapters (the executed copies in ``book/generated/``, in
    the spec's order), then its pages."""
    first = study.parts[0].caption
    toc = {"format": "jb-book", "root": study.root, "parts": [
        {"caption": part.caption,
         "chapters": [{"file": f"book/generated/{nb.name}"} for nb in study.notebooks
                      if (nb.part or first) == part.caption] + [{"file": page} for page in part.pages]}
        for part in study.parts]}
    return ("# Generated from notebooks/study.yml (`book:` and each notebook's `part:`) by `dfrobust toc` and before\n"
            "# every `dfrobust book`: edit study.yml, not this file. Chapters are the executed notebooks in book/generated/.\n"
            + yaml.safe_dump(toc, sort_keys=False))


@lru_cache(maxsize=64)
def _declared(template: str, mtime: float) -> dict[str, dict[str, Any]]:
    import papermill

    params = papermill.inspect_notebook(template)
    return {k: dict(v) for k, v in params.items()}


def declared_parameters(template: str | Path) -> dict[str, dict[str, Any]]:
    """Parameters declared in a template's ``parameters`` cell: name -> {inferred_type_name, default, help}."""
    template = Path(template)
    if not template.is_file():
        raise StudyError(f"template {template} does not exist")
    params = _declared(str(template), template.stat().st_mtime)
    if not params:
        raise StudyError(f"template {template} has no cell tagged 'parameters'")
    return params


_INT = re.compile(r"[-+]?\d+")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_SPECIAL = re.compile(r"([-+]?)\.?(inf|nan)", re.I)  # YAML's .inf/.nan (what the re-run box writes) or inf/nan


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line, the value taken literally: ``true``/``false`` → bool, a decimal
    integer → int, a decimal number (``1e-3``, ``.inf``, ``nan``) → float, a double-quoted JSON string or a
    single-quoted one → that string; anything else is the text as typed (surrounding spaces removed).

    No YAML: a ``#`` stays in the value (``-p "data_root=/data/run #1"`` is that folder, not ``/data/run``
    with a comment cut off), and ``yes``, ``on``, ``010`` or ``[a]`` are not read as bool, octal or list.
    """
    if "=" not in text:
        raise StudyError(f"-p {text!r}: expected key=value")
    key, raw = text.split("=", 1)
    key, raw = key.strip(), raw.strip()
    if raw.lower() in ("true", "false"):
        return key, raw.lower() == "true"
    if _INT.fullmatch(raw):
        return key, int(raw)
    if _FLOAT.fullmatch(raw):
        return key, float(raw)
    if m := _SPECIAL.fullmatch(raw):
        return key, float(m.group(1) + m.group(2))
    if len(raw) >= 2 and raw[0] == raw[-1] == '"':
        try:
            return key, str(json.loads(raw))
        except ValueError:
            return key, raw
    if len(raw) >= 2 and raw[0] == raw[-1] == "'":
        return key, raw[1:-1].replace("''", "'")
    return key, raw


def check_params(template: str | Path, params: Mapping[str, Any], *, where: str = "") -> dict[str, Any]:
    """Check ``params`` against the template's declared names and types; return them coerced.

    int → float is accepted for a float parameter; anything else of the wrong type is an error.
    """
    declared = declared_parameters(template)
    where = f" ({where})" if where else ""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if key not in declared:
            raise StudyError(f"parameter {key!r}{where}: unknown for {Path(template).name}; "
                             f"expected one of {', '.join(declared)}")
        tname = declared[key].get("inferred_type_name", "None")
        accepted = _TYPES.get(tname)
        if accepted is None:  # undeclared type: accept literals as they are
            out[key] = value
            continue
        ok = isinstance(value, accepted) and not (tname in ("int", "float") and isinstance(value, bool))
        if not ok:
            raise StudyError(f"parameter {key}={value!r}{where}: expected {tname}, got {type(value).__name__}")
        out[key] = float(value) if tname == "float" else value
    return out


def resolve_params(study: Study, nb: NotebookSpec, profile: str,
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Profile parameters of a notebook with command-line overrides on top, validated."""
    study.check_profile(profile)
    if "profile" in (overrides or {}):
        raise StudyError(f"parameter profile={overrides['profile']!r}: set the profile with --profile, "
                         "not -p profile=...")
    params: dict[str, Any] = {"profile": profile}
    params.update(nb.params.get(profile, {}))
    params.update(overrides or {})
    return check_params(nb.template, params, where=f"notebook {nb.name}, profile {profile}")


def params_json(params: Mapping[str, Any]) -> str:
    return json.dumps(dict(params), sort_keys=True, default=str)
