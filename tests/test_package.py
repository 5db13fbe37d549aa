"""The package's shape: every module imports on its own, no import cycle between modules or between
sub-packages, no module past 450 lines, and imports at the top of a module except where a comment says
why (start-up time, an optional extra)."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "kdsearch"
MAX_LINES = 450
LAZY_BY_DESIGN = {"api.py", "cli.py"}  # each command imports what it needs: `import kdsearch` and --help stay fast


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def module_imports(name: str, path: Path, everywhere: bool = False) -> set[str]:
    """The package's modules that `name` imports at module level (what runs when it is imported), or
    `everywhere`: inside functions too."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    for node in (ast.walk(tree) if everywhere else tree.body):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                out.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in MODULES else target)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kdsearch"):
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("kdsearch")}
    return {m for m in out if m in MODULES and m != name}


def test_no_import_cycle():
    graph = {name: module_imports(name, path) for name, path in MODULES.items()}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            raise AssertionError("import cycle: " + " -> ".join(path[path.index(name):] + [name]))
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, path + [name])
        done.add(name)

    for name in graph:
        visit(name, [])


def package_of(module: str) -> str:
    """The node a module belongs to in the package graph: its first-level sub-package (kdsearch.search.trials
    -> search) or, for a top-level module, the module (kdsearch.errors -> errors)."""
    return module.split(".")[1]


def package_graph() -> dict[str, dict[str, list[str]]]:
    """Sub-package -> sub-packages it imports, each with the importing modules. Imports inside functions
    count (they are there for start-up time, not to hide a dependency); the package's own __init__
    (`kdsearch`, its face) is no node."""
    graph: dict[str, dict[str, list[str]]] = {}
    for name, path in MODULES.items():
        if name == "kdsearch":
            continue
        for dep in module_imports(name, path, everywhere=True):
            if dep != "kdsearch" and package_of(dep) != package_of(name):
                graph.setdefault(package_of(name), {}).setdefault(package_of(dep), []).append(name)
    return graph


def test_no_import_cycle_between_sub_packages():
    """docs/architecture.md's order holds between sub-packages, not only between modules: config reads
    models, models saves through runs, so runs must not import config (or anything that leads back)."""
    graph = package_graph()
    done: set[str] = set()

    def visit(package: str, path: list[str]) -> None:
        if package in path:
            cycle = path[path.index(package):] + [package]
            raise AssertionError("package import cycle: " + " -> ".join(
                f"{a} ({', '.join(sorted(set(graph[a][b]))[:2])})" for a, b in zip(cycle, cycle[1:])) + f" -> {package}")
        if package in done:
            return
        for dep in sorted(graph.get(package, {})):
            visit(dep, path + [package])
        done.add(package)

    for package in sorted(graph):
        visit(package, [])


def test_the_package_graph_sees_imports_inside_functions():
    """The graph is built from every import: cli.py imports its commands' packages inside functions."""
    assert {"search", "reporting", "export"} <= set(package_graph()["cli"])


def test_every_module_imports_on_its_own():
    """One fresh interpreter imports each module with no other module of the package loaded before it
    (third-party packages stay loaded between them: only the package's own import order is tested)."""
    script = (
        "import importlib, sys\n"
        f"for name in {sorted(m for m in MODULES if not m.endswith('__main__'))!r}:\n"  # __main__ runs the CLI
        "    for loaded in [m for m in sys.modules if m == 'kdsearch' or m.startswith('kdsearch.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        print(f'{name}: {type(exc).__name__}: {exc}')\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600,
                            cwd=PACKAGE.parent)
    failures = [line for line in result.stdout.splitlines() if line.startswith("kdsearch")]
    assert result.returncode == 0 and not failures, "\n".join(failures) or result.stderr[-2000:]


def test_no_module_is_long():
    long = {name: n for name, path in MODULES.items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_imports_inside_functions_say_why():
    unexplained = []
    for name, path in MODULES.items():
        if path.name in LAZY_BY_DESIGN:
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for inner in ast.walk(node):
                    if isinstance(inner, (ast.Import, ast.ImportFrom)) and "#" not in lines[inner.lineno - 1]:
                        unexplained.append(f"{name}:{inner.lineno}: {lines[inner.lineno - 1].strip()}")
    assert not unexplained, unexplained


def test_the_data_flow_has_its_sub_packages():
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert {"config", "data", "models", "training", "search", "runs", "analysis", "final", "reporting", "export"} <= packages


def test_the_students_package_face_lists_what_users_import():
    """`from kdsearch.models.students import StudentSpec, build` works, with the references, and builds every
    registered family (importing the package registers them, before its face is read)."""
    import kdsearch.models.students as students
    from kdsearch.models.students.registry import FAMILIES

    assert set(students.__all__) == {"StudentSpec", "build", "REFERENCES", "reference_spec", "scaled_reference"}
    assert all(hasattr(students, name) for name in students.__all__)
    assert {"plain", "residual", "inverted"} <= set(FAMILIES)
    for name in students.REFERENCES:
        spec = students.reference_spec(name)
        assert isinstance(spec, students.StudentSpec) and sum(p.numel() for p in students.build(spec).parameters()) > 0


def test_the_final_package_face_lists_what_other_packages_import():
    """`from kdsearch.final import train_final, LrPolicy, headline, ...` works; importing the package for its
    results (final.arms: what reports and exports read) does not import the training, which loads when
    train_final or chosen_trial is first used."""
    code = ("import sys, kdsearch.final as final\n"
            "print('kdsearch.final.train' in sys.modules, 'torch' in sys.modules)\n"
            "from kdsearch.final import *\n"
            "print(sorted(final.__all__) == sorted(n for n in final.__all__ if n in globals()),"
            " 'kdsearch.final.train' in sys.modules, train_final is final.train.train_final)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            cwd=PACKAGE.parent)
    assert result.stdout.split() == ["False", "False", "True", "True", "True"], result.stdout + result.stderr[-2000:]
