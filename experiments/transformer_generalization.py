"""Predict a small ViT's test accuracy from its weights (Kendall tau, R^2).

    python -m experiments.transformer_generalization with model=pna dataset=digits seed=0
    python -m experiments.transformer_generalization with quick=True          # about a minute on a CPU

Every config key with its meaning: ``python -m experiments.transformer_generalization print_config``.
Runs are written under runs/ (the run directory is printed at the end).
"""
from experiments.tasks import make_experiment

ex = make_experiment("transformer_generalization")

if __name__ == "__main__":
    ex.run_commandline()
