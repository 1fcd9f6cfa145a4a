"""Edit an INR's weights so its image becomes dilated/eroded/gradient/contrast (test MSE to the edited image).

    python -m experiments.inr_editing with model=pna dataset=digits seed=0
    python -m experiments.inr_editing with quick=True          # about a minute on a CPU

Config keys: see experiments.common.base_config; runs are written under runs/.
"""
from sacred import Experiment

from experiments.common import add_default_observer, base_config, record
from experiments.tasks import run

ex = Experiment("inr_editing")
ex.add_config(base_config())
ex.add_config(edit="dilate")  # dilate, erode, gradient, contrast
add_default_observer(ex)


@ex.automain
def main(_run, _config):
    return record(_run, run(dict(_config), "inr_editing", _run))
