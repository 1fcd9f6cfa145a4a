"""Training either model family on zoo loaders, with the same loop, splits and metrics.

Graph models take :class:`torch_geometric.data.Batch` es (targets in
``batch.y``); weight-space models take ``(WeightSpace, targets)`` tuples. A
:class:`Task` says how to predict, what to minimise and what to report.
"""
from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Iterable

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from scipy.stats import kendalltau
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch_geometric.data import Batch
from tqdm.auto import tqdm

from .checkpointing import Checkpoint, Passes
from .devices import resolve_device
from .memory import process_peak_bytes


def split_batch(batch) -> tuple[object, Tensor]:
    """(model input, targets) of a graph Batch or a (WeightSpace, targets) pair."""
    if isinstance(batch, Batch):
        return batch, batch.y
    inputs, targets = batch
    return inputs, targets


def to_device(inputs, device: torch.device):
    return inputs.to(device) if hasattr(inputs, "to") else inputs


def accuracy(pred: Tensor, y: Tensor) -> dict[str, float]:
    return {"accuracy": (pred.argmax(-1) == y).float().mean().item()}


def regression_metrics(pred: Tensor, y: Tensor) -> dict[str, float]:
    """Kendall tau (rank agreement), R^2 and MSE of scalar predictions."""
    p, t = pred.reshape(-1).double().numpy(), y.reshape(-1).double().numpy()
    tau = kendalltau(p, t).statistic if np.ptp(p) > 0 and np.ptp(t) > 0 else 0.0
    ss_res, ss_tot = float(((p - t) ** 2).sum()), float(((t - t.mean()) ** 2).sum())
    return {"tau": float(tau), "r2": 1 - ss_res / ss_tot if ss_tot > 0 else 0.0, "mse": ss_res / len(t)}


@dataclass
class Task:
    """What a model is trained for.

    ``predict(model, inputs)`` -> predictions (default: ``model(inputs)``);
    ``loss(pred, y)``; ``metrics(preds, ys)`` over a whole split -> dict;
    ``main``: the metric that picks the best epoch; ``higher_is_better``;
    ``identity(inputs)``: what leaving the inputs as they are predicts, where a task has
    such a yardstick (editing: each INR's own image); ``solver(inputs)``: a prediction
    computed from each input alone by a fixed rule, no training, where a task has one
    (editing: the output layer refit by least squares to the edited image).
    """

    name: str
    loss: Callable[[Tensor, Tensor], Tensor]
    metrics: Callable[[Tensor, Tensor], dict[str, float]]
    main: str
    higher_is_better: bool = True
    predict: Callable[[nn.Module, object], Tensor] = field(default=lambda model, inputs: model(inputs))
    identity: Callable[[object], Tensor] | None = None
    solver: Callable[[object], Tensor] | None = None


def classification_task() -> Task:
    return Task("classification", lambda p, y: F.cross_entropy(p, y.long()), accuracy, "accuracy")


def regression_task() -> Task:
    return Task("regression", lambda p, y: F.mse_loss(p.reshape(-1), y.reshape(-1).to(p.dtype)),
                regression_metrics, "tau")


@dataclass
class FitResult:
    """What :func:`fit` returns: the best validation step, its val/test metrics and the costs."""

    best_step: int
    val: dict[str, float]
    test: dict[str, float]
    train_seconds: float
    examples_per_second: float  # training networks per second (forward + backward + update)
    peak_memory_mib: float
    parameters: int
    history: list[dict[str, float]]
    state_dict: dict[str, Tensor]


