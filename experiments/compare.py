"""Both model families side by side on one task: same zoo, splits, seeds, input encoding
and step budget, with the sanity baselines in the same table.

    python -m experiments.compare with task=inr_classification dataset=digits \\
        'models=["pna","transformer","nfn-hnp","nft","stat","flat-mlp","flat-mlp-aug","align-linear"]' \\
        'seeds=[0,1,2]'

Protocol: every model trains for ``steps`` optimizer steps on the same batches; the weights
of its best validation score are scored on test once. ``tune=K`` first tries the same K
configurations (lr, width; from ``tune_grid``) for every learned model on the first seed
and keeps the best on validation. Writes into the run directory (runs/<id>/): results.md
(mean +- std over seeds, encoding, parameters, steps, throughput; rows whose interval
overlaps the best's are marked), results.json, plots (learning curves, test metric against
parameters and training time, peak memory per model), and every finished (model, seed) as
pair-*.json the moment it finishes: ``resume=RUN_DIR`` reuses those of a run that was cut
off, and continues the pair it was training from its checkpoint (ckpt-*.pt, rewritten at
every evaluation: :mod:`experiments.resume`). Prints the table.
"""
from __future__ import annotations

import itertools
import json
import random
import statistics
import tempfile
import traceback
from pathlib import Path

from graphnfn.memory import METHODS, PeakMemory
from graphnfn.registry import EDIT_REFERENCES, learns
from experiments.config import check_config, new_experiment, run_directory
from experiments.resume import check_same_config, checkpoint_file
from experiments.tasks import classifier_config, describe_zoo, editing_config, run


def compare_config():
    task = "inr_classification"  # one of experiments.tasks.TASKS
    models = ["pna", "transformer", "nfn-hnp", "nft", "stat", "flat-mlp", "flat-mlp-aug", "align-linear"]  # rows
    seeds = [0, 1, 2]  # every model runs every seed (init and batch order; the zoo is fixed)
    tune = 0  # > 0: try this many (lr, d_hidden) configs per learned model on the first seed, keep the best on val
    tune_grid = {"lr": [3e-4, 1e-3, 3e-3], "d_hidden": [16, 32, 64]}  # where the tune configs are drawn from
    tune_seed = 0  # which configs of the grid are drawn (the same ones for every model)
    resume = None  # a compare run directory of the same config: its finished (model, seed) pairs are reused, one cut off mid-training continues


ex = new_experiment("compare", compare_config, editing_config, classifier_config)


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


def _largest_memory(runs: list[dict]) -> dict:
    """The memory figures of the seed whose pair held the most of its own (the largest peak where
    there is no per-pair figure), so that peak and own come from the same pair."""
    top = max(runs, key=lambda r: (r.get("own_memory_mib") or 0.0, r["peak_memory_mib"]))
    return {"peak_memory_mib": top["peak_memory_mib"], "own_memory_mib": top.get("own_memory_mib"),
            "memory_method": top.get("memory_method", "process")}


def summarise(results: list[dict], higher_is_better: bool = True) -> list[dict]:
    """One row per model: mean and std over seeds of the test metric and the costs; ``close``
    marks the best row and every row whose mean +- std interval overlaps the best's."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in results):
        runs = [r for r in results if r["model"] == model]
        metric = runs[0]["metric"]
        mean, std = _mean_std([r["test"][metric] for r in runs])
        rows.append({"model": model, "family": runs[0]["family"], "encoding": runs[0]["encoding"],
                     "metric": metric, "mean": mean, "std": std, "seeds": len(runs),
                     "parameters": runs[0]["parameters"], "steps": runs[0]["steps"],
                     "options": runs[0]["options"],
                     "train_seconds": statistics.fmean(r["train_seconds"] for r in runs),
                     "examples_per_second": statistics.fmean(r["examples_per_second"] for r in runs),
                     **_largest_memory(runs),
                     "extra": {k: _mean_std([r["test"][k] for r in runs])[0] for k in runs[0]["test"] if k != metric}})
    sign = 1 if higher_is_better else -1
    best = max(rows, key=lambda r: sign * r["mean"])
    for r in rows:
        r["best"] = r is best
        r["close"] = abs(r["mean"] - best["mean"]) <= r["std"] + best["std"]
    return rows


def markdown_table(rows: list[dict], title: str) -> str:
    metric = rows[0]["metric"]
    extra = list(rows[0]["extra"])
    lines = [f"### {title}", "",
             f"| model | family | encoding | test {metric} (mean ± std) | " + " | ".join(f"test {k}" for k in extra)
             + " | parameters | steps | train s | networks/s | peak MiB | own MiB |",
             "| --- | --- | --- | ---: | " + " | ".join("---:" for _ in extra) + " |" + " ---: |" * 6]
    for r in rows:
        value = f"{r['mean']:.4f} ± {r['std']:.4f}"
        value = f"**{value}**" if r["best"] else f"{value} ≈" if r["close"] else value
        cells = [value] + [f"{r['extra'][k]:.4f}" for k in extra]
        lines.append(f"| {r['model']} | {r['family']} | {r['encoding']} | " + " | ".join(cells)
                     + f" | {r['parameters']:,} | {r['steps'] or '-'} | {r['train_seconds']:.1f}"
                     f" | {_throughput(r)} | {r['peak_memory_mib']:.0f} | {_mib(r['own_memory_mib'])} |")
    methods = sorted({METHODS[r["memory_method"]] for r in rows})
    lines += ["", "Bold: the best mean; ≈: mean ± std overlaps the best's (not separable with these seeds). "
              "align-linear and editing's yardsticks (" + ", ".join(EDIT_REFERENCES) + ") learn nothing "
              "(align-linear's regularisation is chosen on val). Memory of each (model, seed) "
              "pair on its own (zoo, loaders, training, test), of the seed that held the most; peak MiB: "
              + "; ".join(methods) + "; own MiB: that peak less what the process held when the pair began."]
    return "\n".join(lines) + "\n"


def _throughput(row: dict) -> str:
    """Networks per second; none for an editing reference, which takes no training steps."""
    return "-" if row["family"] == "reference" else f"{row['examples_per_second']:.0f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _compact(x: float, _pos=None) -> str:
    """A tick label: 5k, 1.2M, 0.5, 20."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:g}{suffix}"
    return f"{x:g}"


