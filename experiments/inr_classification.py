"""Classify the image an INR encodes from the INR's weights (accuracy).

    python -m experiments.inr_classification with model=pna dataset=digits seed=0
    python -m experiments.inr_classification with quick=True          # about a minute on a CPU

Every config key with its meaning: ``python -m experiments.inr_classification print_config``.
Runs are written under runs/ (the run directory is printed at the end).
"""
from experiments.tasks import make_experiment

ex = make_experiment("inr_classification")

if __name__ == "__main__":
    ex.run_commandline()
