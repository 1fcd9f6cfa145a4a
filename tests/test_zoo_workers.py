"""Many workers on one zoo directory: shares, locks, kill -9 and rerun, verify."""
import json
import os
import signal
import subprocess
import time
from functools import partial
from pathlib import Path

import pytest

from graphnfn.zoo import Zoo, ZooStoreError
from graphnfn.zoo.__main__ import main
from graphnfn.zoo.siren import SirenFit
from graphnfn.zoo.store import MANIFEST, ZooWriter
from graphnfn.zoo.workers import verify, worker_share
from test_zoo_common import one_thread  # noqa: F401 (autouse fixture)
from test_zoo_store import ROOT, assert_same_zoo, cli, tiny_siren_zoo

ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
    ENV.pop(name, None)
# 48 INRs in 16 shards of 3: 8 shards per worker of two
ARGS = ("--limit", "48", "--shard-size", "3", "--init", "independent")


def clean_zoo(path):
    return tiny_siren_zoo(path, limit=48, shard_size=3, per_image=1, resolution=8,
                          fit=SirenFit(steps=40, lr=1e-3, target_psnr=None))


def manifest_ids(root):
    return [json.loads(line)["id"] for line in (Path(root) / MANIFEST).read_text().splitlines()]


def test_a_worker_makes_only_its_share_and_verify_names_the_rest(tmp_path):
    tiny_siren_zoo(tmp_path / "z", num_shards=2, shard_index=1)  # 12 INRs in shards of 4: shards 0, 1, 2
    assert sorted(p.name for p in (tmp_path / "z" / "shards").glob("*.safetensors")) == ["shard-00001.safetensors"]
    report = verify(tmp_path / "z")
    assert not report.ok and any("2 of 3 shards missing: 0, 2" in p for p in report.problems)
    tiny_siren_zoo(tmp_path / "z", num_shards=2, shard_index=0)
    assert verify(tmp_path / "z").ok and sorted(manifest_ids(tmp_path / "z")) == list(range(12))
    assert_same_zoo(tmp_path / "z", tiny_siren_zoo(tmp_path / "one").root)


