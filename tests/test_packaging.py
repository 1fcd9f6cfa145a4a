"""pyproject.toml and environment.yml describe the same dependency set."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": "pytorch", "torch-geometric": "pyg", "torch-scatter": "pytorch-scatter"}


def _name(requirement: str) -> str:
    return re.split(r"[<>=!\[ ;]", requirement.strip(), maxsplit=1)[0].lower()


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in ("test", "scatter"):
        wanted |= {_name(r) for r in project["optional-dependencies"][extra]}
    wanted.discard("pyyaml")  # only the packaging test itself reads YAML
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    assert {"python", "pip"} <= conda
    assert {CONDA_NAMES.get(n, n) for n in wanted} == conda - {"python", "pip"}
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ." in pip_section


def test_version_license_and_citation():
    import graphnfn

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert graphnfn.__version__ == project["version"]
    assert "MIT License" in (ROOT / "LICENSE").read_text() and project["license"]["text"] == "MIT"
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == project["version"] and len(citation["references"]) >= 5
