"""The four tasks: which zoo each needs, what it predicts, how it is scored.

A :class:`TaskDef` is all that differs between the experiments; each Sacred file
(and :mod:`experiments.compare`) runs one through :func:`run`.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from sacred import Experiment
from torch import Tensor, nn

from graphnfn.execute import run_graph
from graphnfn.graph import NodeType
from graphnfn.paramshare import WeightSpace
from graphnfn.trained import build_from_card
from graphnfn.training import Task, classification_task, regression_task
from graphnfn.zoo import (Zoo, coordinate_grid, edit_images, editing_target, make_classifier_zoo, make_siren_zoo,
                          siren_recipe)
from graphnfn.zoo.siren import siren_forward, siren_layers

from .common import ensure_zoo, learns, make_loaders, model_card, run_task
from .config import check_config, new_experiment, run_directory
from .resume import check_same_config, checkpoint_file

# Zoo sizes of the default (CPU, minutes) and quick (tests, demo smoke runs) configs,
# by maker option; an explicit zoo_<option> config key wins.
SIREN_QUICK = {"limit": 300, "steps": 200}
CLASSIFIER_DEFAULT = {"networks": 300, "epochs": 8}
CLASSIFIER_QUICK = {"networks": 40, "epochs": 3}
#: the SIREN recipe settings the config sets, as zoo_<setting> keys
SIREN_KEYS = ("init", "resolution", "per_image", "steps")


def _zoo_options(cfg: dict, names: tuple[str, ...], defaults: dict) -> dict:
    """Maker options ``names`` from their zoo_<name> config keys; ``defaults`` where a key is None."""
    values = {n: defaults.get(n) if cfg[f"zoo_{n}"] is None else cfg[f"zoo_{n}"] for n in names}
    return {n: v for n, v in values.items() if v is not None}


def _siren_zoo(cfg: dict) -> Zoo:
    """The data set's SIREN zoo recipe (graphnfn.zoo.siren_recipe) with the quick
    size and any zoo_* key that is set."""
    options = _zoo_options(cfg, ("seed", "limit", *SIREN_KEYS), SIREN_QUICK if cfg["quick"] else {})
    recipe = siren_recipe(cfg["dataset"], **{k: v for k, v in options.items() if k in SIREN_KEYS})
    # the zoo's directory is named by the seed, size and recipe settings the config can change
    name = {**options, "init": recipe.init, "resolution": recipe.resolution, "per_image": recipe.per_image,
            "steps": recipe.fit.steps}
    return ensure_zoo(cfg, "siren", name, lambda path: make_siren_zoo(
        path, dataset=cfg["dataset"], data_dir=cfg["data_dir"], seed=options["seed"], recipe=recipe,
        limit=options.get("limit"), device=cfg["device"], wait=True))


def _classifier_zoo(kind: str, cfg: dict) -> Zoo:
    options = _zoo_options(cfg, ("seed", "limit", "networks", "epochs"),
                           CLASSIFIER_QUICK if cfg["quick"] else CLASSIFIER_DEFAULT)
    return ensure_zoo(cfg, kind, options, lambda path: make_classifier_zoo(
        kind, path, dataset=cfg["dataset"], data_dir=cfg["data_dir"], device=cfg["device"], wait=True, **options))


def editing_task(resolution: int, w0: float, edit: str) -> Task:
    """Predict the edited INR; the loss is the MSE between the image it draws and
    the edited image ([B, 1, R, R] in [0, 1]). The task's ``identity`` is the image
    each INR draws unedited (the ``no-edit`` yardstick); its ``solver`` the
    ``refit-output`` yardstick (:func:`refit_output`)."""
    coords = coordinate_grid(resolution)

    def draw(inputs) -> Tensor:
        """[B, 1, R, R]: the images the INRs of a weight space or a graph batch draw."""
        if isinstance(inputs, WeightSpace):
            params = _siren_params(inputs)
            out = siren_forward(params, coords.to(params[0]), w0)[..., 0]
        else:  # a graph batch, drawn by running it on the grid
            h = run_graph(coords.to(inputs.x), inputs.x, inputs.edge_index, inputs.edge_attr, inputs.node_type,
                          inputs.edge_type, inputs.layer, max(len(s.node_groups) for s in inputs.spec))
            out = h[inputs.node_type == NodeType.OUTPUT].reshape(-1, coords.size(0))
        return ((out + 1) / 2).reshape(-1, 1, resolution, resolution)

    def predict(model: nn.Module, inputs) -> Tensor:
        # paramshare: equivariant deltas on the weights and biases; graph model: the edited graph
        return draw(inputs + model(inputs) if isinstance(inputs, WeightSpace) else model.edit(inputs))

    def metrics(pred: Tensor, y: Tensor) -> dict[str, float]:
        return {"mse": F.mse_loss(pred, y).item()}

    return Task("editing", lambda p, y: F.mse_loss(p, y.to(p.dtype)), metrics, "mse", higher_is_better=False,
                predict=predict, identity=draw,
                solver=lambda inputs: refit_output(inputs, coords, w0, edit_images(draw(inputs).clamp(0, 1), edit)))


def _siren_params(space: WeightSpace) -> list[Tensor]:
    """The SIRENs of a one-channel weight space as :func:`siren_forward`'s params."""
    return [t[:, 0] for pair in zip(space.weights, space.biases) for t in pair]


