"""The experiments' configuration: one Sacred config scope with a comment per key (what
``print_config`` shows), the named configs, and the checks that run before anything trains.

    python -m experiments.inr_classification print_config
    python -m experiments.compare with quick task=cnn_generalization
"""
from __future__ import annotations

import os
import sys
from typing import Callable

from sacred import Experiment
from sacred.observers import FileStorageObserver

from graphnfn.datasets import DATASETS
from graphnfn.zoo import WeightAugment
from graphnfn.zoo.makers import SIREN_RECIPES

from experiments import distributed


def shared_config():
    """Keys shared by every task (Sacred reads the comments as the keys' documentation)."""
    seed = 0  # model initialisation and batch order (the zoo has its own seed, zoo_seed)
    model = "pna"  # a graph model (pna, transformer), a paramshare model (nfn-hnp, nft, ...) or a baseline
    dataset = "digits"  # digits (embedded), fashion-mnist or mnist (IDX files)
    data_dir = None  # where the data set's files are (None: its usual place)
    zoo = None  # an existing zoo (ours, Small CNN Zoo, NFN or DWSNets INRs: docs/zoos.md); None: made under zoo_root
    zoo_root = "zoos"  # where default zoos are made, one directory per recipe (resumed if interrupted)
    quick = False  # a small zoo and 50 steps: about a minute per model on 2 CPU cores
    limit = None  # use at most this many zoo entries per split
    steps = None  # optimizer steps of every model (None: the task's default; 50 with quick)
    eval_every = None  # validate every this many steps (None: steps // 20); the best step is tested
    batch_size = 64  # networks per batch, the same for every model
    lr = 1e-3  # AdamW learning rate (cosine decay to 0 over the steps)
    weight_decay = 0.0  # AdamW weight decay
    dropout = 0.0  # training only: graph models drop entries of every layer's node and edge update; parameter-sharing models, stat, flat-mlp and probe-mlp the hidden units of their MLP head (invariant readout; of their edit readouts only flat-mlp's has one)
    warmup = 0  # steps of linear learning-rate warmup before the cosine decay, the same for every model (0: none)
    device = "auto"  # auto (CUDA when available), cpu, cuda
    threads = None  # torch CPU threads. None: torch's default, one per core (fastest on an idle machine); 1 when other jobs share the cores
    workers = 0  # processes that convert the zoo's networks into batches (DataLoader num_workers; 0: the training process). With augment they redraw every pass beside the training, which a GPU needs (per-network augmentation in the training process held a step at 0.26 s on an H200); the draws depend on workers, so a run repeats exactly at the same workers
    amp = False  # bfloat16 autocast
    d_hidden = 32  # width: graph models' d_hidden, paramshare models' hidden
    n_layers = 3  # graph models: message-passing / attention layers
    heads = 4  # graph transformer backbone: attention heads
    fourier = 16  # both families: Gaussian Fourier frequencies per weight and bias (0: raw weights)
    positional = True  # graph models: learned embeddings of input/output positions
    layer_embedding = True  # graph models: learned embedding of each node's layer depth
    probe = False  # INR zoos, both families: every neuron's activation on probe inputs (graph models: node features; parameter-sharing models: bias channels; probe-mlp: always)
    symmetry = None  # graph models: None, "sign" or "scale" canonical forms (sign-gnn has sign built in)
    pool = "graph"  # graph models' invariant readout: pool each graph whole ("graph") or each layer depth apart ("layer")
    tensor_stats = False  # graph models' invariant readout also reads stat's per-tensor statistics: True, "fourier"
    recompute = None  # transformer: recompute per-edge attention terms in backward (less memory; None: large batches only)
    phase = False  # INR tasks: every network (all splits, both families) with each sine neuron's bias reduced to w0 * b in [-pi/2, pi/2] (outgoing weights negated per pi shift): one representative of sine's phase symmetry (graphnfn.zoo.augment.canonical_phase)
    augment = None  # redraw the training networks every pass, under weight symmetries or mirrored: True or "permute" (hidden neurons; always on for flat-mlp-aug), "sign" (sign flips of neurons before sine/tanh), "mirror" (INR tasks: half the INRs drawn mirrored left-right), "dihedral" (INR tasks: each INR drawn flipped, transposed or rotated, one of the 8 symmetries of the square; an editing target moves along), combined with "+"; None: as they are
    zero_output = False  # editing: the output layer starts at zero, so edits start as the identity
    edge_product = 0  # editing, pna and transformer: the edge readout adds a bilinear term of each edge's two end states of this rank (0: none)
    edit_scale = 0.01  # editing: edits are multiplied by learned scales starting here (per tensor / layer depth; None: off)
    zoo_seed = 0  # the default zoo's seed
    zoo_limit = None  # entries in the default zoo (None: the recipe's)
    zoo_steps = None  # SIREN fitting steps (None: the recipe's)
    zoo_init = None  # SIREN init: independent, shared or shared-permuted (None: the data set's recipe)
    zoo_resolution = None  # SIREN: images resized to R x R before fitting (None: the recipe's)
    zoo_per_image = None  # SIREN: INRs per image (None: the recipe's)
    zoo_networks = None  # CNN / transformer zoos: networks (None: 300; quick: 40)
    zoo_epochs = None  # CNN / transformer zoos: training epochs per network (None: 8; quick: 3)


