"""The study: spec, runner and command line — the top layer, which may import every other home.

``study`` owns the study spec (``notebooks/study.yml``: profiles, notebooks and the parameters
each profile gives them; :mod:`.spec`), the papermill runner and the Jupyter Book build
(:mod:`.runner`), the ``dfrobust`` command line (:mod:`.cli`) and the performance helpers of the
appendix and ``bench/`` (:mod:`.perf`). Nothing below it imports from here.
"""

from .spec import (PROFILES, NotebookSpec, Study, StudyError, check_params, declared_parameters, load_study, params_json,
                   parse_override, resolve_params)

__all__ = ["PROFILES", "NotebookSpec", "Study", "StudyError", "check_params", "declared_parameters", "load_study",
           "params_json", "parse_override", "resolve_params"]
