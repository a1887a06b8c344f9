"""dfrobust — helper package of the deepfake-robustness study.

The package follows the study's pipeline, one module per job::

    paths       where data, checkpoints, results and the executed book live
    study       the study spec (notebooks/study.yml): profiles and parameter validation
    runner      papermill execution of the notebook templates + Jupyter Book build
    cli         the ``dfrobust`` command line (typer); the Makefile calls it
    results     tidy xarray results with provenance, atomic netCDF writes
    device      device choice, seeding, automatic batch size
    data        synthetic benchmark, real-dataset preparation, the manifest
    models      detectors behind one interface, published MesoNet weights, training
    attacks     FGSM / PGD / CW on the two-logit interface (torchattacks)
    metrics     RA, RR and complementary metrics as reductions of per-sample records
    robustness  attack sweeps that produce per-sample records
    videos      video-level evaluation, per-frame vs progressive attacks
    explain     XAI explainers behind one interface; segments; masked NES attack
    figures     seaborn figures used by the book
"""

__version__ = "0.1.0"

import warnings as _warnings

# timm → huggingface_hub imports tqdm.auto, which warns in a notebook kernel without ipywidgets
# (the study does not need widgets: its progress bars are text); keep the warning off the book's pages.
_warnings.filterwarnings("ignore", message="IProgress not found")
