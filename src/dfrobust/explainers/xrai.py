"""XRAI through ``saliency.core.XRAI`` (PAIR-code saliency) on integrated gradients from torch.

XRAI keeps its own Felzenszwalb segments.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Explainer, _model_device, register



@register
class XRAI(Explainer):
    """XRAI region attributions of the target class (needs gradients)."""

    name = 'xrai'
    defaults = {"steps": 100, "algorithm": "full"}
    needs_gradients = True

    def explain(self, model, images, targets, *, seed, batch_size, segments):
        steps = self.options['steps']
        algorithm = self.options['algorithm']
        import saliency.core as saliency

        dev = _model_device(model)

        def call_model_function(batch, call_model_args=None, expected_keys=None):
            t = call_model_args["target"]
            x = torch.from_numpy(np.ascontiguousarray(np.asarray(batch).transpose(0, 3, 1, 2))).float().to(dev)
            x.requires_grad_(True)
            logits = model(x)
            score = torch.log_softmax(logits, dim=1)[:, t].sum()
            (grad,) = torch.autograd.grad(score, x)
            return {saliency.INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).detach().cpu().numpy()}

        xrai = saliency.XRAI()
        params = saliency.XRAIParameters(steps=int(steps), algorithm=algorithm)
        out = []
        for i, t in enumerate(targets):
            img = images[i].permute(1, 2, 0).cpu().numpy().astype(np.float32)
            m = xrai.GetMask(img, call_model_function, call_model_args={"target": t},
                             extra_parameters=params, batch_size=batch_size)
            out.append(np.nan_to_num(np.asarray(m, dtype=np.float32), neginf=0.0, posinf=0.0))
        return np.stack(out)
