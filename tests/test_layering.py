"""The layers hold: the core imports no Ray or MLflow, raysearch.schema is a standard-library leaf, and an
import inside a function is there only to keep a heavy dependency (Ray, MLflow, pyarrow, matplotlib) out
of a module that does not need it, never to dodge an import cycle."""

import ast
import json
import subprocess
import sys

from tests.helpers import ROOT

CORE = ("raysearch.schema", "raysearch.config", "raysearch.spaces", "raysearch.relax", "raysearch.algorithms",
        "raysearch.data", "raysearch.proxies", "raysearch.predictors", "raysearch.search", "raysearch.training",
        "raysearch.distributed", "raysearch.baselines")
HEAVY = ("ray", "mlflow", "pyarrow", "matplotlib")  # what `import raysearch` must not load


def _loaded(modules: list[str]) -> dict[str, list[str]]:
    """Per module: the top-level packages a fresh interpreter holds after importing it (and nothing else)."""
    script = ("import importlib, json, sys\n"
              "before = set(sys.modules)\n"
              "importlib.import_module(sys.argv[1])\n"
              "print(json.dumps(sorted({m.split('.')[0] for m in set(sys.modules) - before} | "
              "{m for m in set(sys.modules) - before if m.startswith('raysearch')})))")
    procs = {m: subprocess.Popen([sys.executable, "-c", script, m], cwd=ROOT, stdout=subprocess.PIPE, text=True)
             for m in modules}
    out = {}
    for module, proc in procs.items():
        stdout, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"importing {module} first failed"
        out[module] = json.loads(stdout)
    return out


def _module_of(dotted: str) -> str | None:
    path = ROOT.joinpath(*dotted.split("."))
    return dotted if path.with_suffix(".py").exists() or (path / "__init__.py").exists() else None


def _inner_imports() -> list[tuple[str, str, str]]:
    """(module, function, imported project module) for every import of raysearch/trainables inside a function."""
    found = []
    for path in sorted((ROOT / "raysearch").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for sub in ast.walk(node):
                if isinstance(sub, ast.ImportFrom) and sub.module.split(".")[0] in ("raysearch", "trainables"):
                    for alias in sub.names:  # `from package import submodule` imports the submodule
                        found.append((module, node.name, _module_of(f"{sub.module}.{alias.name}") or sub.module))
    return found


def test_the_core_imports_no_ray_mlflow_pyarrow_or_matplotlib():
    for module, packages in _loaded(list(CORE)).items():
        assert not set(HEAVY) & set(packages), f"{module} imports {set(HEAVY) & set(packages)}"


def test_schema_is_a_leaf_of_the_standard_library_and_yaml():
    """Every module may import raysearch.schema (ConfigError, spec) because it imports nothing of ours."""
    tree = ast.parse((ROOT / "raysearch" / "schema.py").read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.level == 0}
    assert imported and not imported - set(sys.stdlib_module_names) - {"yaml"}, imported


def test_an_import_inside_a_function_keeps_a_heavy_dependency_out_of_its_module():
    inner = _inner_imports()
    assert inner  # the scan sees them (e.g. the CLI's runner)
    loaded = _loaded(sorted({m for m, _, _ in inner} | {t for _, _, t in inner}))
    for module, function, target in inner:
        kept_out = set(HEAVY) & set(loaded[target]) - set(loaded[module])
        assert kept_out, (
            f"{module}.{function} imports {target} inside the function, which loads none of {HEAVY} that "
            f"{module} does not load anyway: import it at the top (an import cycle is mended by moving the "
            "shared piece to a leaf module)")