def distributed_config():
    """What torchrun sets (experiments.distributed): recorded with every run, checked, never set by hand."""
    world_size = int(os.environ.get("WORLD_SIZE", 1))  # processes training together (torchrun); batch_size is their total


def quick():
    """A small zoo and 50 steps: about a minute per model on 2 CPU cores."""
    quick = True  # a small zoo and 50 steps


def fmnist():
    """Fashion-MNIST from its IDX files (Debian: apt-get install dataset-fashion-mnist)."""
    dataset = "fashion-mnist"  # Fashion-MNIST IDX files


NAMED_CONFIGS = {"quick": quick, "fmnist": fmnist}


def check_config(cfg: dict, models: list[str], task: str) -> None:
    """ValueError naming the key for a dataset, model or task that does not exist, before
    any zoo is made or any model trains."""
    from graphnfn.registry import EDIT_REFERENCES, check_dropout, check_tensor_stats, family
    from experiments.tasks import TASKS

    if task not in TASKS:
        raise ValueError(f"task {task!r}: choose one of {sorted(TASKS)}")
    known = SIREN_RECIPES if TASKS[task].zoo_kind == "siren" else DATASETS
    if cfg["dataset"] not in known:
        raise ValueError(f"dataset {cfg['dataset']!r}: {task} knows {sorted(known)}")
    for model in models:
        family(model)
    for baseline in ("align-linear", "probe-mlp"):
        if baseline in models and TASKS[task].readout != "invariant":
            raise ValueError(f"{baseline} has no {task} readout: leave it out of models")
    for reference in EDIT_REFERENCES:
        if reference in models and TASKS[task].readout != "equivariant":
            raise ValueError(f"{reference} is a yardstick of editing, not of {task}: leave it out of models")
    if cfg.get("probe") and TASKS[task].zoo_kind != "siren":
        raise ValueError(f"probe=True runs every network on probe inputs (a coordinate grid): INR zoos only, "
                         f"not {task}'s {TASKS[task].zoo_kind} networks")
    augment = weight_augment(cfg)
    if augment is not None and (augment.mirror is not None or augment.dihedral) and TASKS[task].zoo_kind != "siren":
        raise ValueError(f"augment={cfg['augment']} moves the image an INR draws: INR tasks only, "
                         f"not {task}'s {TASKS[task].zoo_kind} networks")
    if cfg.get("phase", False) not in (True, False):
        raise ValueError(f"phase must be True or False, got {cfg['phase']!r}")
    if cfg.get("phase") and TASKS[task].zoo_kind != "siren":
        raise ValueError(f"phase=True reduces the phases of sine neurons: INR tasks only, not {task}'s "
                         f"{TASKS[task].zoo_kind} networks")
    check_tensor_stats(cfg.get("tensor_stats", False))
    check_edge_product(cfg.get("edge_product", 0), task, models)
    check_dropout(cfg.get("dropout", 0.0))
    if cfg["threads"] is not None and cfg["threads"] < 1:
        raise ValueError(f"threads must be >= 1 or None, got {cfg['threads']}")
    if not isinstance(cfg.get("workers", 0), int) or cfg.get("workers", 0) < 0:
        raise ValueError(f"workers must be an integer >= 0 (DataLoader processes), got {cfg.get('workers')!r}")


