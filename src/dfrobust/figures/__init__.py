"""Figures of the book (matplotlib/seaborn), one module per chapter; each returns a Figure.

Every figure function ends with :func:`finish`, which detaches the figure from pyplot: the
notebook shows it exactly once, where it glues or displays it, instead of the inline backend
drawing it a second time at the end of the cell. The modules never choose a matplotlib backend:
that is the notebook's (inline) or the environment's (Agg when headless) business.
"""

from __future__ import annotations


def finish(fig):
    """Detach ``fig`` from pyplot (it still renders when glued or displayed) and return it."""
    import matplotlib.pyplot as plt

    plt.close(fig)
    return fig