@torch.no_grad()
def evaluate(model: nn.Module, loader: Iterable, task: Task, device: torch.device, amp: bool = False) -> dict[str, float]:
    """The task's metrics (and mean loss) over a whole loader."""
    model.eval()
    preds, ys, losses = [], [], []
    for batch in loader:
        inputs, y = split_batch(batch)
        inputs, y = to_device(inputs, device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            pred = task.predict(model, inputs)
        losses.append(task.loss(pred.float(), y).item() * y.size(0))
        preds.append(pred.float().cpu())
        ys.append(y.cpu())
    preds_all, ys_all = torch.cat(preds), torch.cat(ys)
    return {**task.metrics(preds_all, ys_all), "loss": sum(losses) / len(ys_all)}


class _Predicting(nn.Module):
    """``task.predict(model, inputs)`` as a module's forward, so DDP sees the whole prediction
    (a task may call other methods than ``forward``, e.g. ``model.edit``)."""

    def __init__(self, model: nn.Module, predict: Callable[[nn.Module, object], Tensor]):
        super().__init__()
        self.model, self.predict = model, predict

    def forward(self, inputs) -> Tensor:
        return self.predict(self.model, inputs)


def _log_row(log: Callable[[str, float, int], None], row: dict) -> None:
    """One evaluation's metrics to ``log(name, value, step)``."""
    for k, v in row.items():
        if k != "step":
            log(k, v, row["step"])


def lr_factor(step: int, steps: int, warmup: int = 0) -> float:
    """The learning rate at optimizer step ``step`` (0-based) as a fraction of the peak: cosine decay
    to 0 over ``steps``, times a linear rise over the first ``warmup`` steps ((step + 1) / warmup).
    Adam's first steps move every weight by about the learning rate whatever its gradient; on ViT
    graphs that threw pna's outputs far off (its loss went 0.28 -> 5.7 at the second step)."""
    rise = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return rise * (0.5 * (1 + math.cos(math.pi * min(step, steps) / steps)))


def fit(model: nn.Module, train: Iterable, val: Iterable, test: Iterable, task: Task, steps: int = 500,
        eval_every: int | None = None, lr: float = 1e-3, weight_decay: float = 0.0, warmup: int = 0,
        device: str = "auto", amp: bool = False, log: Callable[[str, float, int], None] | None = None,
        progress: bool = True, distributed: bool = False,
        checkpoint: str | os.PathLike | None = None) -> FitResult:
    """AdamW with cosine decay for ``steps`` optimizer steps (the budget: the same for every
    model whatever its batch cost), passing over ``train`` as often as needed; ``warmup`` > 0:
    the learning rate first rises linearly over that many steps (:func:`lr_factor`).

    Every ``eval_every`` steps (default: ``steps // 20``) and after the last, the model is
    scored on ``val``; the weights of the best validation score are kept and scored on
    ``test`` once, at the end. ``log(name, value, step)`` receives the mean train loss
    since the last evaluation and the validation metrics (Sacred's ``_run.log_scalar``
    fits). ``amp``: bfloat16 autocast.

    ``distributed``: one of the processes of an initialised torch.distributed process group;
    the model trains under DistributedDataParallel (gradients averaged over the processes),
    ``train`` is this process's part of the data (e.g. a DistributedSampler's), ``val`` and
    ``test`` are whole in every process; the logged train loss and the throughput are the
    processes' together.

    ``checkpoint``: a file that holds the whole training state after every evaluation
    (:class:`graphnfn.checkpointing.Checkpoint`: model, optimizer, scheduler, step, best
    validation state, history, RNG states, position in the data order); when it exists, fit
    continues from it, replays its history to ``log``, and ends as an uninterrupted fit would.
    """
    if steps < 1:
        raise ValueError(f"fit: steps must be >= 1, got {steps}")
    if not 0 <= warmup < steps:
        raise ValueError(f"fit: warmup must be in [0, steps={steps}), got {warmup}")
    eval_every = max(1, eval_every or steps // 20)
    if checkpoint is not None and distributed:
        raise ValueError("fit: checkpoint is for one process; distributed fits cannot resume yet")
    dev = resolve_device(device)
    model = model.to(dev)
    predict = _Predicting(model, task.predict)
    if distributed:  # DDP must not wait for gradients a model never makes (monomial and magep leave biases unused)
        predict = DistributedDataParallel(predict, find_unused_parameters=True)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, partial(lr_factor, steps=steps, warmup=warmup))
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    sign = 1 if task.higher_is_better else -1
    saved = None if checkpoint is None else \
        Checkpoint(checkpoint, {"steps": steps, "eval_every": eval_every, "lr": lr, "weight_decay": weight_decay}
                   | ({"warmup": warmup} if warmup else {}))  # the checkpoints of before warmup existed resume
    loop, batches = saved.load(model, opt, sched, train) if saved else (None, Passes(train))
    if loop is None:
        loop = {"step": 0, "best": -math.inf, "best_state": None, "best_step": -1, "history": [], "seconds": 0.0,
                "seen": 0}
    elif log is not None:  # the resumed run's own record holds the whole curve
        for row in loop["history"]:
            _log_row(log, row)
    best, best_state, best_step, history, seconds, seen = (
        loop[k] for k in ("best", "best_state", "best_step", "history", "seconds", "seen"))
    total, count = 0.0, 0
    bar = tqdm(range(loop["step"] + 1, steps + 1), initial=loop["step"], total=steps,
               desc=f"{type(model).__name__} {task.name}", disable=not progress, leave=False)
    model.train()
    start = time.perf_counter()
    for step in bar:
        inputs, y = split_batch(next(batches))
        inputs, y = to_device(inputs, dev), y.to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = task.loss(predict(inputs).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        sched.step()
        # summed on the device (in float64, as Python floats would be): reading the loss every step
        # would make the host wait for the GPU instead of preparing the next batch
        total, count, seen = total + loss.detach().double() * y.size(0), count + y.size(0), seen + y.size(0)
        if step % eval_every and step != steps:
            continue
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        seconds += time.perf_counter() - start
        total = float(total)
        if distributed:  # the train loss over every process's part of the batches
            sums = torch.tensor([total, count], dtype=torch.float64, device=dev)
            dist.all_reduce(sums)
            total, count = sums[0].item(), int(sums[1].item())
        val_metrics = evaluate(model, val, task, dev, amp)
        row = {"step": step, "train_loss": total / count, **{f"val_{k}": v for k, v in val_metrics.items()}}
        history.append(row)
        if log is not None:
            _log_row(log, row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{val_metrics[task.main]:.4f}")
        if sign * val_metrics[task.main] > best:
            best, best_step = sign * val_metrics[task.main], step
            best_state = copy.deepcopy(model.state_dict())
        total, count = 0.0, 0
        model.train()
        if saved is not None:
            saved.save(model, opt, sched, batches, {"step": step, "best": best, "best_state": best_state,
                                                    "best_step": best_step, "history": history, "seconds": seconds,
                                                    "seen": seen})
        start = time.perf_counter()
    model.load_state_dict(best_state)
    if distributed:  # the processes' parts are equal (a DistributedSampler pads the split to share it evenly)
        seen *= dist.get_world_size()
    peak = process_peak_bytes(dev) / 2**20  # CUDA: since this fit's reset; CPU: the process's so far
    return FitResult(best_step, evaluate(model, val, task, dev, amp), evaluate(model, test, task, dev, amp),
                     seconds, seen / max(seconds, 1e-9), peak, sum(p.numel() for p in model.parameters()), history,
                     {k: v.detach().cpu() for k, v in best_state.items()})


def _accumulate(sums: dict, key, square_sum: float, count: int) -> None:
    acc = sums.setdefault(key, [0.0, 0])
    acc[0] += square_sum
    acc[1] += count


class WeightScaler:
    """Divide every weight and bias tensor by its root mean square over a training
    set, so that models see inputs of unit scale (INR weights are ~1e-2).

    One positive scalar per tensor commutes with every symmetry the models use
    (permutations, sign flips, positive scalings). Weight spaces (and attention
    weight spaces): one scale per tensor of each field; neuron graphs: one per depth of the target
    node (edges) or node (biases), which is per tensor for a zoo of one
    architecture. ``scaler(batch)`` returns a scaled copy; a scaled graph batch
    keeps its divisors in ``weight_scale`` [E] and ``bias_scale`` [N], so that
    :meth:`graphnfn.models.GraphNFN.probe_features` can run the real network.
    ``distributed``: ``batches`` is one process's part of the train set; the sums are
    gathered from every process of the torch.distributed group, so all get the same scales.
    """

    def __init__(self, batches: Iterable, distributed: bool = False):
        sums: dict[tuple[str, int], list[float]] = {}
        for batch in batches:
            inputs, _ = split_batch(batch)
            for key, values in self._tensors(inputs):
                _accumulate(sums, key, float(values.double().square().sum()), values.numel())
        if distributed:  # ``batches`` is this process's part of the train set: the scales are of the whole
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, sums)
            sums = {}
            for part in parts:
                for key, (s, n) in part.items():
                    _accumulate(sums, key, s, n)
        self.scales = {k: math.sqrt(s / max(n, 1)) or 1.0 for k, (s, n) in sums.items()}

    @classmethod
    def from_scales(cls, scales: dict) -> "WeightScaler":
        """A scaler with known ``scales`` (those of a trained model's checkpoint)."""
        scaler = cls([])
        scaler.scales = dict(scales)
        return scaler

    @staticmethod
    def _tensors(inputs):
        if isinstance(inputs, Batch):
            from .graph import NODE_COL, WEIGHT_COL, NodeType

            depth_e = inputs.layer[inputs.edge_index[1]]
            has_bias = inputs.node_type != NodeType.INPUT
            for d in torch.unique(inputs.layer).tolist():
                yield ("w", d), inputs.edge_attr[depth_e == d, WEIGHT_COL:]
                yield ("b", d), inputs.x[(inputs.layer == d) & has_bias, NODE_COL["bias"]]
        else:  # WeightSpace / AttentionWeightSpace: named tensor fields (first), each a tuple of tensors
            for name, field in zip(inputs._fields, inputs.tensor_fields):
                for i, t in enumerate(field):
                    yield (name, i), t

    def __call__(self, batch):
        inputs, y = split_batch(batch)
        if isinstance(inputs, Batch):
            from .graph import NODE_COL, WEIGHT_COL

            out = inputs.clone()
            depth = int(out.layer.max()) + 1
            w = torch.tensor([self.scales.get(("w", d), 1.0) for d in range(depth)], dtype=out.edge_attr.dtype)
            b = torch.tensor([self.scales.get(("b", d), 1.0) for d in range(depth)], dtype=out.x.dtype)
            # the divisors travel with the batch: probe features run the network as converted
            out.weight_scale = w[out.layer[out.edge_index[1]]]
            out.bias_scale = b[out.layer]
            out.edge_attr[:, WEIGHT_COL:] /= out.weight_scale.unsqueeze(1)
            out.x[:, NODE_COL["bias"]] /= out.bias_scale
            return out
        # _replace keeps what is not a tensor field (a WeightSpace's activations)
        scaled = inputs._replace(**{name: tuple(t / self.scales.get((name, i), 1.0) for i, t in enumerate(field))
                                    for name, field in zip(inputs._fields, inputs.tensor_fields)})
        return scaled, y
