"""Both model families side by side on one task: same zoo, splits and seeds.

    python -m experiments.compare with task=inr_classification dataset=digits \\
        'models=["pna","transformer","nfn-hnp","nft","stat","flat-mlp"]' 'seeds=[0,1,2]'

Writes into the run directory (runs/<id>/): results.md (mean +- std of the task
metric, parameters, training seconds, peak memory), results.json, and plots
(metric vs parameters, metric vs training time, learning curves). Prints the table.
"""
from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

from sacred import Experiment

from experiments.common import add_default_observer, base_config
from experiments.tasks import TASKS, run

ex = Experiment("compare")
ex.add_config(base_config())
ex.add_config(task="inr_classification", models=["pna", "transformer", "nfn-hnp", "nft", "stat", "flat-mlp"],
              seeds=[0, 1, 2], edit="dilate", checkpoints="final")
add_default_observer(ex)


class _Prefixed:
    """A Sacred run seen through a prefix, so each model's curves stay apart."""

    def __init__(self, run, prefix: str):
        self._run, self._prefix, self._id = run, prefix, f"{run._id}-{prefix}"

    def log_scalar(self, name, value, step=None):
        self._run.log_scalar(f"{self._prefix}.{name}", value, step)

    def add_artifact(self, filename, name=None):
        self._run.add_artifact(filename, name)


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(results: list[dict]) -> list[dict]:
    """One row per model: mean and std over seeds of the test metric and the costs."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == model]
        metric = runs[0]["metric"]
        mean, std = _mean_std([r["test"][metric] for r in runs])
        rows.append({"model": model, "metric": metric, "mean": mean, "std": std, "seeds": len(runs),
                     "parameters": runs[0]["parameters"],
                     "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
                     "peak_memory_mib": max(r["peak_memory_mib"] for r in runs),
                     "extra": {k: _mean_std([r["test"][k] for r in runs])[0] for k in runs[0]["test"] if k != metric}})
    return rows


def markdown_table(rows: list[dict], title: str) -> str:
    metric = rows[0]["metric"]
    extra = list(rows[0]["extra"])
    lines = [f"### {title}", "",
             f"| model | test {metric} (mean ± std) | " + " | ".join(f"test {k}" for k in extra)
             + " | parameters | train s | peak MiB |",
             "| --- | ---: | " + " | ".join("---:" for _ in extra) + " | ---: | ---: | ---: |"]
    for r in rows:
        cells = [f"{r['mean']:.4f} ± {r['std']:.4f}"] + [f"{r['extra'][k]:.4f}" for k in extra]
        lines.append(f"| {r['model']} | " + " | ".join(cells)
                     + f" | {r['parameters']:,} | {r['train_seconds']:.1f} | {r['peak_memory_mib']:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: list[dict], rows: list[dict], folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = rows[0]["metric"]
    paths = []
    for key, label in (("parameters", "parameters"), ("train_seconds", "training seconds")):
        fig, ax = plt.subplots(figsize=(5, 4))
        for r in rows:
            ax.errorbar(r[key], r["mean"], yerr=r["std"], fmt="o", capsize=3, label=r["model"])
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel(f"test {metric}")
        ax.legend(fontsize=7)
        fig.tight_layout()
        paths.append(folder / f"{metric}_vs_{key}.png")
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        curves = [[h[f"val_{metric}"] for h in res["history"]] for res in results if res["model"] == r["model"]]
        ax.plot([statistics.fmean(v) for v in zip(*curves)], label=r["model"])
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"validation {metric} (mean over seeds)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(folder / "learning_curves.png")
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


@ex.automain
def main(_run, _config):
    cfg = dict(_config)
    if cfg["task"] not in TASKS:
        raise ValueError(f"task {cfg['task']!r}: choose one of {sorted(TASKS)}")
    results = []
    for model in cfg["models"]:
        for seed in cfg["seeds"]:
            print(f"--- {cfg['task']}: {model}, seed {seed}")
            results.append(run({**cfg, "model": model, "seed": seed}, cfg["task"], _Prefixed(_run, f"{model}.seed{seed}")))
    rows = summarise(results)
    table = markdown_table(rows, f"{cfg['task']} on {cfg['dataset']}{' (quick)' if cfg['quick'] else ''}, "
                                 f"seeds {cfg['seeds']}, device {results[0]['device']}")
    print(table)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "results.md").write_text(table)
        (folder / "results.json").write_text(json.dumps({"rows": rows, "runs": results}, indent=1))
        for path in [folder / "results.md", folder / "results.json", *plot(results, rows, folder)]:
            _run.add_artifact(str(path), path.name)
    _run.info["rows"] = rows
    return None
