"""The house's floors: the data types sit below both model families and the converters."""
import json
import subprocess
import sys
from pathlib import Path

import graphnfn

ROOT = Path(__file__).resolve().parents[1]
MODEL_MODULES = ("graphnfn.models", "graphnfn.nn", "graphnfn.paramshare", "graphnfn.features", "graphnfn.sign_model",
                 "graphnfn.probe_baseline")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys, json; {statement}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def test_importing_converters_loads_no_model_family():
    loaded = _loaded_after("import converters")
    assert "graphnfn.spaces" in loaded and "graphnfn.graph" in loaded
    assert not [m for m in loaded if m.startswith(MODEL_MODULES)]


def test_public_submodules_load_on_first_use():
    for name in graphnfn.SUBMODULES:
        assert getattr(graphnfn, name).__name__ == f"graphnfn.{name}"
    assert graphnfn.paramshare.WeightSpace is graphnfn.spaces.WeightSpace
    assert "io" in dir(graphnfn)
