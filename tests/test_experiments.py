"""The Sacred experiments and the comparison runner, on tiny digits zoos."""
import json
import re
import sqlite3

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sacred.observers import FileStorageObserver, SqlObserver
from sacred.utils import ConfigAddedError

from nets import pi_shifted

TINY = {"quick": True, "steps": 4, "eval_every": 2, "batch_size": 16, "d_hidden": 16, "n_layers": 1, "heads": 2, "fourier": 4,
        "device": "cpu"}
SIREN_TINY = {**TINY, "zoo_limit": 60, "zoo_steps": 30}


def _observe(ex, observer):
    ex.observers[:] = [observer]  # not the default runs/ folder
    return ex


def test_compare_writes_table_and_plots(tmp_path):
    from experiments.compare import ex

    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    models = ["pna", "nfn-hnp", "stat", "flat-mlp-aug", "align-linear"]
    run = ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "task": "inr_classification",
                                 "models": models, "seeds": [0, 1]})
    assert run.status == "COMPLETED"
    rows = run.info["rows"]
    assert [r["model"] for r in rows] == models and all(r["seeds"] == 2 for r in rows)
    assert all(0.0 <= r["mean"] <= 1.0 and r["parameters"] > 0 for r in rows)
    # the same Fourier inputs for both families; align-linear trains no steps
    encodings = {r["model"]: r["encoding"] for r in rows}
    assert encodings["pna"] == "fourier4" and "fourier4" in encodings["nfn-hnp"]
    assert {r["model"]: r["steps"] for r in rows} == {"pna": 4, "nfn-hnp": 4, "stat": 4, "flat-mlp-aug": 4,
                                                     "align-linear": None}
    folder = tmp_path / "runs" / str(run._id)
    for name in ("results.md", "results.json", "accuracy_vs_parameters.png", "accuracy_vs_train_seconds.png",
                 "learning_curves.png"):
        assert (folder / name).is_file(), name
    table = (folder / "results.md").read_text()
    assert all(f"| {m} |" in table for m in models) and "±" in table and "**" in table
    metrics = json.loads((folder / "metrics.json").read_text())
    assert "pna.seed0.val_accuracy" in metrics and len(metrics["stat.seed1.train_loss"]["values"]) == 2
    config = json.loads((folder / "config.json").read_text())
    assert config["seeds"] == [0, 1] and config["seed"] == 0


def test_editing_references_score_what_they_claim(tmp_path):
    """no-edit scores each test INR's own image, mean-target the train split's mean edited image;
    the INRs are drawn once from weight spaces and once by running their graphs, which must agree."""
    from experiments.common import make_loaders
    from experiments.compare import ex
    from experiments.tasks import TASKS, _siren_zoo
    from graphnfn.training import split_batch

    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    run = ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "task": "inr_editing",
                                 "models": ["stat", "no-edit", "mean-target", "refit-output"], "seeds": [0, 1]})
    rows = {r["model"]: r for r in run.info["rows"]}
    assert {rows[m]["family"] for m in ("no-edit", "mean-target", "refit-output")} == {"reference"}
    assert rows["no-edit"]["steps"] is None and rows["no-edit"]["std"] == 0.0
    cfg, spec = dict(run.config), TASKS["inr_editing"]
    zoo = _siren_zoo(cfg)
    task, target = spec.task(cfg, zoo), spec.target(cfg, zoo)
    spaces, _ = make_loaders({**cfg, "model": "stat"}, zoo, target, scale=False)
    graphs, _ = make_loaders({**cfg, "model": "pna"}, zoo, target, scale=False)
    drawn = torch.cat([task.identity(split_batch(b)[0]) for b in spaces["test"]])
    run_drawn = torch.cat([task.identity(split_batch(b)[0]) for b in graphs["test"]])
    torch.testing.assert_close(drawn, run_drawn, rtol=1e-4, atol=1e-5)
    y_test = torch.cat([split_batch(b)[1] for b in spaces["test"]])
    mean = torch.cat([split_batch(b)[1] for b in spaces["train"]]).double().mean(0)
    assert rows["no-edit"]["mean"] == pytest.approx(torch.mean((drawn - y_test) ** 2).item(), rel=1e-5)
    assert rows["mean-target"]["mean"] == pytest.approx(torch.mean((mean - y_test.double()) ** 2).item(), rel=1e-5)
    assert rows["mean-target"]["mean"] < rows["no-edit"]["mean"]  # the tiny zoo's INRs draw their digits
    refit = torch.cat([task.solver(split_batch(b)[0]) for b in spaces["test"]])
    assert rows["refit-output"]["mean"] == pytest.approx(torch.mean((refit - y_test) ** 2).item(), rel=1e-5)
    assert rows["refit-output"]["mean"] < rows["no-edit"]["mean"]
    table = (tmp_path / "runs" / str(run._id) / "results.md").read_text()
    assert "| no-edit | reference | the INR's own image |" in table
    with pytest.raises(ValueError, match="no-edit is a yardstick of editing"):
        ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "task": "inr_classification",
                               "models": ["stat", "no-edit"], "seeds": [0]})


