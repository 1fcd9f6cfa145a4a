"""Training one image classifier of a zoo (CNN or ViT) and scoring its checkpoints.

Both classifier zoos draw per-network hyperparameters (optimizer, learning
rate, L2, dropout, training fraction, initialisation) and record train/test
accuracy and loss at several epochs, as the Small CNN Zoo does (it kept epochs
0, 1, 2, 3, 20, 40, 60, 80, 86 of 86).
"""
from __future__ import annotations

import math
from typing import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}


def checkpoint_epochs(epochs: int) -> list[int]:
    """Epochs 0 (initialisation), 1, 2, 3 and every quarter of training, up to ``epochs``."""
    return sorted({e for e in (0, 1, 2, 3) if e <= epochs} | {epochs * q // 4 for q in range(1, 5)})


def log_uniform(gen: torch.Generator, low: float, high: float) -> float:
    u = float(torch.rand((), generator=gen))
    return math.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def choice(gen: torch.Generator, options):
    return options[int(torch.randint(len(options), (), generator=gen))]


@torch.no_grad()
def score_classifier(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 1024) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of ``model`` in eval mode."""
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, len(labels), batch_size):
        logits = model(images[start:start + batch_size])
        y = labels[start:start + batch_size]
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(1) == y).sum())
    return correct / len(labels), loss / len(labels)


def kernels(model: nn.Module) -> list[Tensor]:
    """The Conv and Linear weights, not the biases: what the published zoos' L2 acts on (Keras' kernel regulariser)."""
    return [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def train_classifier(model: nn.Module, hparams: Mapping, data: Mapping[str, tuple[Tensor, Tensor]], epochs: int,
                     batch_size: int, gen: torch.Generator) -> Iterator[tuple[int, dict[str, float]]]:
    """Train ``model`` and yield ``(epoch, metrics)`` at :func:`checkpoint_epochs`
    (the model holds that checkpoint's weights while the caller reads them).

    ``hparams``: ``optimizer`` (sgd / adam / rmsprop), ``learning_rate``,
    ``l2reg`` (added as l2reg * sum of squares of :func:`kernels`), ``train_fraction`` (the first fraction of a seeded
    shuffle of the training images). ``data``: ``train`` and ``test`` (images, labels).
    """
    train_x, train_y = data["train"]
    keep = torch.randperm(len(train_y), generator=gen)[:max(1, int(len(train_y) * hparams["train_fraction"]))]
    train_x, train_y = train_x[keep], train_y[keep]
    opt = OPTIMIZERS[hparams["optimizer"]](model.parameters(), lr=hparams["learning_rate"])
    checkpoints = checkpoint_epochs(epochs)
    for epoch in range(epochs + 1):
        if epoch in checkpoints:
            train_acc, train_loss = score_classifier(model, train_x, train_y)
            test_acc, test_loss = score_classifier(model, *data["test"])
            yield epoch, {"train_accuracy": train_acc, "train_loss": train_loss,
                          "test_accuracy": test_acc, "test_loss": test_loss}
        if epoch == epochs:
            return
        model.train()
        order = torch.randperm(len(train_y), generator=gen)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(train_x[idx]), train_y[idx])
            if hparams["l2reg"] > 0:
                loss = loss + hparams["l2reg"] * sum(p.pow(2).sum() for p in kernels(model))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
