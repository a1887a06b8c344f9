"""dfrobust — helper package of the deepfake-robustness study.

The package follows the study's pipeline, one home per job (``docs/ARCHITECTURE.md``)::

    core         where things live, the results store (atomic netCDF + provenance), device, seeding, parsers
    data         synthetic benchmark, real-dataset preparation, the manifest, the balanced sampler
    models       detectors behind one interface, published MesoNet weights, training
    attacks      FGSM / PGD / CW (torchattacks), masked NES, the progressive (video) driver
    explainers   Grad-CAM, LIME, RISE, SOBOL, XRAI, random — one interface; SLIC segments
    certify      certified bounds (IBP, CROWN) on the detector's margin; certified RR records
    metrics      RA, RR, complementary metrics, bootstrap, linearity, faithfulness (reductions of records)
    experiments  the record engine (records) and per-chapter tables and parameter checks (robustness, videos, xai, certified, …)
    figures      seaborn figures used by the book
    study        study spec, papermill runner, Jupyter Book build, the ``dfrobust`` CLI, the sweep, perf helpers

Each home imports only homes listed above it (``core`` imports none); a test walks the imports.
"""

__version__ = "0.1.0"

import warnings as _warnings

# timm → huggingface_hub imports tqdm.auto, which warns in a notebook kernel without ipywidgets
# (the study does not need widgets: its progress bars are text); keep the warning off the book's pages.
_warnings.filterwarnings("ignore", message="IProgress not found")