def refit_output(inputs: WeightSpace, coords: Tensor, w0: float, target: Tensor) -> Tensor:
    """The ``refit-output`` yardstick of editing: each SIREN keeps its hidden layers, and its
    output layer (weights and bias) is refit by least squares so that the image it draws
    matches ``target``, the edit of the image it drew before (computed from its weights alone:
    no training, no data set). The fit is in float64, per INR, on the P = R*R grid points.

    Args:
        inputs: a weight space of B SIRENs with one output channel.
        coords: [P, 2], the grid the images are drawn on (row-major, as ``target``).
        w0: the SIRENs' frequency factor.
        target: [B, 1, R, R] in [0, 1].
    Returns:
        [B, 1, R, R]: the images the refit INRs draw.
    """
    params = [t.double() for t in _siren_params(inputs)]
    hidden = siren_layers(params, coords.to(params[0]), w0)[-2]  # [B, P, n]: the last hidden layer
    design = torch.cat([hidden, torch.ones_like(hidden[..., :1])], -1)  # [B, P, n + 1]
    wanted = (2 * target.double() - 1).reshape(design.size(0), -1, 1)  # the output in the [-1, 1] convention
    # minimum-norm least squares (SVD): directions of the hidden layer below 1e-8 of its largest
    # singular value are dropped, so near-collinear units get no huge, rounding-amplified weights
    solution = torch.linalg.lstsq(design, wanted, rcond=1e-8, driver="gelsd").solution
    out = (design @ solution)[..., 0]
    return ((out + 1) / 2).to(target.dtype).reshape(target.shape)


@dataclass
class TaskDef:
    """One experiment: its zoo, the records it uses, its target and its head."""

    name: str
    zoo_kind: str  # "siren", "cnn" or "transformer"
    readout: str  # "invariant" or "equivariant"
    d_out: Callable[[Zoo], int]
    target: Callable[[dict, Zoo], Any]
    task: Callable[[dict, Zoo], Task]
    steps: int  # default optimizer-step budget of every model (about 20 passes over the default zoo)
    config: Callable | None = None  # the task's own Sacred config scope


def editing_config():
    edit = "dilate"  # the edit to learn: dilate, erode, gradient, contrast


def resume_config():
    resume = None  # a run directory of this experiment cut off mid-training (same config): continue from its checkpoint


def classifier_config():
    checkpoints = "final"  # "final": each network's last checkpoint; "all": every checkpoint


