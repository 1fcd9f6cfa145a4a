"""The prepared GPU run (`make gpu-check`, benchmarks/gpu.py) works end to end: its CPU dry
run at tiny sizes runs every part, so a lent GPU's first minute is not spent on a typo."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_quick_dry_run_runs_every_part(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["meta"]["quick"] is True
    parts = result["parts"]
    assert set(parts) == {"devices", "sparse_vs_dense", "step_ratio", "siren_fit", "classification"}
    for name, part in parts.items():
        assert "error" not in part and "skipped" not in part, (name, part)
    assert parts["devices"]["returncode"] == 0 and "1 passed" in parts["devices"]["summary"]
    assert {r["layer"] for r in parts["sparse_vs_dense"]["rows"]} == {"pna", "sparse-attention", "sparse-recompute",
                                                                       "dense-attention"}
    assert {r["model"] for r in parts["step_ratio"]["rows"]} == {"pna", "transformer", "sign-gnn", "nfn-hnp",
                                                                 "nfn-hnp raw"}
    assert parts["siren_fit"]["inrs"] == 16 and parts["siren_fit"]["inrs_per_s"] > 0
    assert parts["classification"]["returncode"] == 0 and "accuracy" in parts["classification"]["test"]
