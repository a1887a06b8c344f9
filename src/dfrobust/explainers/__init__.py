"""Explainers: the XAI tools of the study behind one interface, and the segments they rank.

``explainers`` owns Grad-CAM (:mod:`.gradcam`), LIME (:mod:`.lime`), RISE (:mod:`.rise`), SOBOL
(:mod:`.sobol`), XRAI (:mod:`.xrai`) and the random baseline (:mod:`.random`), each an
:class:`~.base.Explainer` registered by name, plus the SLIC segments and rankings
(:mod:`.segments`). It imports only torch, numpy, the tools' libraries and ``dfrobust.core``.

Adding an explainer: one module with a registered ``Explainer`` subclass, and one import line
here (see ``docs/ARCHITECTURE.md``).
"""

from .base import (DEFAULTS, EXPLAINERS, TOOLS, Explainer, batched_proba, check_tool, explain, make_explainer,
                   register, warmup)
from . import gradcam, lime, rise, sobol, xrai, random  # noqa: E402,F401  (registration order = TOOLS order)
from .gradcam import gradcam_layer, last_conv_layer
from .rise import rise_masks
from .sobol import jansen_total_order, sobol_design

__all__ = ["DEFAULTS", "EXPLAINERS", "TOOLS", "Explainer", "batched_proba", "check_tool", "explain",
           "make_explainer", "register", "warmup", "gradcam_layer", "last_conv_layer", "rise_masks",
           "jansen_total_order", "sobol_design"]
