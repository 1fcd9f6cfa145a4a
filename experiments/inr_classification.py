"""Classify the image an INR encodes from the INR's weights (accuracy).

    python -m experiments.inr_classification with model=pna dataset=digits seed=0
    python -m experiments.inr_classification with quick=True          # about a minute on a CPU

Config keys: see experiments.common.base_config; runs are written under runs/.
"""
from sacred import Experiment

from experiments.common import add_default_observer, base_config, record
from experiments.tasks import run

ex = Experiment("inr_classification")
ex.add_config(base_config())

add_default_observer(ex)


@ex.automain
def main(_run, _config):
    return record(_run, run(dict(_config), "inr_classification", _run))