TASKS = {
    "inr_classification": TaskDef(
        "inr_classification", "siren", "invariant", lambda zoo: 1 + max(r["label"] for r in zoo.records),
        lambda cfg, zoo: "label", lambda cfg, zoo: classification_task(), 500),
    "inr_editing": TaskDef(
        "inr_editing", "siren", "equivariant", lambda zoo: 1,
        lambda cfg, zoo: editing_target(zoo, cfg["edit"], cfg["data_dir"]),
        lambda cfg, zoo: editing_task(zoo.config["hparams"]["resolution"], zoo.config["hparams"]["w0"], cfg["edit"]),
        500,
        editing_config),
    "cnn_generalization": TaskDef(
        "cnn_generalization", "cnn", "invariant", lambda zoo: 1,
        lambda cfg, zoo: "label", lambda cfg, zoo: regression_task(), 100, classifier_config),
    "transformer_generalization": TaskDef(
        "transformer_generalization", "transformer", "invariant", lambda zoo: 1,
        lambda cfg, zoo: "label", lambda cfg, zoo: regression_task(), 100, classifier_config),
}


def run(cfg: dict, task_name: str, _run=None, checkpoint: Path | None = None) -> dict[str, Any]:
    """Make or open the zoo, build the loaders and the model, train (continuing from
    ``checkpoint`` if that file exists: :mod:`experiments.resume`), report."""
    spec = TASKS[task_name]
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    zoo = _siren_zoo(cfg) if spec.zoo_kind == "siren" else _classifier_zoo(spec.zoo_kind, cfg)
    where = (lambda r: r.get("final", True)) if cfg.get("checkpoints", "final") == "final" else None
    # editing draws the edited INR from the raw weights, so its inputs stay unscaled
    loaders, scaler = make_loaders(cfg, zoo, spec.target(cfg, zoo), where, scale=spec.readout == "invariant")
    sample = loaders["train"][0] if isinstance(loaders["train"], list) else next(iter(loaders["train"]))
    inputs = sample if not isinstance(sample, (tuple, list)) else sample[0]
    siren = zoo.config.get("kind") == "siren"
    probe_inputs = coordinate_grid(8) if siren else None
    cfg = {**cfg, "steps": cfg["steps"] or (50 if cfg["quick"] else spec.steps)}
    torch.manual_seed(cfg["seed"])
    card = model_card(cfg, inputs, spec.d_out(zoo), spec.readout, probe_inputs, scaler, task_name,
                      zoo.config["hparams"]["w0"] if siren else None)
    model = build_from_card(card, inputs) if learns(cfg["model"]) else None
    summary = run_task(cfg, spec.task(cfg, zoo), loaders, model, _run, card, checkpoint)
    summary["zoo"] = {"path": str(zoo.root), "kind": zoo.config.get("kind"),
                      "init": zoo.config.get("hparams", {}).get("init")}
    return summary


def describe_zoo(zoo: dict) -> str:
    """A table title's words for a zoo; a shared-permuted SIREN zoo is named for what it is."""
    if zoo["init"] == "shared-permuted":
        return ("shared-permuted SIREN zoo: a symmetry diagnostic, every INR a relabelled copy of one basin's "
                "solution (align-linear shows how far neuron matching alone gets)")
    return f"{zoo['init']}-init SIREN zoo" if zoo["kind"] == "siren" else f"{zoo['kind']} zoo"


def make_experiment(task_name: str) -> Experiment:
    """The Sacred experiment of one task: ``python -m experiments.<task> with key=value``
    (``print_config`` lists every key with its comment). Its result is the test metric (what
    Sacred's SQL observer stores as a number); the whole summary is in the run's info."""
    ex = new_experiment(task_name, *filter(None, [TASKS[task_name].config]), resume_config)

    @ex.main
    def main(_run, _config):
        cfg = dict(_config)
        check_config(cfg, [cfg["model"]], task_name)
        if cfg["resume"]:
            check_same_config(cfg)
        checkpoint = checkpoint_file(cfg, _run, f"ckpt-{cfg['model']}-seed{cfg['seed']}.pt")
        summary = run(cfg, task_name, _run, checkpoint)
        if checkpoint is not None:  # the result and the best weights are saved: nothing left to resume
            checkpoint.unlink(missing_ok=True)
        _run.info["summary"] = summary
        folder = run_directory(_run)
        print(f"{task_name}: test {summary['metric']} {summary['test'][summary['metric']]:.4f}"
              + (f"; run directory {folder}" if folder else ""))
        return summary["test"][summary["metric"]]

    return ex
