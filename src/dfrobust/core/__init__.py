"""The base layer: what every other home needs, and nothing above it.

``core`` owns where things live (:mod:`.paths`), the results store — atomic netCDF writes with
provenance (:mod:`.results`) —, device choice, seeding and batch sizes (:mod:`.device`), the
parsers shared by every parameter check (:mod:`.params`) and the reader of the per-profile
settings in ``notebooks/study.yml`` that the low layers need (:mod:`.profiles`).
It imports only the standard library, numpy, torch, xarray and yaml — never another
``dfrobust`` home — so ``data`` and ``models`` can stand on it without reaching up to ``study``.
"""