def check_edge_product(rank, task: str, models: list[str]) -> None:
    """ValueError unless ``edge_product`` is a rank >= 0 that only editing's pna/transformer rows use."""
    from graphnfn.registry import PROBE_MLP, SIGN_GNN
    from experiments.tasks import TASKS

    if not rank:
        return
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 0:
        raise ValueError(f"edge_product must be a rank >= 0 (0: none), got {rank!r}")
    if TASKS[task].readout != "equivariant":
        raise ValueError(f"edge_product is a term of the equivariant (editing) readout, not of {task}")
    refused = sorted(set(models) & {SIGN_GNN, PROBE_MLP})
    if refused:
        raise ValueError(f"edge_product: {refused[0]} has no such term; leave it out of models or set edge_product=0")


#: the ``augment`` key's names, as WeightAugment's fields and values: two symmetries, and two moves
#: of the image an INR draws: the left-right mirror (the column coordinate of
#: graphnfn.zoo.coordinate_grid) and the 8 symmetries of the square (an edited image follows)
AUGMENTATIONS = {"permute": ("permute", True), "sign": ("sign_flip", True), "mirror": ("mirror", 1),
                 "dihedral": ("dihedral", True)}


def weight_augment(cfg: dict, model: str | None = None) -> WeightAugment | None:
    """The training split's augmentation the ``augment`` key asks for (``model``'s: flat-mlp-aug
    always permutes); None for none. ValueError for an unknown name."""
    value = cfg["augment"]
    names = {"permute"} if value is True else set() if value in (False, None) else set(str(value).split("+"))
    unknown = names - set(AUGMENTATIONS)
    if unknown:
        raise ValueError(f"augment={value!r}: {sorted(unknown)} is not one of {sorted(AUGMENTATIONS)} "
                         f"(combine them with '+'; True means 'permute')")
    if model == "flat-mlp-aug":
        names.add("permute")
    return WeightAugment(**dict(AUGMENTATIONS[n] for n in names)) if names else None


OBSERVER_FLAGS = ("-F", "--file_storage", "-m", "--mongo_db", "-s", "--sql", "-t", "--tiny_db", "-u", "--unobserved")


def new_experiment(name: str, *scopes: Callable) -> Experiment:
    """A Sacred experiment with the shared config, the task's own config ``scopes`` (config
    functions, commented like :func:`shared_config`), the named configs, and a
    FileStorageObserver under ``runs/`` (``GRAPHNFN_RUNS``) unless the command line names an
    observer (``-F DIR``, ``-s sqlite:///runs.db``, ``-u``, ...)."""
    ex = Experiment(name)
    for scope in (shared_config, distributed_config, *scopes):
        ex.config(scope)
    for scope in NAMED_CONFIGS.values():
        ex.named_config(scope)
    if not any(arg in OBSERVER_FLAGS or arg.startswith(OBSERVER_FLAGS) for arg in sys.argv[1:]):
        ex.observers.append(FileStorageObserver(os.environ.get("GRAPHNFN_RUNS", "runs")))
    _under_torchrun(ex)
    return ex


def _under_torchrun(ex: Experiment) -> None:
    """Under torchrun (experiments.distributed): only rank 0 reports to the observers, and every
    process joins the process group before the run's main function."""
    @ex.option_hook
    def rank_zero_observes(options):
        if distributed.rank() != 0:
            options["--unobserved"] = True

    @ex.pre_run_hook
    def join(_config):
        distributed.check(_config)
        distributed.setup(_config["device"])

    @ex.post_run_hook
    def leave():
        distributed.teardown()


def run_directory(_run) -> str | None:
    """Where a FileStorageObserver writes this run, if one does."""
    return next((obs.dir for obs in _run.observers if isinstance(obs, FileStorageObserver)), None)
