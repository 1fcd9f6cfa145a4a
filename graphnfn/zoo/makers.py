"""Making zoos: SIREN INRs of images, Small-CNN-Zoo CNNs, small ViTs.

Each maker lays out the whole zoo first (a deterministic list of entries from
the seed), cuts it into shards and computes only the shards that are not yet
on disk, so rerunning the same call resumes. Every random choice comes from a
seed derived from (zoo seed, entry), so an entry does not depend on which run
or shard computed it.
"""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from graphnfn.datasets import ImageData, load_dataset
from graphnfn.devices import resolve_device

from . import cnn, vit
from .siren import permute_hidden, SIREN_WIDTHS, SirenFit, fit_sirens, fit_targets, init_sirens, siren_keys
from .store import ZooWriter, stack_state_dicts
from .classifier_training import checkpoint_epochs, train_classifier

INITS = ("independent", "shared", "shared-permuted")


@dataclass(frozen=True)
class SirenRecipe:
    """How each INR of a SIREN zoo is made.

    ``init``: ``independent`` (every INR its own seeded random init, as the
    published INR zoos), ``shared`` (every INR starts from one seeded init;
    copy k of an image starts from shared init k) or ``shared-permuted`` (the
    shared init with each INR's hidden neurons in its own random order: one
    basin, as with ``shared``, but a neuron order that tells nothing, as with
    ``independent``; models that ignore the permutation symmetry cannot use it).
    ``resolution``: fit the image bilinearly resized to R x R (None: its own
    size). ``per_image``: INRs per image (different seeds). ``fit``: the optimisation."""

    init: str = "independent"
    resolution: int | None = None
    per_image: int = 1
    fit: SirenFit = SirenFit()

    def __post_init__(self):
        if self.init not in INITS:
            raise ValueError(f"init {self.init!r}: expected one of {INITS}")
        if self.per_image < 1:
            raise ValueError(f"per_image must be >= 1, got {self.per_image}")


_FIT = SirenFit(steps=500, lr=1e-3, w0=30.0, target_psnr=40.0)
#: the SIREN zoo recipe of each data set (what every caller starts from: command line, experiments, benchmarks)
SIREN_RECIPES = {
    # measured (docs/zoos.md): independent init leaves every model near chance on 8x8 digits,
    # shared init lets a flat MLP saturate; shared-permuted is a symmetry diagnostic (solved by undoing permutations)
    "digits": SirenRecipe("shared-permuted", 8, 1, _FIT),
    "fashion-mnist": SirenRecipe("independent", 28, 1, _FIT),
    "mnist": SirenRecipe("independent", 28, 1, _FIT),
}
#: the settings :func:`siren_recipe` takes: the recipe's own and its fit's
SIREN_OPTIONS = ("init", "resolution", "per_image", *(f.name for f in fields(SirenFit)))


def siren_recipe(dataset: str, **options) -> SirenRecipe:
    """The data set's recipe with ``options`` (names in :data:`SIREN_OPTIONS`:
    ``init``, ``steps``, ``target_psnr``, ...) replacing its settings."""
    if dataset not in SIREN_RECIPES:
        raise ValueError(f"no SIREN zoo recipe for data set {dataset!r}; expected one of {sorted(SIREN_RECIPES)}")
    unknown = set(options) - set(SIREN_OPTIONS)
    if unknown:
        raise ValueError(f"unknown SIREN zoo settings {sorted(unknown)}; expected some of {SIREN_OPTIONS}")
    recipe = SIREN_RECIPES[dataset]
    fit = {k: options.pop(k) for k in list(options) if hasattr(recipe.fit, k)}
    return replace(recipe, fit=replace(recipe.fit, **fit), **options)


#: network-level split of the classifier zoos (a seeded permutation of the networks)
CLASSIFIER_SPLIT = (("train", 0.7), ("val", 0.1), ("test", 0.2))


