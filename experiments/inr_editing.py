"""Edit an INR's weights so its image becomes dilated/eroded/gradient/contrast (test MSE to the edited image).

    python -m experiments.inr_editing with model=pna dataset=digits seed=0
    python -m experiments.inr_editing with quick=True          # about a minute on a CPU

Every config key with its meaning: ``python -m experiments.inr_editing print_config``.
Runs are written under runs/ (the run directory is printed at the end).
"""
from experiments.tasks import make_experiment

ex = make_experiment("inr_editing")

if __name__ == "__main__":
    ex.run_commandline()