def test_augmentations_redraw_the_training_inrs_and_move_only_the_images_they_move(tmp_path):
    """``augment="permute+sign"``: every pass the training SIRENs come with fresh neuron orders
    and sign flips (other weights), and each still draws exactly its own image;
    ``augment="dihedral"`` moves each image and its editing target alike."""
    from experiments.common import make_loaders
    from experiments.compare import ex
    from experiments.config import weight_augment
    from experiments.tasks import TASKS, _siren_zoo
    from graphnfn.zoo import WeightAugment
    from graphnfn.training import split_batch

    assert weight_augment({"augment": True}).permute and not weight_augment({"augment": "sign"}).permute
    assert weight_augment({"augment": None}) is None and weight_augment({"augment": False}) is None
    assert weight_augment({"augment": None}, "flat-mlp-aug").permute
    assert weight_augment({"augment": "permute+mirror"}) == WeightAugment(permute=True, mirror=1)
    assert weight_augment({"augment": "dihedral"}) == WeightAugment(dihedral=True)
    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    cfg = dict(ex.run("print_config", config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"),
                                                       "task": "inr_editing"}).config)
    zoo = _siren_zoo(cfg)
    spec = TASKS["inr_editing"]
    task, target = spec.task(cfg, zoo), spec.target(cfg, zoo)
    plain, _ = make_loaders({**cfg, "model": "stat"}, zoo, target, scale=False)
    torch.manual_seed(0)
    augmented, _ = make_loaders({**cfg, "model": "stat", "augment": "permute+sign"}, zoo, target, scale=False)
    first, second = ([split_batch(b)[0] for b in augmented["train"]] for _ in range(2))
    for inputs, again, (reference, _) in zip(first, second, map(split_batch, plain["train"])):
        assert not torch.equal(inputs.weights[1], reference.weights[1])
        assert not torch.equal(inputs.weights[1], again.weights[1])  # redrawn every pass
        # the same entries up to order and sign, and signs flipped (a permutation alone keeps the signed values)
        torch.testing.assert_close(inputs.weights[1].abs().flatten(1).sort(1).values,
                                   reference.weights[1].abs().flatten(1).sort(1).values)
        assert not torch.equal(inputs.weights[1].flatten(1).sort(1).values,
                               reference.weights[1].flatten(1).sort(1).values)
        torch.testing.assert_close(task.identity(inputs), task.identity(reference), rtol=1e-4, atol=1e-5)
    # workers convert and augment in their own processes: the same entries (in the first pass's order),
    # redrawn every pass; a pass is decided by the loader's generator (what a resumed fit restores),
    # not by the training process's RNG
    def passes(workers: int, seed: int):
        loaders, _ = make_loaders({**cfg, "model": "stat", "augment": "permute+sign", "workers": workers}, zoo,
                                  target, scale=False)
        torch.manual_seed(seed)
        return [[split_batch(b)[0].weights[1] for b in loaders["train"]] for _ in range(2)]
    (one, two), (again, _) = passes(2, 0), passes(2, 1)
    for w1, w2, w1_again, (reference, _) in zip(one, two, again, map(split_batch, plain["train"])):
        assert torch.equal(w1, w1_again) and not torch.equal(w1, w2)
        torch.testing.assert_close(w1.abs().flatten(1).sort(1).values,
                                   reference.weights[1].abs().flatten(1).sort(1).values)
    # augment="dihedral" moves the images: each INR's target moves with it, so with dilation (a symmetric
    # 3x3 window) every INR misses its moved target by as much as it missed its own
    moved, _ = make_loaders({**cfg, "model": "stat", "augment": "dihedral"}, zoo, target, scale=False)
    for (inputs, y), (reference, y0) in zip(map(split_batch, moved["train"]), map(split_batch, plain["train"])):
        assert not torch.equal(y, y0)
        torch.testing.assert_close(((task.identity(inputs) - y) ** 2).mean((1, 2, 3)),
                                   ((task.identity(reference) - y0) ** 2).mean((1, 2, 3)), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("module, model, metric, options", [
    ("cnn_generalization", "nfn-hnp", "tau", {}),
    ("inr_editing", "transformer", "mse", {"edge_product": 2}),
])
def test_task_experiments_record_metrics_and_checkpoint(tmp_path, module, model, metric, options):
    ex = __import__(f"experiments.{module}", fromlist=["ex"]).ex
    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    tiny = SIREN_TINY if module.startswith("inr") else {**TINY, "zoo_networks": 12, "zoo_epochs": 2}
    run = ex.run(config_updates={**tiny, "zoo_root": str(tmp_path / "zoos"), "model": model, **options})
    summary = run.info["summary"]
    assert run.status == "COMPLETED" and run.result == summary["test"][metric]
    folder = tmp_path / "runs" / str(run._id)
    assert any(p.name.startswith("best-") for p in folder.iterdir())
    assert summary["parameters"] > 0 and summary["train_seconds"] > 0
    if options.get("edge_product"):  # the trained model, rebuilt from its card, has the term
        from graphnfn import load_model

        assert load_model(folder).module.edge_product.src.out_features == options["edge_product"]


def test_compare_checks_every_name_before_training(tmp_path):
    from experiments.compare import ex

    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    for update, message in (({"models": ["stat", "nfn-hpn"]}, "unknown model 'nfn-hpn'"),
                            ({"dataset": "cifar10"}, "dataset 'cifar10': inr_classification knows"),
                            ({"task": "inr_clasification"}, "task 'inr_clasification'"),
                            ({"augment": "permute+scale"}, r"augment='permute\+scale': \['scale'\] is not one of"),
                            ({"augment": "dihedral", "task": "cnn_generalization", "models": ["stat"]},
                             "augment=dihedral moves the image an INR draws: INR tasks only"),
                            ({"dropout": 1.0}, r"dropout must be in \[0, 1\), got 1.0"),
                            ({"workers": -1}, r"workers must be an integer >= 0 \(DataLoader processes\), got -1"),
                            ({"phase": "yes"}, "phase must be True or False, got 'yes'"),
                            ({"phase": True, "task": "cnn_generalization", "models": ["stat"]},
                             "phase=True reduces the phases of sine neurons: INR tasks only"),
                            ({"edge_product": 4}, r"edge_product is a term of the equivariant \(editing\) readout"),
                            ({"edge_product": -1, "task": "inr_editing", "models": ["pna"]},
                             "edge_product must be a rank >= 0"),
                            ({"edge_product": 4, "task": "inr_editing", "models": ["pna", "sign-gnn"]},
                             "edge_product: sign-gnn has no such term")):
        with pytest.raises(ValueError, match=message):
            ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "seeds": [0], **update})
    assert not (tmp_path / "zoos").exists(), "every bad name must be refused before a zoo is made"
    with pytest.raises(ConfigAddedError, match="quik"):  # a typo in a key is refused, not ignored
        ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "quik": True})
    with pytest.raises(ValueError, match="align-linear has no inr_editing readout"):
        ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "task": "inr_editing",
                               "models": ["stat", "align-linear"], "seeds": [0]})
    assert not (tmp_path / "zoos").exists()  # refused before any zoo was made


