"""Page presentation: how a chapter's result reaches its page (glue) and what the runner adds to an
executed chapter (the re-run box, tags).

A chapter notebook calls :func:`glue_result` once with the :class:`~dfrobust.core.results.ChapterResult`
its chapter function returned; the Markdown cells quote ``{glue:text}`<prefix>_<name>``` etc.
"""

from __future__ import annotations

from ..core.results import ChapterResult


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
