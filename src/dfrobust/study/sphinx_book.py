"""The book's Sphinx extension (listed in ``_config.yml`` under ``sphinx.extra_extensions``).

* **Alt text from captions**: every image of a captioned figure gets its caption as alt text
  (:func:`dfrobust.figures.alt_from_captions`), whatever directive made it (``glue:figure``,
  ``figure``): docutils has no such option and myst-nb's ``glue:figure`` takes no ``:alt:``.
* **Each inline script once**: with Sphinx 7.4 an inline script that an extension adds after the
  builder started is listed twice on every page (once as filename ``None``, once as ``''``);
  sphinx-thebe's ``const THEBE_JS_URL = …`` then throws "Identifier 'THEBE_JS_URL' has already
  been declared" in every reader's console. :func:`unique_scripts` drops the repeats.

Both are a few lines on Sphinx events; no maintained extension does either.
"""

from __future__ import annotations

from typing import Any


def unique_scripts(scripts: list[Any]) -> list[Any]:
    """``scripts`` (Sphinx's ``_JavaScript`` assets or plain names) without repeats, order kept."""
    seen, out = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", js) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    return out


def _on_page_context(app, pagename, templatename, context, doctree) -> None:
    if "script_files" in context:
        context["script_files"] = unique_scripts(list(context["script_files"]))


def _on_doctree_resolved(app, doctree, docname) -> None:
    from ..figures import alt_from_captions

    alt_from_captions(doctree)


def setup(app):
    app.connect("doctree-resolved", _on_doctree_resolved)
    app.connect("html-page-context", _on_page_context, priority=900)  # after the themes added theirs
    return {"parallel_read_safe": True, "parallel_write_safe": True}