def derive_seed(*parts: int) -> int:
    """A 32-bit seed from integers (numpy's SeedSequence hashing: distinct inputs, unrelated streams)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1)[0])


def _run_shards(writer: ZooWriter, n_items: int, shard_size: int, unit: str, progress: bool,
                make_shard: Callable[[int, int, tqdm], tuple[dict[str, Tensor], list[dict]]]) -> None:
    """Compute and store every shard of this writer's share (:meth:`ZooWriter.owns`) not yet on disk;
    ``make_shard(lo, hi, bar)`` does items lo..hi-1."""
    mine = [s for s in range(math.ceil(n_items / shard_size)) if writer.owns(s)]
    done = set(writer.done_shards())
    span = {s: (s * shard_size, min(n_items, (s + 1) * shard_size)) for s in mine}  # items lo..hi-1
    with tqdm(total=sum(hi - lo for lo, hi in span.values()), desc=f"zoo {writer.root.name}",
              unit=unit, disable=not progress) as bar:
        bar.update(sum(hi - lo for s, (lo, hi) in span.items() if s in done))
        for s in mine:
            if s not in done:
                writer.write_shard(s, *make_shard(*span[s], bar))


def _split_of(data: ImageData) -> Tensor:
    names = torch.full((len(data.labels),), -1, dtype=torch.long)
    for i, split in enumerate(("train", "val", "test")):
        names[data.splits[split]] = i
    return names


def siren_plan(data: ImageData, per_image: int, limit: int | None, seed: int) -> list[dict]:
    """The zoo's entries in id order: K consecutive INRs per image, images in
    data-set order. ``limit`` keeps a seeded random subset of the images
    (whole images, so every split keeps its share), at most ``limit`` INRs."""
    images = torch.arange(len(data.labels))
    if limit is not None:
        gen = torch.Generator().manual_seed(derive_seed(seed, 1))
        images = images[torch.randperm(len(images), generator=gen)[:math.ceil(limit / per_image)]].sort().values
    split = _split_of(data)
    names = ("train", "val", "test")
    plan = [{"image": int(i), "copy": k, "split": names[int(split[i])], "label": int(data.labels[i])}
            for i in images for k in range(per_image)]
    return plan[:limit]


def make_siren_zoo(out: str | os.PathLike, dataset: str = "digits", data_dir: str | None = None, seed: int = 0,
                   recipe: SirenRecipe | None = None, limit: int | None = None, shard_size: int | None = None,
                   device: str = "auto", progress: bool = True, num_shards: int = 1, shard_index: int = 0,
                   wait: bool = False) -> Path:
    """Fit SIRENs to the data set's images by ``recipe`` (default: the data set's,
    :func:`siren_recipe`). ``shard_size``: INRs per shard, which is also the
    fitting batch; default 128 on the CPU (larger batches fall out of cache)
    and 4096 on a GPU. ``num_shards`` / ``shard_index``: this call is worker I of N
    filling ``out`` together (:class:`~graphnfn.zoo.store.ZooWriter`); ``wait``: while another
    lone writer fills ``out``, wait for it instead of failing."""
    recipe = recipe or siren_recipe(dataset)
    init, per_image, fit = recipe.init, recipe.per_image, recipe.fit
    dev = resolve_device(device)
    shard_size = shard_size or (4096 if dev.type == "cuda" else 128)
    if shard_size < 1:
        raise ValueError("shard_size must be >= 1")
    data = load_dataset(dataset, data_dir)
    res = recipe.resolution or data.shape[-1]
    plan = siren_plan(data, per_image, limit, seed)
    hparams = {"init": init, "resolution": res, **{k: getattr(fit, k) for k in ("steps", "lr", "w0", "target_psnr")}}
    config = {"kind": "siren", "dataset": dataset, "seed": seed, "per_image": per_image, "limit": limit,
              "shard_size": shard_size, "hparams": hparams, "fit": asdict(fit), "size": len(plan)}
    arch = {"name": "siren", "widths": list(SIREN_WIDTHS), "w0": fit.w0}

    def make_shard(lo: int, hi: int, bar: tqdm) -> tuple[dict[str, Tensor], list[dict]]:
        items = plan[lo:hi]
        seeds = [derive_seed(seed, 2, it["copy"]) if init != "independent" else derive_seed(seed, 3, it["image"], it["copy"])
                 for it in items]
        images = data.images[torch.tensor([it["image"] for it in items])]
        params = init_sirens(seeds, SIREN_WIDTHS, fit.w0, dev)
        if init == "shared-permuted":
            params = permute_hidden(params, [derive_seed(seed, 7, it["image"], it["copy"]) for it in items])
        result = fit_sirens(params, fit_targets(images, res).to(dev), fit)
        records = [{**it, "id": lo + j, "seed": s, "hparams": hparams, "arch": arch,
                    "metrics": {"psnr": float(result.psnr[j]), "steps": int(result.steps[j])}}
                   for j, (it, s) in enumerate(zip(items, seeds))]
        bar.update(len(items))
        bar.set_postfix(median_psnr=f"{float(result.psnr.median()):.1f}")
        return dict(zip(siren_keys(), result.params)), records

    with ZooWriter(out, config, num_shards, shard_index, wait) as writer:
        _run_shards(writer, len(plan), shard_size, "inr", progress, make_shard)
    return Path(out)


CLASSIFIERS = {"cnn": cnn, "transformer": vit}


def _classifier(kind: str, hparams: dict, data: ImageData, gen: torch.Generator):
    channels, size = data.shape[0], data.shape[-1]
    if kind == "cnn":
        arch = {"name": "cnn", "in_channels": channels, "num_classes": data.num_classes,
                "activation": hparams["activation"], "dropout": hparams["dropout"]}
        return cnn.build(hparams, channels, data.num_classes, gen), arch
    model = vit.build(hparams, size, channels, data.num_classes, gen)
    arch = {"name": "vit", "image_size": size, "in_channels": channels, "num_classes": data.num_classes,
            "dropout": hparams["dropout"], "patch": model.patch}
    return model, arch


def network_splits(n: int, seed: int) -> list[str]:
    """Split of each network of a classifier zoo (seeded 70/10/20)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, 4))).tolist()
    names, start = [""] * n, 0
    for i, (name, frac) in enumerate(CLASSIFIER_SPLIT):
        stop = n if i == len(CLASSIFIER_SPLIT) - 1 else start + round(frac * n)
        for j in order[start:stop]:
            names[j] = name
        start = stop
    return names