def test_tuning_gives_every_model_the_same_configs_and_keeps_the_best_on_val(tmp_path):
    from experiments.compare import ex, tuning_configs

    grid = {"lr": [1e-4, 1e-3, 1e-2], "d_hidden": [8, 16]}
    configs = tuning_configs({"tune": 3, "tune_grid": grid, "tune_seed": 0, "lr": 0, "d_hidden": 0})
    assert len(configs) == 3 and len({tuple(sorted(c.items())) for c in configs}) == 3
    assert configs == tuning_configs({"tune": 3, "tune_grid": grid, "tune_seed": 0, "lr": 0, "d_hidden": 0})
    with pytest.raises(ValueError, match="not config keys"):
        tuning_configs({"tune": 1, "tune_grid": {"lrr": [1]}, "tune_seed": 0})
    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    run = ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "models": ["stat", "flat-mlp"],
                                 "seeds": [0, 1], "tune": 3, "tune_grid": grid})
    for model in ("stat", "flat-mlp"):
        runs = [r for r in run.info["runs"] if r["model"] == model]
        tried = runs[0]["tried"]
        assert [{k: t[k] for k in grid} for t in tried] == configs  # the same configs for every model
        best = max(tried, key=lambda t: t["val"])
        assert all(r["options"] == {k: best[k] for k in grid} for r in runs)


