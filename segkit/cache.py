"""Cache keys that know what determines a cached result: its options, its inputs and the code that computes it.

``code_hash("segkit.attribute")`` hashes the source of a module and of every segkit module it imports, directly or
not (read from the source files; finding a file may import its parent modules), so editing ``score.py`` changes the
key of every step that runs attribute or train, and leaves the keys of evaluate's steps alone.

    >>> key(options={"steps": 15}, input=file_key("data/limo.jsonl", "runs"), code=code_hash("segkit.attribute"))
"""
from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import os
from pathlib import Path



@functools.lru_cache(maxsize=None)
def module_hash(module: str) -> str:
    """sha1 of one segkit module's source file."""
    return hashlib.sha1(Path(importlib.util.find_spec(module).origin).read_bytes()).hexdigest()


@functools.lru_cache(maxsize=None)
def segkit_imports(module: str) -> tuple[str, ...]:
    """``module`` and every segkit module it imports, directly or not (read from the source; finding a file may
    import its parent modules)."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        try:
            spec = importlib.util.find_spec(name) if name not in seen else None
        except ModuleNotFoundError:  # `from .records import load`: load is a name, not a module
            spec = None
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            continue
        seen.add(name)
        package = name if spec.origin.endswith("__init__.py") else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(Path(spec.origin).read_text())):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                    base = f"{parent}.{base}" if base else parent
                if base.split(".")[0] == "segkit":
                    todo += [base] + [f"{base}.{a.name}" for a in node.names]  # `from . import x`: a submodule
            elif isinstance(node, ast.Import):
                todo += [a.name for a in node.names if a.name.split(".")[0] == "segkit"]
    return tuple(sorted(m for m in seen if m != "segkit" or module == "segkit"))


def code_hash(*modules: str) -> str:
    """A hash of the source of ``modules`` and the segkit modules they import: changes when their code does."""
    closure = sorted({m for mod in modules for m in segkit_imports(mod)})
    return hashlib.sha1("".join(module_hash(m) for m in closure).encode()).hexdigest()[:12]


def key(**parts) -> str:
    """A short hash of ``parts`` (JSON-able values: options, input keys, code hashes)."""
    return hashlib.sha1(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:8]


def model_key(model: str, workdir) -> str:
    """A model as part of a cache key. A folder made by the pipeline: its path in ``workdir`` (its name carries its
    own key); another local file or folder: its absolute path, sizes and times; a hub id, alias, "scratch": as is."""
    path = Path(model).resolve()
    if not Path(model).exists():
        return model
    if path.is_relative_to(Path(workdir).resolve()):
        return os.path.relpath(path, Path(workdir).resolve())
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    return f"{path}:" + key(files=[(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files])


def file_key(path, workdir) -> str:
    """An input file as part of a cache key: its path in ``workdir`` (the pipeline's own), else its content."""
    path = Path(path).resolve()
    if path.is_relative_to(Path(workdir).resolve()):
        return os.path.relpath(path, Path(workdir).resolve())
    return hashlib.sha1(path.read_bytes()).hexdigest()