def make_classifier_zoo(kind: str, out: str | os.PathLike, dataset: str = "digits", data_dir: str | None = None,
                        seed: int = 0, networks: int = 1000, epochs: int = 20, batch_size: int = 128,
                        limit: int | None = None, shard_size: int = 64, device: str = "auto",
                        progress: bool = True, num_shards: int = 1, shard_index: int = 0,
                        wait: bool = False) -> Path:
    """Train ``networks`` classifiers (``kind`` = ``cnn`` or ``transformer``), each
    with its own hyperparameter draw, and store the weights and metrics of every
    checkpoint epoch (:func:`graphnfn.zoo.classifier_training.checkpoint_epochs`). Each
    network is trained on the data set's train images (scaled to [-1, 1], as
    the Small CNN Zoo) and scored on its test images; the manifest's ``label``
    is the checkpoint's test accuracy, ``finite`` tells whether its weights are
    all finite (a diverged run is kept, as in the published zoo; filter with
    ``zoo.indices(split, where=lambda r: r["finite"])``). ``num_shards`` / ``shard_index``, ``wait``: as
    :func:`make_siren_zoo`."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"classifier zoo kind {kind!r}: expected one of {sorted(CLASSIFIERS)}")
    data = load_dataset(dataset, data_dir)
    n = min(networks, limit) if limit is not None else networks
    dev = resolve_device(device)
    x = data.images * 2 - 1
    tensors = {part: (x[idx].to(dev), data.labels[idx].to(dev)) for part, idx in data.train_test.items()}
    epochs_kept = checkpoint_epochs(epochs)
    config = {"kind": kind, "dataset": dataset, "seed": seed, "networks": n, "epochs": epochs,
              "batch_size": batch_size, "limit": limit, "shard_size": shard_size, "checkpoints": epochs_kept}
    splits = network_splits(n, seed)
    module = CLASSIFIERS[kind]

    def make_shard(lo: int, hi: int, bar: tqdm) -> tuple[dict[str, Tensor], list[dict]]:
        state_dicts, records = [], []
        for net in range(lo, hi):
            s = derive_seed(seed, 5, net)
            gen = torch.Generator().manual_seed(s)
            torch.manual_seed(derive_seed(seed, 6, net))  # dropout masks
            hparams = module.sample_hparams(gen)
            model, arch = _classifier(kind, hparams, data, gen)
            model.to(dev)
            for c, (epoch, metrics) in enumerate(train_classifier(model, hparams, tensors, epochs, batch_size, gen)):
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
                state_dicts.append(state)
                records.append({"id": net * len(epochs_kept) + c, "network": net, "epoch": epoch,
                                "finite": all(bool(v.isfinite().all()) for v in state.values()),
                                "final": epoch == epochs, "split": splits[net], "label": metrics["test_accuracy"],
                                "seed": s, "hparams": hparams, "metrics": metrics, "arch": arch})
            bar.update(1)
        return stack_state_dicts(state_dicts), records

    with ZooWriter(out, config, num_shards, shard_index, wait) as writer:
        _run_shards(writer, n, shard_size, "net", progress, make_shard)
    return Path(out)