def test_table_marks_rows_that_overlap_the_best():
    from experiments.compare import summarise

    def result(model, value, seed):
        return {"model": model, "family": "graph", "encoding": "raw", "metric": "mse", "test": {"mse": value},
                "parameters": 1, "steps": 1, "options": {}, "train_seconds": 1.0, "examples_per_second": 1.0,
                "peak_memory_mib": 1.0, "seed": seed}

    results = [result("a", 0.10, 0), result("a", 0.12, 1), result("b", 0.125, 0), result("b", 0.135, 1),
               result("c", 0.30, 0), result("c", 0.31, 1)]
    rows = {r["model"]: r for r in summarise(results, higher_is_better=False)}
    assert rows["a"]["best"] and rows["b"]["close"] and not rows["c"]["close"]
    assert not rows["b"]["best"]


def test_sql_observer_on_sqlite(tmp_path):
    from experiments.inr_classification import ex

    db = tmp_path / "runs.db"
    _observe(ex, SqlObserver(f"sqlite:///{db}"))
    run = ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "model": "flat-mlp"})
    assert run.status == "COMPLETED"
    with sqlite3.connect(db) as con:
        status, result, info = con.execute("SELECT status, result, info FROM run").fetchone()
    assert status == "COMPLETED" and result == run.result
    assert json.loads(info)["summary"]["model"] == "flat-mlp"


def test_weight_scaler_gives_unit_scale_and_keeps_structure():
    import torch
    from torch import nn

    import converters
    import graphnfn
    from graphnfn.paramshare import AttentionWeightSpace, concat
    from graphnfn.training import WeightScaler

    torch.manual_seed(0)
    nets = [nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)) for _ in range(8)]
    for m in nets:
        m[2].weight.data *= 0.01
    ws = concat([converters.to_weight_space(m) for m in nets], 0)
    y = torch.zeros(8)
    scaled, _ = WeightScaler([(ws, y)])((ws, y))
    for t in (*scaled.weights, *scaled.biases):
        assert abs(t.square().mean().sqrt().item() - 1) < 1e-5
    batch = graphnfn.collate([converters.to_graph(m) for m in nets])
    batch.y = y
    g = WeightScaler([batch])(batch)
    # graph and weight-space views are scaled alike: edge weights into layer 2 are W2 / rms(W2)
    assert torch.allclose(g.weight[batch.layer[batch.edge_index[1]] == 2].reshape(8, 4), scaled.weights[1][:, 0, 0])
    attention = AttentionWeightSpace(*([torch.randn(3, 1, 2, 2)],) * 8)
    scaled_att, _ = WeightScaler([(attention, y)])((attention, y))
    assert isinstance(scaled_att, AttentionWeightSpace) and scaled_att.query[0].shape == (3, 1, 2, 2)


