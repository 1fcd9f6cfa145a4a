"""Predict a CNN's test accuracy from its weights (Kendall tau, R^2).

    python -m experiments.cnn_generalization with model=pna dataset=digits seed=0
    python -m experiments.cnn_generalization with quick=True          # about a minute on a CPU

Every config key with its meaning: ``python -m experiments.cnn_generalization print_config``.
Runs are written under runs/ (the run directory is printed at the end).
"""
from experiments.tasks import make_experiment

ex = make_experiment("cnn_generalization")

if __name__ == "__main__":
    ex.run_commandline()