def _legend(ax, **kwargs) -> None:
    """A legend where the plot has labelled points (a table of yardsticks alone has no curves)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _log_x(ax, values: list[float]) -> None:
    """A log x axis whose tick labels cannot overlap: decades only when the values span two
    or more, else 1-2-5 steps; unlabelled minor ticks; room at both ends for the markers."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    lo, hi = min(values), max(values)
    ax.set_xscale("log")
    ax.set_xlim(lo / 2, hi * 2)  # a span of at least 4x always holds a 1-2-5 tick
    subs = (1.0,) if hi / lo >= 100 else (1.0, 2.0, 5.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs, numticks=12))
    ax.xaxis.set_major_formatter(FuncFormatter(_compact))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot(results: list[dict], rows: list[dict], folder: Path, title: str = "") -> list[Path]:
    """PNGs of the comparison: test metric against parameters and against training time (mean
    ± std over seeds), validation learning curves, and each model's peak memory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    metric = rows[0]["metric"]
    paths = []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        paths.append(folder / name)
        fig.savefig(paths[-1], dpi=110)
        plt.close(fig)

    for key, name in (("parameters", "parameters"), ("train_seconds", "training seconds")):
        shown = [r for r in rows if r[key] > 0]
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in shown:
            ax.errorbar(r[key], r["mean"], yerr=r["std"], fmt="o", capsize=3, label=r["model"])
        _log_x(ax, [r[key] for r in shown])
        ax.set_xlabel(f"{name} (log scale)")
        ax.set_ylabel(f"test {metric} (mean ± std over seeds)")
        ax.set_title(f"Test {metric} against {name}" + (f"\n{title}" if title else ""), fontsize=9)
        _legend(ax, fontsize=7)
        save(fig, f"{metric}_vs_{key}.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        curves = [res["history"] for res in results if res["model"] == r["model"] and res["history"]]
        if curves:  # align-linear has no training curve
            steps = [h["step"] for h in curves[0]]
            ax.plot(steps, [statistics.fmean(h[f"val_{metric}"] for h in at) for at in zip(*curves)], marker=".",
                    label=r["model"])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"validation {metric} (mean over seeds)")
    ax.set_title("Learning curves" + (f"\n{title}" if title else ""), fontsize=9)
    _legend(ax, fontsize=7)
    save(fig, "learning_curves.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    names = [r["model"] for r in rows]
    peaks = [r["peak_memory_mib"] for r in rows]
    own = [r["own_memory_mib"] for r in rows]
    if None in own:  # no per-pair measurement here: the bars are the process's peak
        ax.bar(names, peaks, color="tab:gray", label="process peak (not per model)")
    else:
        ax.bar(names, [p - o for p, o in zip(peaks, own)], color="lightgray", label="held when the pair began")
        ax.bar(names, own, bottom=[p - o for p, o in zip(peaks, own)], color="tab:blue", label="the pair's own")
        for i, o in enumerate(own):
            ax.annotate(f"+{o:.0f}", (i, peaks[i]), ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"peak MiB ({'CUDA allocated' if rows[0]['memory_method'] == 'cuda' else 'resident set'})")
    ax.set_xlabel("model (the seed that held the most)")
    ax.set_title("Peak memory per model" + (f"\n{title}" if title else ""), fontsize=9)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    ax.set_ylim(0, 1.3 * max(peaks))  # headroom: the legend never covers a bar
    _legend(ax, fontsize=7, loc="upper center", ncol=2)
    save(fig, "peak_memory.png")
    return paths


def tuning_configs(cfg: dict) -> list[dict]:
    """The ``tune`` configurations every learned model tries: drawn once from ``tune_grid``
    with ``tune_seed``, so every family gets the same ones ([{}] without tuning)."""
    if not cfg["tune"]:
        return [{}]
    keys = sorted(cfg["tune_grid"])
    unknown = [k for k in keys if k not in cfg]
    if unknown:
        raise ValueError(f"tune_grid: {unknown} are not config keys")
    grid = [dict(zip(keys, values)) for values in itertools.product(*(cfg["tune_grid"][k] for k in keys))]
    return random.Random(cfg["tune_seed"]).sample(grid, min(cfg["tune"], len(grid)))


#: config keys a resumed run may change: which rows and seeds to run, and where to resume from
RESUMABLE = ("models", "seeds", "resume")


def finished_pairs(cfg: dict) -> dict[str, dict]:
    """The (model, seed, configuration) results a previous compare run directory ``cfg['resume']``
    holds (``pair-*.json``), after checking it ran the same comparison (every other key equal)."""
    if not cfg["resume"]:
        return {}
    check_same_config(cfg, RESUMABLE)
    return {path.stem: json.loads(path.read_text()) for path in sorted(Path(cfg["resume"]).glob("pair-*.json"))}


def run_model(cfg: dict, model: str, _run, done: dict[str, dict]) -> list[dict]:
    """All seeds of one model; with ``tune``, its best configuration on validation (first seed) first.
    Each finished (model, seed, configuration) is saved in the run directory at once, and one
    found in ``done`` (a resumed run's) is reused instead of trained again."""
    def one(index: int, options: dict, seed: int) -> dict:
        name, checkpoint = f"pair-{model}-seed{seed}-config{index}", None
        if name in done:
            print(f"--- {cfg['task']}: {model}, seed {seed}: finished in {cfg['resume']}")
            result = done[name]
        else:
            checkpoint = checkpoint_file(cfg, _run, f"ckpt-{model}-seed{seed}-config{index}.pt")
            print(f"--- {cfg['task']}: {model}, seed {seed}" + (f", {options}" if options else ""))
            prefixed = _Prefixed(_run, f"{model}.seed{seed}")
            with PeakMemory(cfg["device"]) as peak:  # this pair alone, not the process's peak so far
                result = run({**cfg, **options, "model": model, "seed": seed}, cfg["task"], prefixed, checkpoint)
            result.update(peak_memory_mib=peak.peak_bytes / 2**20, memory_method=peak.method,
                          own_memory_mib=None if peak.bytes is None else peak.bytes / 2**20)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.json"
            path.write_text(json.dumps(result))
            _run.add_artifact(str(path), path.name)
        if checkpoint is not None:  # the pair's result is saved: nothing left to resume
            checkpoint.unlink(missing_ok=True)
        return result

    configs = tuning_configs(cfg) if learns(model) else [{}]
    tried = [one(i, options, cfg["seeds"][0]) for i, options in enumerate(configs)]
    sign = 1 if tried[0]["higher_is_better"] else -1
    best = max(range(len(tried)), key=lambda i: sign * tried[i]["val"][tried[i]["metric"]])
    results = [tried[best]] + [one(best, configs[best], seed) for seed in cfg["seeds"][1:]]
    for r in results:
        r["tried"] = [{**c, "val": t["val"][t["metric"]]} for c, t in zip(configs, tried)] if cfg["tune"] else []
    return results


def write_tables(_run, cfg: dict, results: list[dict], failed: list[str]) -> list[dict]:
    """The table, results.json and the plots of the finished runs, as run artifacts."""
    rows = summarise(results, results[0]["higher_is_better"])
    table = markdown_table(rows, f"{cfg['task']} on {cfg['dataset']}{' (quick)' if cfg['quick'] else ''}, "
                                 f"{describe_zoo(results[0]['zoo'])}; seeds {cfg['seeds']}, "
                                 f"device {results[0]['device']}" + (f", tune={cfg['tune']}" if cfg["tune"] else ""))
    if failed:
        table += "\nFailed (see the log): " + ", ".join(failed) + "\n"
    print(table)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "results.md").write_text(table)
        (folder / "results.json").write_text(json.dumps({"rows": rows, "runs": results, "failed": failed}, indent=1))
        plots = plot(results, rows, folder, f"{cfg['task']} on {cfg['dataset']}")
        for path in [folder / "results.md", folder / "results.json", *plots]:
            _run.add_artifact(str(path), path.name)
    _run.info["rows"], _run.info["runs"] = rows, [{k: v for k, v in r.items() if k != "history"} for r in results]
    return rows


@ex.main
def main(_run, _config):
    cfg = dict(_config)
    check_config(cfg, cfg["models"], cfg["task"])
    if not cfg["seeds"]:
        raise ValueError("seeds is empty")
    results, failed, done = [], [], finished_pairs(cfg)
    for model in cfg["models"]:
        try:
            results += run_model(cfg, model, _run, done)
        except Exception:  # one model's failure keeps the others' rows: the table names it
            traceback.print_exc()
            failed.append(model)
    if not results:
        raise RuntimeError(f"every model failed: {failed}")
    write_tables(_run, cfg, results, failed)
    folder = run_directory(_run)
    if folder:
        print(f"run directory: {folder}")
    if failed:
        raise RuntimeError(f"{', '.join(failed)} failed; the table of the others is in the run directory")


if __name__ == "__main__":
    ex.run_commandline()