@pytest.mark.parametrize("module", ["inr_editing", "compare"])
def test_print_config_documents_every_key(module, capsys):
    ex = __import__(f"experiments.{module}", fromlist=["ex"]).ex
    _observe(ex, FileStorageObserver("/nonexistent"))  # print_config writes nothing
    ex.run("print_config")
    entries: dict[str, str] = {}  # top-level key -> its printed lines (a list value spans several)
    for line in capsys.readouterr().out.splitlines():
        key = re.match(r"^  (\w+)( = |:)", line)
        if key:
            entries[key.group(1)] = line
        elif entries and not line.startswith(("INFO", "    ")):
            entries[list(entries)[-1]] += line
    assert len(entries) > 30
    assert [k for k, text in entries.items() if "#" not in text] == []


def test_a_failed_model_keeps_the_table_of_the_others(tmp_path):
    from experiments.compare import ex

    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    # monomial needs a group: the CNN zoo mixes ReLU and tanh networks, so it fails; stat finishes
    with pytest.raises(RuntimeError, match="monomial failed"):
        ex.run(config_updates={**TINY, "zoo_root": str(tmp_path / "zoos"), "task": "cnn_generalization",
                               "zoo_networks": 12, "zoo_epochs": 2, "models": ["monomial", "stat"], "seeds": [0]})
    table = (tmp_path / "runs" / "1" / "results.md").read_text()
    assert "| stat |" in table and "Failed (see the log): monomial" in table


def test_compare_resumes_from_the_finished_pairs_of_a_cut_off_run(tmp_path):
    from experiments.compare import ex

    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    common = {**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "seeds": [0]}
    first = ex.run(config_updates={**common, "models": ["stat"]})
    folder = tmp_path / "runs" / str(first._id)
    assert (folder / "pair-stat-seed0-config0.json").is_file()
    resumed = ex.run(config_updates={**common, "models": ["stat", "flat-mlp"], "resume": str(folder)})
    runs = {r["model"]: r for r in resumed.info["runs"]}
    assert runs["stat"]["wall_seconds"] == first.info["runs"][0]["wall_seconds"]  # reused, not trained again
    assert (tmp_path / "runs" / str(resumed._id) / "pair-flat-mlp-seed0-config0.json").is_file()
    with pytest.raises(ValueError, match=r"other values of \['lr'\]"):
        ex.run(config_updates={**common, "models": ["stat"], "resume": str(folder), "lr": 0.5})


@pytest.fixture(scope="module", params=[("nfn-hnp", False, False), ("pna", False, False), ("nft", True, False),
                                        ("sign-gnn", False, True)],
                ids=["nfn-hnp", "pna", "nft-probe", "sign-gnn-phase"])
def trained_run(request, tmp_path_factory):
    """A tiny INR classifier of each family trained by the experiment: (run, run directory, zoo).
    With probe features, the checkpoint must carry what runs the networks (w0, the input scales);
    with ``phase``, that new networks are put in canonical phase form too."""
    from experiments.inr_classification import ex
    from graphnfn.zoo import Zoo

    model, probe, phase = request.param
    tmp_path = tmp_path_factory.mktemp(model)
    _observe(ex, FileStorageObserver(str(tmp_path / "runs")))
    run = ex.run(config_updates={**SIREN_TINY, "zoo_root": str(tmp_path / "zoos"), "model": model, "probe": probe,
                                 "phase": phase})
    return run, tmp_path / "runs" / str(run._id), Zoo(run.info["summary"]["zoo"]["path"])


def test_a_trained_model_is_an_artifact_that_predicts_on_new_networks(trained_run):
    """The best checkpoint carries its config, spec and scaler: graphnfn.load_model(run_dir)
    rebuilds it, and its predictions on the zoo's test networks (as modules) give the run's own
    test accuracy."""
    import graphnfn

    run, folder, zoo = trained_run
    trained = graphnfn.load_model(folder)
    test = zoo.indices("test", lambda r: r.get("final", True))
    logits = trained.predict([zoo.module(i) for i in test])
    labels = torch.tensor([zoo.records[i]["label"] for i in test])
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy == pytest.approx(run.info["summary"]["test"]["accuracy"], abs=1e-6)
    if trained.module.encoding.endswith("probes"):  # the probe runs undo the input scaling and use the zoo's w0
        probe, nets = trained.module.layers[0], [zoo.module(i) for i in test[:2]]
        with torch.no_grad():
            want = torch.stack([net(probe.probes) for net in nets])
        torch.testing.assert_close(probe.activations(trained.inputs(nets))[-1], want, rtol=1e-4, atol=1e-5)
    if run.config["phase"]:  # the same functions, other phases: the same predictions; a state_dict is refused
        shifted = []
        for i in test:
            siren = zoo.module(i)
            siren.load_state_dict(pi_shifted(siren, siren.state_dict(), torch.Generator().manual_seed(i)))
            shifted.append(siren)
        torch.testing.assert_close(trained.predict(shifted), logits, rtol=1e-4, atol=1e-4)
        with pytest.raises(ValueError, match="phase=True.*nn.Module"):
            trained.predict([zoo.state_dict(test[0])])
    with pytest.raises(FileNotFoundError, match="no checkpoints match"):
        graphnfn.load_model(folder, model="magep")



