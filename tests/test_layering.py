"""The layers hold: the core imports no Ray or MLflow, raysearch.schema is a standard-library leaf, and an
import inside a function is there only to keep a heavy dependency (Ray, MLflow, pyarrow, matplotlib) out
of a module that does not need it, never to dodge an import cycle.

Read from the sources (what each module imports when it loads, followed through the project's modules and
their packages), so no interpreter has to start per module."""

import ast
import functools
import sys

from tests.helpers import ROOT

CORE = ("raysearch.schema", "raysearch.config", "raysearch.spaces", "raysearch.relax", "raysearch.algorithms",
        "raysearch.data", "raysearch.proxies", "raysearch.predictors", "raysearch.search", "raysearch.training",
        "raysearch.distributed", "raysearch.baselines", "raysearch.augment", "raysearch.model")
HEAVY = ("ray", "mlflow", "pyarrow", "matplotlib")  # what `import raysearch` must not load
INNER_OK = (*HEAVY, "torch")  # what an import inside a function may keep out of its module
PROJECT = ("raysearch", "trainables")


def _path(module: str):
    path = ROOT.joinpath(*module.split("."))
    return path / "__init__.py" if (path / "__init__.py").exists() else path.with_suffix(".py")


def _is_module(module: str) -> bool:
    return module.split(".")[0] in PROJECT and _path(module).exists()


def _imports(node, function: str):
    """(import node, the function it sits in or '' at load time) for every import under `node`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, function
        inner = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
        yield from _imports(child, child.name if inner else function)


def _names(node) -> list[str]:
    """The modules an import statement loads (a `from package import submodule` loads the submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:
        return []  # the project uses absolute imports only
    names = [f"{node.module}.{a.name}" for a in node.names]
    return list(dict.fromkeys(name if _is_module(name) else node.module for name in names))


def _module_imports(module: str, in_function: bool) -> list[tuple[str, str]]:
    """(imported module, enclosing function or '') of the module's imports at load time, or inside functions."""
    return [(name, function) for node, function in _imports(ast.parse(_path(module).read_text()), "")
            if bool(function) == in_function for name in _names(node)]


@functools.cache
def _loads(module: str) -> frozenset[str]:
    """Top-level packages loaded by importing `module` (its parent packages first), through the project."""
    parts = module.split(".")
    loaded, todo = set(), [".".join(parts[: i + 1]) for i in range(len(parts))]
    seen = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if not _is_module(name):
            loaded.add(name.split(".")[0])
            continue
        for imported, _ in _module_imports(name, in_function=False):
            pieces = imported.split(".")
            todo.extend(".".join(pieces[: i + 1]) for i in range(len(pieces)))
    return frozenset(loaded)


def test_the_core_imports_no_ray_mlflow_pyarrow_or_matplotlib():
    for module in CORE:
        assert not set(HEAVY) & _loads(module), f"{module} loads {set(HEAVY) & _loads(module)}"
    assert "torch" in _loads("raysearch.algorithms")  # the scan follows the project's imports


def test_schema_is_a_leaf_of_the_standard_library_and_yaml():
    """Every module may import raysearch.schema (ConfigError, spec) because it imports nothing of ours."""
    imported = {name.split(".")[0] for name, _ in _module_imports("raysearch.schema", in_function=False)}
    assert imported and not imported - set(sys.stdlib_module_names) - {"yaml"}, imported


def test_the_ray_worker_set_up_hook_loads_only_the_standard_library():
    """Every Ray worker process runs it first (raysearch.ray_session.start_ray), helper actors included."""
    assert _loads("raysearch.worker_logs") <= set(sys.stdlib_module_names) | {"raysearch", "__future__"}


def test_an_import_inside_a_function_keeps_a_heavy_dependency_out_of_its_module():
    modules = [".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
               for p in sorted((ROOT / "raysearch").rglob("*.py"))]
    inner = [(m, f, t) for m in modules for t, f in _module_imports(m, in_function=True) if _is_module(t)]
    assert any(t == "raysearch.runner" for _, _, t in inner)  # the scan sees them (e.g. the CLI's runner)
    for module, function, target in inner:
        assert set(INNER_OK) & _loads(target) - _loads(module), (
            f"{module}.{function} imports {target} inside the function, which loads none of {INNER_OK} that "
            f"{module} does not load anyway: import it at the top (an import cycle is mended by moving the "
            "shared piece to a leaf module)")
