"""One definition per fact: the constants every stage shares are assigned once in segkit/ and imported elsewhere.

Read from the source with ``ast`` (nothing is imported), so a second ``MODES = (...)`` or a copied default such as
``tau: float = 0.7`` anywhere in the package fails here; so do a second loss-mask value, percentile interval,
"run `segkit X` first" hint, oracle check, testbed tokenizer corpus or device check, and imports that reach across
the layers (plumbing importing a stage, a stage or an analysis importing the testbed).
"""
import ast
import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "segkit").rglob("*.py"))

# name -> the one module that defines it
HOMES = {"MODES": "modes.py", "REGISTRY": "modes.py", "TAU": "score.py", "BETA": "score.py",
         "ALWAYS_KEEP": "score.py", "USEFUL": "roles.py", "ROLES": "roles.py",
         "STEPS": "attribute.py", "METHOD": "attribute.py", "BASELINE": "attribute.py",
         "TARGET_ERROR": "attribute.py", "MAX_STEPS": "attribute.py", "LEVEL": "stats.py",
         "ANSWER_TEMPLATE": "prompt.py", "PROMPT_SUFFIX": "prompt.py", "IGNORE_INDEX": "train.py",
         "HINTS": "fields.py", "MADE_BY": "fields.py"}
# option name -> the constant that is its default (a literal default of the same value elsewhere is a copy)
DEFAULTS = {"tau": "TAU", "beta": "BETA", "steps": "STEPS", "target_error": "TARGET_ERROR",
            "max_steps": "MAX_STEPS", "level": "LEVEL"}
# the layers (DESIGN.md): plumbing imports no stage; no stage and no analysis imports the testbed's generator
PLUMBING = ("records", "fields", "outputs", "models", "prompt", "roles")
STAGES = ("segment", "attribute", "ig", "hardware", "features", "score", "modes", "train", "finetune", "evaluate",
          "generation")


def module_of(path: Path) -> str:
    return path.relative_to(ROOT / "segkit").with_suffix("").as_posix().replace("/", ".")


def where(test) -> list[str]:
    """``file:line`` of every node of every package module for which ``test(path, node)`` holds."""
    return [f"{module_of(p)}:{node.lineno}" for p in SOURCES for node in ast.walk(ast.parse(p.read_text()))
            if test(p, node)]


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
    from segkit.modes import MODES
    from segkit.roles import USEFUL

    copies = [f"{p.name}:{line}" for p in SOURCES for line, value in literal_values(p)
              if value in (frozenset(MODES), frozenset(USEFUL)) and (p.name, value) != ("roles.py", frozenset(USEFUL))]
    assert copies == []


def literal_defaults(node):
    """``(option name, literal value)`` of every default ``node`` gives: a parameter's default, a dataclass field's
    (``tau: float = 0.7`` or ``field(default=0.7)``) and a keyword argument (``f(tau=0.7)``)."""
    if isinstance(node, (ast.FunctionDef, ast.Lambda)):
        a = node.args
        pairs = list(zip(a.args[len(a.args) - len(a.defaults):], a.defaults)) + list(zip(a.kwonlyargs, a.kw_defaults))
        yield from ((arg.arg, d.value) for arg, d in pairs if isinstance(d, ast.Constant))
    elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
        value = node.value
        if isinstance(value, ast.Call):
            value = next((k.value for k in value.keywords if k.arg == "default"), None)
        if isinstance(value, ast.Constant):
            yield node.target.id, value.value
    elif isinstance(node, ast.Call):
        yield from ((k.arg, k.value.value) for k in node.keywords if isinstance(k.value, ast.Constant))


def test_option_defaults_are_the_shared_constants_not_copies_of_their_values():
    """``tau: float = 0.7``, ``max_steps: int = 128`` or ``level=0.95`` outside the constant's module is a copy."""
    import segkit.attribute
    import segkit.score
    import segkit.stats

    value = {name: getattr(m, name) for m in (segkit.attribute, segkit.score, segkit.stats)
             for name in DEFAULTS.values() if hasattr(m, name)}
    copies = where(lambda p, node: any(
        option in DEFAULTS and p.name != HOMES[DEFAULTS[option]] and type(v) is type(value[DEFAULTS[option]])
        and v == value[DEFAULTS[option]] for option, v in literal_defaults(node)))
    assert copies == []


def test_the_loss_mask_turns_into_ignored_labels_in_one_place():
    """-100 (the label the loss ignores) is ``train.IGNORE_INDEX``, written once; masks are 0/1 data elsewhere."""
    def minus_100(p, node):
        return isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and getattr(
            node.operand, "value", None) == 100 and p.name != "train.py"
    assert where(minus_100) == []


def test_percentile_intervals_come_from_stats():
    """A 95% interval is ``stats.percentile_interval`` (from ``stats.LEVEL``), not ``percentile(x, [2.5, 97.5])``."""
    def percentile(p, node):
        return (isinstance(node, ast.Attribute) and node.attr in ("percentile", "nanpercentile")
                and p.name != "stats.py") or (isinstance(node, ast.Constant) and node.value == 97.5)
    assert where(percentile) == []


