"""Zoo storage: atomic shards, manifest repair, resume after kill -9, determinism, the CLI."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from graphnfn.zoo import SirenRecipe, Zoo, ZooStoreError, make_siren_zoo
from graphnfn.zoo.__main__ import main
from graphnfn.zoo.siren import SirenFit
from graphnfn.zoo.store import MANIFEST, ZooWriter, load_shard, read_manifest
from test_zoo_common import one_thread  # noqa: F401 (autouse fixture)

ROOT = Path(__file__).resolve().parents[1]
TINY_FIT = SirenFit(steps=20, lr=1e-3)


def tiny_siren_zoo(out, fit=TINY_FIT, init="independent", per_image=1, resolution=None, **kw):
    opts = dict(dataset="digits", limit=12, shard_size=4, device="cpu", progress=False)
    recipe = SirenRecipe(init, resolution, per_image, fit)
    return Zoo(make_siren_zoo(out, recipe=recipe, **{**opts, **kw}))


def shard_tensors(root):
    return {p.name: load_shard(root, int(p.name[6:11])) for p in sorted((Path(root) / "shards").glob("*.safetensors"))}


def assert_same_zoo(a, b):
    assert [{k: v for k, v in r.items()} for r in Zoo(a).records] == [r for r in Zoo(b).records]
    ta, tb = shard_tensors(a), shard_tensors(b)
    assert ta.keys() == tb.keys()
    for name in ta:
        assert all(torch.equal(ta[name][k], tb[name][k]) for k in ta[name])


def test_siren_zoo_layout_and_records(tmp_path):
    zoo = tiny_siren_zoo(tmp_path / "z", per_image=2)
    assert len(zoo) == 12 and [r["id"] for r in zoo.records] == list(range(12))
    assert sorted(p.name for p in (tmp_path / "z" / "shards").iterdir()) == [
        "shard-00000.safetensors", "shard-00001.safetensors", "shard-00002.safetensors"]
    r = zoo.records[0]
    assert {"split", "label", "seed", "hparams", "metrics", "arch", "image", "copy"} <= set(r)
    assert r["hparams"]["init"] == "independent" and r["metrics"]["steps"] == 20
    # K copies per image, consecutive, same split and label, different seeds
    assert zoo.records[0]["image"] == zoo.records[1]["image"] and zoo.records[1]["copy"] == 1
    assert zoo.records[0]["seed"] != zoo.records[1]["seed"]
    model = zoo.module(5)
    assert sum(p.numel() for p in model.parameters()) == 1185
    assert zoo.config["hparams"]["resolution"] == 8


def test_shared_init_uses_one_init_per_copy(tmp_path):
    zoo = tiny_siren_zoo(tmp_path / "z", init="shared", per_image=2, fit=SirenFit(steps=0))
    seeds = [(r["copy"], r["seed"]) for r in zoo.records]
    assert len({s for c, s in seeds if c == 0}) == 1 and len({s for _, s in seeds}) == 2
    # zero steps: the stored weights are the init itself, equal across images for one copy
    assert torch.equal(zoo.state_dict(0)["0.weight"], zoo.state_dict(2)["0.weight"])


def test_deterministic_from_the_seed(tmp_path):
    tiny_siren_zoo(tmp_path / "a", seed=3)
    tiny_siren_zoo(tmp_path / "b", seed=3)
    assert_same_zoo(tmp_path / "a", tmp_path / "b")
    other = tiny_siren_zoo(tmp_path / "c", seed=4)
    assert not torch.equal(other.state_dict(0)["0.weight"], Zoo(tmp_path / "a").state_dict(0)["0.weight"])


def test_rerun_with_other_settings_is_refused(tmp_path):
    tiny_siren_zoo(tmp_path / "z")
    with pytest.raises(ZooStoreError, match="other settings.*limit"):
        tiny_siren_zoo(tmp_path / "z", limit=8)


def test_second_writer_is_locked_out(tmp_path):
    with ZooWriter(tmp_path / "z", {"kind": "x"}):
        with pytest.raises(ZooStoreError, match="another process"):
            ZooWriter(tmp_path / "z", {"kind": "x"})


def test_manifest_is_repaired_from_the_shards(tmp_path):
    """A kill between a shard's rename and its manifest append, or mid-append."""
    tiny_siren_zoo(tmp_path / "z")
    manifest = tmp_path / "z" / MANIFEST
    good = manifest.read_text()
    lines = good.splitlines(keepends=True)
    for damaged in ("".join(lines[:5]) + lines[5][:17], "".join(lines[:4]), good + lines[-1]):
        manifest.write_text(damaged)
        (tmp_path / "z" / "shards" / "shard-00007.safetensors.tmp-999").write_bytes(b"partial")
        ZooWriter(tmp_path / "z", Zoo(tmp_path / "z").config).close()
        assert manifest.read_text() == good
        assert not list((tmp_path / "z" / "shards").glob("*.tmp-*"))


def test_shard_files_are_written_once(tmp_path):
    with ZooWriter(tmp_path / "z", {"kind": "x"}) as w:
        w.write_shard(0, {"a": torch.zeros(2, 3)}, [{"id": 0}, {"id": 1}])
        with pytest.raises(ZooStoreError, match="already exists"):
            w.write_shard(0, {"a": torch.zeros(2, 3)}, [{"id": 0}, {"id": 1}])
    assert [r["row"] for r in read_manifest(tmp_path / "z")] == [0, 1]


def cli(out, *extra):
    return [sys.executable, "-m", "graphnfn.zoo", "siren", "--dataset", "digits", "--out", str(out), "--limit", "60",
            "--per-image", "1", "--resolution", "8", "--steps", "40", "--target-psnr", "none", "--device", "cpu",
            "--no-progress", *extra]


def test_kill_9_then_rerun_resumes_without_loss_or_duplicates(tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "killed"
    args = cli(out, "--shard-size", "3", "--init", "independent")
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list((out / "shards").glob("*.safetensors"))) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list((out / "shards").glob("*.safetensors")))
    assert 3 <= done_before < 20, "the generation must be killed mid-way for this test to mean anything"
    subprocess.run(args, cwd=ROOT, env=env, check=True, capture_output=True)
    ids = [json.loads(line)["id"] for line in (out / MANIFEST).read_text().splitlines()]
    assert sorted(ids) == list(range(60)) and len(ids) == 60
    # the same request made in one go, in this process
    tiny_siren_zoo(tmp_path / "clean", limit=60, shard_size=3, per_image=1, resolution=8,
                   fit=SirenFit(steps=40, lr=1e-3, target_psnr=None))
    assert_same_zoo(out, tmp_path / "clean")
    main(["info", str(out)])
    assert "60 entries" in capsys.readouterr().out
