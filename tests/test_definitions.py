"""One definition per fact: the constants every stage shares are assigned once in segkit/ and imported elsewhere.

Read from the source with ``ast`` (nothing is imported), so a second ``MODES = (...)`` or a copied default such as
``tau: float = 0.7`` anywhere in the package fails here.
"""
import ast
import json
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "segkit").rglob("*.py"))

# name -> the one module that defines it
HOMES = {"MODES": "score.py", "TAU": "score.py", "BETA": "score.py", "ALWAYS_KEEP": "score.py",
         "USEFUL": "synth.py", "ROLES": "synth.py",
         "STEPS": "attribute.py", "METHOD": "attribute.py", "BASELINE": "attribute.py",
         "TARGET_ERROR": "attribute.py", "MAX_STEPS": "attribute.py",
         "ANSWER_TEMPLATE": "prompt.py", "PROMPT_SUFFIX": "prompt.py"}


def assigned_names(path: Path) -> set[str]:
    """Names bound by a module-level assignment (``A = ...``, ``A, B = ...``, ``A: T = ...``)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            for n in ast.walk(t):
                if isinstance(n, ast.Name):
                    names.add(n.id)
    return names


def test_each_shared_constant_is_assigned_in_one_module_only():
    where = {name: [p.relative_to(ROOT / "segkit").as_posix() for p in SOURCES if name in assigned_names(p)]
             for name in HOMES}
    assert where == {name: [home] for name, home in HOMES.items()}


def literal_values(path: Path):
    """Every constant tuple/list/set of strings and every float literal in a module, with its line."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and node.elts and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, frozenset(e.value for e in node.elts)
        elif isinstance(node, ast.Constant) and isinstance(node.value, float):
            yield node.lineno, node.value


def test_no_module_spells_out_the_modes_or_the_useful_roles_again():
    from segkit.score import MODES
    from segkit.synth import USEFUL

    copies = [f"{p.name}:{line}" for p in SOURCES for line, value in literal_values(p)
              if value in (frozenset(MODES), frozenset(USEFUL))
              and (p.name, value) not in (("score.py", frozenset(MODES)), ("synth.py", frozenset(USEFUL)))]
    assert copies == []


@pytest.mark.parametrize("option, value", [("tau", 0.7), ("beta", 0.8)])
def test_tau_and_beta_defaults_come_from_score(option, value):
    """A default such as ``tau: float = 0.7`` or ``tau=0.7`` outside score.py is a copy of score.TAU/BETA."""
    pattern = re.compile(rf"\b{option}\s*(?::\s*float\s*)?=\s*{value}\b")
    copies = [f"{p.name}:{n}" for p in SOURCES if p.name != "score.py"
              for n, line in enumerate(p.read_text().splitlines(), 1)
              if pattern.search(line) and not line.lstrip().startswith((">>>", "#", "segkit"))]
    assert copies == []


def test_ig_defaults_are_not_restated_by_parameter_cells_or_files():
    """The IG defaults live in segkit.attribute; the notebooks and the default/smollm2 parameter files leave them
    to it (paper.yaml sets the paper's own scheme on purpose)."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        src = "".join(cell["source"])
        assert not re.search(r"\b(ig_)?(steps|method|baseline|target_error)\s*=", src), nb.name
    for name in ("default.yaml", "smollm2.yaml", "full.yaml"):
        params = yaml.safe_load((ROOT / "notebooks" / "params" / name).read_text())
        for run in [params] + params["runs"]:
            attribute = (run.get("parameters") or {}).get("attribute") or {}
            assert not {"steps", "method", "baseline", "target_error"} & set(attribute), name