def strings(tree):
    """Every string constant of ``tree`` but docstrings (what the code says, not what it documents)."""
    docs = {id(n.body[0].value) for n in ast.walk(tree) if isinstance(
        n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body and isinstance(n.body[0], ast.Expr)}
    return [n for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
            and id(n) not in docs]


def test_where_a_missing_field_comes_from_is_said_once():
    """"run `segkit select` first" and the planted roles' origin are ``fields.HINTS``; the others name the field."""
    said = [f"{module_of(p)}:{n.lineno}" for p in SOURCES if p.name != "fields.py" for n in strings(
        ast.parse(p.read_text())) if "run `segkit" in n.value or "` first" in n.value or "`segkit synth` ha" in n.value]
    assert said == []


def test_what_a_mode_needs_is_read_from_the_mode_registry():
    """"oracle needs planted roles" is the registry's row (``modes.unavailable``), not a test on the mode's name;
    only the verdict of analysis.modes names the oracle row it reads."""
    def oracle_test(p, node):
        return isinstance(node, ast.Compare) and module_of(p) not in ("modes", "analysis.modes") and any(
            getattr(x, "value", None) == "oracle" for x in (node.left, *node.comparators))
    assert where(oracle_test) == []


def called(node, name: str) -> bool:
    return isinstance(node, ast.Call) and name in (getattr(node.func, "id", None), getattr(node.func, "attr", None))


def test_testbed_tokenizers_are_trained_on_one_corpus():
    """Every testbed tokenizer the package builds reads ``testbed_model.tokenizer_corpus(records)``."""
    assert where(lambda p, node: called(node, "build_tokenizer") and not (
        node.args and called(node.args[0], "tokenizer_corpus"))) == []


def test_devices_are_checked_in_models_only():
    """Whether cuda:N or mps exists is ``models.resolve_device``'s question, asked nowhere else."""
    assert where(lambda p, node: p.name != "models.py" and (
        isinstance(node, ast.Attribute) and node.attr == "device_count"
        or called(node, "is_available") and getattr(node.func.value, "attr", None) == "mps")) == []


def imported(path: Path) -> set[str]:
    """The segkit modules ``path`` imports, at any depth of the file (``from .x import y``, ``from . import x``)."""
    package, out = module_of(path).split(".")[:-1], set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parent = package[:len(package) - node.level + 1]
            names = [node.module] if node.module else [a.name for a in node.names]
            out |= {".".join(parent + [name]) for name in names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("segkit."):
            out.add(node.module.removeprefix("segkit."))
    return out


def test_layers_import_downwards():
    """Plumbing imports no stage; no stage and no analysis imports the testbed's generator (``synth``): the
    method knows the planted roles' vocabulary (``segkit.roles``), never the testbed."""
    up = {f"{module_of(p)} imports {m}" for p in SOURCES for m in imported(p)
          if (module_of(p) in PLUMBING and m in STAGES)
          or ((module_of(p) in STAGES or module_of(p).startswith("analysis")) and m == "synth")}
    assert up == set()


def test_ig_defaults_are_not_restated_by_parameter_cells_or_files():
    """The IG defaults live in segkit.attribute; the notebooks and the default/smollm2 parameter files leave them
    to it (paper.yaml sets the paper's own scheme on purpose)."""
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cell = next(c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
        src = "".join(cell["source"])
        assert not re.search(r"\b(ig_)?(steps|method|baseline|target_error)\s*=", src), nb.name
    for name in ("default.yaml", "smollm2.yaml", "powered.yaml"):
        params = yaml.safe_load((ROOT / "notebooks" / "params" / name).read_text())
        for run in [params] + params["runs"]:
            attribute = (run.get("parameters") or {}).get("attribute") or {}
            assert not {"steps", "method", "baseline", "target_error"} & set(attribute), name


def _graph() -> dict[str, set[str]]:
    """``{module: the segkit modules it imports}``, a package named by its folder (``analysis``)."""
    def name(p):
        return module_of(p).removesuffix(".__init__")
    known = {name(p) for p in SOURCES}
    return {name(p): {m for m in imported(p) if m in known and m != name(p)} for p in SOURCES}


def test_no_import_circle():
    """No segkit module imports, at any depth, a module that imports it back (a function-level import included:
    it hides a circle, it does not remove it)."""
    graph, circles = _graph(), []

    def visit(node, path):
        for nxt in sorted(graph[node]):
            if nxt in path:
                circles.append(" -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in seen:
                seen.add(nxt)
                visit(nxt, path + [nxt])
    for start in sorted(graph):
        seen = {start}
        visit(start, [start])
    assert circles == []


def test_only_the_face_imports_the_command_line_and_modules_stay_small():
    """The command line is the top of the house: only ``__main__`` and the report runner import ``segkit.cli``
    (the process launcher reads ``segkit.commands``); no module is over 380 lines."""
    assert {m for m, deps in _graph().items() if "cli" in deps} <= {"__main__", "report"}
    assert {module_of(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 380} == {}
