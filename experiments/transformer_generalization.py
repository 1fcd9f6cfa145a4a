"""Predict a small ViT's test accuracy from its weights (Kendall tau, R^2).

    python -m experiments.transformer_generalization with model=pna dataset=digits seed=0
    python -m experiments.transformer_generalization with quick=True          # about a minute on a CPU

Config keys: see experiments.common.base_config; runs are written under runs/.
"""
from sacred import Experiment

from experiments.common import add_default_observer, base_config, record
from experiments.tasks import run

ex = Experiment("transformer_generalization")
ex.add_config(base_config())
ex.add_config(checkpoints="final")  # "final": last epoch of each network; "all": every checkpoint
add_default_observer(ex)


@ex.automain
def main(_run, _config):
    return record(_run, run(dict(_config), "transformer_generalization", _run))