def test_graphnfn_predict_gives_the_models_predictions_for_checkpoint_files(trained_run, tmp_path, capsys):
    """`graphnfn predict RUN CKPT... --model ...` prints what TrainedModel.predict gives in process."""
    import graphnfn
    from graphnfn import cli

    _, folder, zoo = trained_run
    test = zoo.indices("test", lambda r: r.get("final", True))[:3]
    paths = [str(tmp_path / f"inr{i}.pt") for i in test]
    for i, path in zip(test, paths):
        torch.save(zoo.state_dict(i), path)
    arch = {k: v for k, v in zoo.records[test[0]]["arch"].items() if k != "name"}
    model = ["--model", "graphnfn.zoo.siren:make_siren", "--model-args", json.dumps(arch)]
    probs = graphnfn.load_model(folder).predict([zoo.module(i) for i in test]).softmax(1)
    assert cli.main(["predict", str(folder), *paths, *model, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["checkpoint"] for r in rows] == paths
    assert [r["class"] for r in rows] == probs.argmax(1).tolist()
    assert [r["probability"] for r in rows] == pytest.approx(probs.max(1).values.tolist(), abs=1e-5)
    assert cli.main(["predict", str(folder), paths[0], *model]) == 0
    assert capsys.readouterr().out == f"{paths[0]}: class {rows[0]['class']} (probability {rows[0]['probability']:.4f})\n"


@settings(max_examples=10, deadline=None)
@given(widths=st.lists(st.integers(1, 12), min_size=1, max_size=3), seed=st.integers(0, 2**16))
def test_refit_output_is_the_least_squares_output_layer(widths, seed):
    """refit-output keeps the hidden layers and fits the output layer: given the INR's own image
    it draws that image again (its own output layer is an exact fit), and for any other target
    its residual is orthogonal to every hidden activation and to the constant (the normal
    equations of least squares), on random SIREN shapes, float64 (to 1e-6: see refit_output)."""
    import converters
    from experiments.tasks import refit_output
    from graphnfn.execute import run_mlp
    from graphnfn.paramshare import concat
    from graphnfn.zoo import coordinate_grid, make_siren

    torch.manual_seed(seed)
    sirens = [make_siren([2, *widths, 1], w0=3.0).double() for _ in range(3)]
    space = concat([converters.to_weight_space(m) for m in sirens], 0)
    coords = coordinate_grid(5).double()
    own = torch.stack([(m(coords)[:, 0] + 1) / 2 for m in sirens]).reshape(3, 1, 5, 5)
    torch.testing.assert_close(refit_output(space, coords, 3.0, own), own, rtol=0, atol=1e-6)
    target = torch.rand(3, 1, 5, 5, dtype=torch.float64)
    image = refit_output(space, coords, 3.0, target)
    hidden = run_mlp(coords, [w[:, 0] for w in space.weights[:-1]], [b[:, 0] for b in space.biases[:-1]],
                     [lambda h: torch.sin(3.0 * h)] * len(widths))[-1]
    design = torch.cat([hidden, torch.ones_like(hidden[..., :1])], -1)
    residual = (image - target).reshape(3, -1, 1)
    normal = design.transpose(1, 2) @ residual  # [3, n + 1, 1]
    # 1e-6: the solve drops directions below 1e-8 of the largest (near-collinear units after a width-1 layer)
    torch.testing.assert_close(normal, torch.zeros_like(normal), rtol=0, atol=1e-6)