def test_two_concurrent_workers_give_every_entry_exactly_once(tmp_path):
    out = tmp_path / "z"
    workers = [subprocess.Popen(cli(out, *ARGS, "--num-shards", "2", "--shard-index", str(i)), cwd=ROOT, env=ENV,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    logs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], logs
    assert all(f"worker {i} of 2" in log for i, log in enumerate(logs))
    ids = manifest_ids(out)
    assert sorted(ids) == list(range(48)) and len(ids) == 48
    assert main(["verify", str(out)]) == 0
    assert_same_zoo(out, clean_zoo(tmp_path / "clean").root)


def test_kill_9_mid_shard_then_rerun_loses_and_duplicates_nothing(tmp_path, capsys):
    out = tmp_path / "z"
    # worker 0 of 2 from torchrun's variables, worker 1 from the flags, side by side
    rank0 = {**ENV, "RANK": "0", "WORLD_SIZE": "2"}
    victim = subprocess.Popen(cli(out, *ARGS), cwd=ROOT, env=rank0, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    other = subprocess.Popen(cli(out, *ARGS, "--num-shards", "2", "--shard-index", "1"), cwd=ROOT, env=ENV,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    mine = lambda: [p for p in (out / "shards").glob("*.safetensors") if int(p.name[6:11]) % 2 == 0]  # noqa: E731
    while len(mine()) < 2 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.02)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert 2 <= len(mine()) < 8, "worker 0 must be killed mid-way for this test to mean anything"
    assert other.wait(timeout=300) == 0
    assert not verify(out).ok
    # what a killed worker 0 may leave, and a temporary of worker 1 that only worker 1 may remove
    (out / "shards" / "shard-00014.safetensors.tmp-w0of2").write_bytes(b"partial")
    (out / "shards" / "shard-00015.safetensors.tmp-w1of2").write_bytes(b"partial")
    subprocess.run(cli(out, *ARGS), cwd=ROOT, env=rank0, check=True, capture_output=True)
    assert sorted(p.name for p in (out / "shards").glob("*.tmp-*")) == ["shard-00015.safetensors.tmp-w1of2"]
    ids = manifest_ids(out)
    assert sorted(ids) == list(range(48)) and len(ids) == 48
    report = verify(out)
    assert report.ok and report.notes, report.problems
    assert_same_zoo(out, clean_zoo(tmp_path / "clean").root)
    assert main(["verify", str(out)]) == 0
    assert "complete, 48 entries in 16 shards" in capsys.readouterr().out


def test_workers_of_one_zoo_and_a_lone_writer_exclude_each_other(tmp_path):
    config = {"kind": "x"}
    with ZooWriter(tmp_path / "z", config, 2, 0), ZooWriter(tmp_path / "z", config, 2, 1):
        with pytest.raises(ZooStoreError, match="worker 1 of 2 is already running"):
            ZooWriter(tmp_path / "z", config, 2, 1)
        with pytest.raises(ZooStoreError, match="another process"):
            ZooWriter(tmp_path / "z", config)
    with ZooWriter(tmp_path / "z", config):
        with pytest.raises(ZooStoreError, match="without --num-shards"):
            ZooWriter(tmp_path / "z", config, 2, 0)
    with pytest.raises(ValueError, match="shard_index 2 of num_shards 2"):
        ZooWriter(tmp_path / "z", config, 2, 2)


def test_verify_finds_duplicates_and_orphans(tmp_path):
    zoo = tiny_siren_zoo(tmp_path / "z")
    assert verify(zoo.root).ok
    manifest = zoo.root / MANIFEST
    good = manifest.read_text()
    manifest.write_text(good + good.splitlines(keepends=True)[3])
    assert any("1 entries listed more than once: 3" in p for p in verify(zoo.root).problems)
    manifest.write_text("".join(good.splitlines(keepends=True)[4:]))
    assert any("not listed" in p and "0-3" in p for p in verify(zoo.root).problems)
    manifest.write_text(good)
    (zoo.root / "shards" / "shard-00002.safetensors").unlink()
    problems = verify(zoo.root).problems
    assert any("1 of 3 shards missing: 2" in p for p in problems) and any("without a shard" in p for p in problems)
    assert main(["verify", str(zoo.root)]) == 1


def test_worker_share_from_flags_or_torchrun(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert worker_share() == (1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert worker_share() == (4, 3)
    assert worker_share(8, 5) == (8, 5)  # the flags win
    with pytest.raises(ValueError, match="together"):
        worker_share(8, None)
    with pytest.raises(ValueError, match="shard index 8 of 8"):
        worker_share(8, 8)
    with pytest.raises(SystemExit) as exit_:  # the command line names the mistake instead of a traceback
        main(["siren", "--out", "unused", "--num-shards", "2"])
    assert exit_.value.code == 2


def test_experiments_started_together_wait_for_the_default_zoo(tmp_path, capsys):
    """Two experiments needing the same default zoo (their makers called with wait=True, as the
    tasks call them): the second waits while the first writes, then reads it."""
    import threading

    from experiments import common

    cfg = {"zoo": None, "zoo_root": str(tmp_path), "dataset": "digits"}
    make = partial(tiny_siren_zoo, wait=True)
    root = common.ensure_zoo(cfg, "siren", {"tiny": 1}, make).root
    writer = ZooWriter(root, Zoo(root).config)  # the "first experiment", still writing
    with pytest.raises(ZooStoreError, match="another process"):  # without wait: refused at once
        tiny_siren_zoo(root)
    result = {}
    waiter = threading.Thread(target=lambda: result.update(zoo=common.ensure_zoo(cfg, "siren", {"tiny": 1}, make)))
    waiter.start()
    deadline = time.monotonic() + 30
    while "waiting for it" not in capsys.readouterr().out:
        assert time.monotonic() < deadline and waiter.is_alive(), "the second experiment did not wait"
        time.sleep(0.05)
    assert waiter.is_alive()
    writer.close()
    waiter.join(30)
    assert not waiter.is_alive() and result["zoo"].root == root and len(result["zoo"]) == 12
