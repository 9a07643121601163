"""depthlab for any ``torch.nn.Module``: the probes, a training-loop watcher and theory.

Optional extra: ``pip install depthlab[torch]``; ``import depthlab`` never imports torch.

Public API::

    import depthlab.torch as dlt

    df = dlt.probe(model, x, y, loss_fn)        # one forward/loss/backward; model, mode,
                                                 # buffers, .grad and RNG left as found
    layers = dlt.discover(model, x)             # weight layers numbered in execution order
    watch = dlt.Watch(model, every=10, out="runs/")
    for x, y in loader:                          # the user's own loop
        opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward()
        watch.step(loss)                         # after backward, before opt.step()
        opt.step()
    watch.close()                                # hooks removed; run stored in runs/depthlab.db
    table = watch.frame()
    pred = dlt.predict(model, x, y, loss_fn)     # variance-propagation theory beside measurement

Every table has columns ``step, layer, module, quantity, value`` (``predict`` adds
``predicted``); quantity names and meanings are those of :mod:`depthlab.probes.stats`
(see :mod:`depthlab.torch.probe`). Layers: :mod:`depthlab.torch.layers`.
"""

from __future__ import annotations

from .doctor import doctor
from .hooks import Recording
from .layers import (
    ACTIVATIONS,
    NORMS,
    ActivationSpec,
    LayerInfo,
    activation_spec,
    check_model,
    discover,
    weight_modules,
)
from .predict import predict
from .probe import COLUMNS, probe
from .watch import Watch

__all__ = [
    "ACTIVATIONS",
    "COLUMNS",
    "NORMS",
    "ActivationSpec",
    "LayerInfo",
    "Recording",
    "Watch",
    "activation_spec",
    "check_model",
    "discover",
    "doctor",
    "predict",
    "probe",
    "weight_modules",
]
