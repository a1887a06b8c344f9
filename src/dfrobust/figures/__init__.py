"""Figures of the book (matplotlib/seaborn), one module per chapter; each returns a Figure."""
