"""Figures of the book (matplotlib/seaborn), one module per chapter; each returns a Figure.

Every figure function ends with :func:`finish`, which gives the figure an opaque white
background (Jupyter's inline backend makes figures transparent, which leaves black axis labels
on a black page in dark mode) and detaches it from pyplot: the notebook shows it exactly once,
where it glues or displays it, instead of the inline backend drawing it a second time at the end
of the cell. The modules never choose a matplotlib backend: that is the notebook's (inline) or
the environment's (Agg when headless) business.

Colours live here, in one place: :data:`QUALITATIVE` (seaborn's ``colorblind`` palette, which is
distinguishable under the common colour-vision deficiencies), the sequential colour map
:data:`SEQUENTIAL` (viridis, perceptually uniform and colour-blind safe) and :func:`colour` for
the roles the chapters share (RR, RA, data types, the random baseline). Importing the package
sets matplotlib's default colour cycle and colour map to them, so a figure that picks no colour
is colour-blind safe too.

Alt text: :func:`alt_from_captions` gives every image of a captioned figure its caption as alt
text, so a screen reader reads what a sighted reader sees; the book's Sphinx extension
(:mod:`dfrobust.study.sphinx_book`) runs it on every page.
"""

from __future__ import annotations

import re

#: seaborn palette name of the book's qualitative colours (colour-blind safe)
QUALITATIVE = "colorblind"
#: matplotlib colour map for sequential values (RR grids, attributions, perturbation sizes)
SEQUENTIAL = "viridis"
#: the opaque background of every figure
BACKGROUND = "white"

# roles -> index into the colorblind palette (or a grey); one place for every chapter
_ROLES = {
    "RR": 0,  # blue
    "RA": 3,  # vermillion
    "image": "grey",
    "video_per_frame": 0,
    "video_progressive": 1,  # orange
    "random": "grey",
    "neutral": "grey",
    "target": 2,  # bluish green
    "holds": 0,  # blue (verdicts: blue/vermillion/grey, distinguishable without red-green vision)
    "refuted": 3,  # vermillion
    "inconclusive": "grey",
}
_GREY = (0.45, 0.45, 0.45)


def palette(n: int | None = None) -> list[tuple[float, float, float]]:
    """The book's qualitative colours (seaborn ``colorblind``), ``n`` of them (cycled) or all ten."""
    import seaborn as sns

    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"n={n!r}: expected an int >= 1")
    return list(sns.color_palette(QUALITATIVE, n))


def colour(role: str) -> tuple[float, float, float]:
    """Colour of a shared role (RR, RA, image, video_per_frame, video_progressive, random, neutral, target, verdicts)."""
    if role not in _ROLES:
        raise ValueError(f"role={role!r}: unknown; expected one of {', '.join(_ROLES)}")
    idx = _ROLES[role]
    return _GREY if idx == "grey" else palette()[idx]


def apply_style() -> None:
    """Make the colour-blind-safe palette and colour map matplotlib's defaults (called on import)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams["axes.prop_cycle"] = cycler(color=palette())
    mpl.rcParams["image.cmap"] = SEQUENTIAL
    mpl.rcParams["savefig.facecolor"] = BACKGROUND
    mpl.rcParams["savefig.transparent"] = False


def finish(fig):
    """Give ``fig`` an opaque background, detach it from pyplot (it still renders when glued or
    displayed) and return it."""
    import matplotlib.pyplot as plt

    fig.patch.set_facecolor(BACKGROUND)
    fig.patch.set_alpha(1.0)
    plt.close(fig)
    return fig


def not_analysed(text: str = "not analysed"):
    """A small stand-in figure that says why a panel is absent (e.g. every detector near chance),
    so every glued key of a chapter exists on every build."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 1.2))
    ax.axis("off")
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=10, wrap=True)
    return finish(fig)


# --------------------------------------------------------------------------- alt text
def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


# the LaTeX the captions use, as text a screen reader can say (a dozen symbols: pylatexenc would
# be a new dependency for this)
_TEX = {r"\varepsilon": "ε", r"\epsilon": "ε", r"\delta": "δ", r"\alpha": "α", r"\sigma": "σ",
        r"\infty": "∞", r"\le": "≤", r"\leq": "≤", r"\ge": "≥", r"\geq": "≥", r"\times": "×",
        r"\cdot": "·", r"\pm": "±", r"\approx": "≈", r"\|": "‖", r"\%": "%", r"\,": " ",
        r"\sqrt": "√", r"\left": "", r"\right": ""}


def tex_to_text(tex: str) -> str:
    """Inline LaTeX as plain text: ``\\hat y`` → ŷ, ``\\varepsilon`` → ε, ``L_\\infty`` → L∞, …"""
    t = re.sub(r"\\hat\s*\{?\s*([A-Za-z])\s*\}?", lambda m: m.group(1) + "\u0302", tex)
    t = re.sub(r"\\(?:mathrm|mathbf|mathit|text|operatorname)\s*\{([^{}]*)\}", r"\1", t)
    for k in sorted(_TEX, key=len, reverse=True):
        t = re.sub(re.escape(k) + r"(?![A-Za-z])", _TEX[k], t)
    t = re.sub(r"\\([A-Za-z]+)", r"\1", t)  # any other command: its name
    t = re.sub(r"_\{([^{}]*)\}|_(.)", lambda m: m.group(1) or m.group(2), t)  # subscripts inline
    t = re.sub(r"\^\{([^{}]*)\}|\^(.)", lambda m: "^" + (m.group(1) or m.group(2)), t)
    return _plain(t.replace("{", "").replace("}", "").replace("$", ""))


def _caption_text(caption) -> str:
    from docutils import nodes

    parts = []
    for node in caption.findall(lambda n: isinstance(n, (nodes.Text, nodes.math))):
        if isinstance(node, nodes.math):
            parts.append(tex_to_text(node.astext()))
        elif not any(isinstance(a, nodes.math) for a in _ancestors(node, caption)):
            parts.append(str(node))
    return _plain("".join(parts))


def _ancestors(node, stop):
    node = node.parent
    while node is not None and node is not stop:
        yield node
        node = node.parent


def alt_from_captions(doctree) -> int:
    """Set the alt text of every image inside a captioned figure that has none (or only its
    file name) to the caption's text (math as plain text); returns how many images it changed."""
    from docutils import nodes

    changed = 0
    for fig in doctree.findall(nodes.figure):
        caption = next(iter(fig.findall(nodes.caption)), None)
        text = _caption_text(caption) if caption is not None else ""
        if not text:
            continue
        for img in fig.findall(nodes.image):
            alt = img.get("alt", "")
            if not alt.strip() or alt == img.get("uri"):
                img["alt"] = text
                changed += 1
    return changed


def _apply_style_if_matplotlib() -> None:
    try:
        apply_style()
    except ImportError:  # matplotlib absent (only the alt-text helper is used): nothing to style
        pass


_apply_style_if_matplotlib()


def decide_html(table, digits: int = 3):
    """A "what this build can decide" table for glue: every claim and rule in full (pandas cuts
    cells at 50 characters), no index column, numbers rounded, missing values as "—"."""
    import pandas as pd
    from IPython.display import HTML

    t = pd.DataFrame(table).copy()
    num = t.select_dtypes("number").columns
    t[num] = t[num].round(digits)
    t = t.astype(object).where(t.notna(), "—")
    return HTML(t.to_html(index=False, classes="decide-table", border=0))
