"""Guard rails of the code base: what ships, what the HTTP path imports, who imports whom,
where the environment is read, how long a function may grow."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "shared"
MAX_FUNCTION_LINES = 80
DEV_ONLY = ("shared/synthetic.py", "shared/tuning.py")  # Faker; the search: not deployed


def modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package."""
    return {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in sorted(PACKAGE.rglob("*.py"))
    }


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in listed.splitlines() if (ROOT / line).is_file()]


def shipped(files: list[str]) -> set[str]:
    """What ``func azure functionapp publish`` uploads: what .funcignore does not match
    (the same gitignore patterns as Core Tools reads)."""
    ignore = pathspec.GitIgnoreSpec.from_lines((ROOT / ".funcignore").read_text().splitlines())
    return {f for f in files if not ignore.match_file(f)}


def imported_in_a_fresh_interpreter(code: str) -> set[str]:
    """The modules loaded after running ``code`` in a new interpreter."""
    script = f"{code}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def shared_imports(path: Path) -> set[str]:
    """The ``shared`` modules a file imports, at any level (lazy imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("shared"):
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names if a.name.startswith("shared"))
    return names


# --- what ships ---------------------------------------------------------------------


def test_the_deployment_ships_the_app_and_the_package_without_the_dev_tools() -> None:
    files = tracked_files()
    package = {f for f in files if f.startswith("shared/") and f.endswith(".py")}
    # .amlignore: an Azure ML retrain job uploads the deployed folder (shared.jobs).
    shipped_files = {"function_app.py", "host.json", "requirements.txt", ".amlignore"}
    expected = shipped_files | package - set(DEV_ONLY)

    assert shipped(files) == expected
    assert set(DEV_ONLY) <= package  # still in the repository, for the CLI and tests


def test_the_app_loads_without_the_modules_the_deployment_leaves_out() -> None:
    # As deployed: shared.synthetic, shared.tuning and Faker (a dev requirement) absent.
    blocked = ["shared.synthetic", "shared.tuning", "faker"]
    code = (
        f"import sys\nfor name in {blocked!r}: sys.modules[name] = None\n"
        "import function_app\n"
        "names = sorted(f.get_function_name() for f in function_app.app.get_functions())\n"
        "assert names, names\n"
        "from shared import cli\n"
        "cli.build_parser()\n"
    )
    loaded = imported_in_a_fresh_interpreter(code)
    assert "function_app" in loaded


def test_the_http_path_imports_no_training_no_azure_ml_and_no_adapter() -> None:
    loaded = imported_in_a_fresh_interpreter("import shared.api, shared.serving")

    heavy = {"lightfm", "faker", "azure.ai.ml", "azure.storage.blob", "matplotlib"}
    training_side = {
        "shared.pipeline",
        "shared.modeling",
        "shared.training",
        "shared.tuning",
        "shared.synthetic",
        "shared.card",
        "shared.azureml",
    }
    adapters = {"shared.runtime", "shared.cli", "shared.appsettings", "function_app"}
    assert not loaded & (heavy | training_side | adapters)
    assert {"shared.serving", "shared.api.routers.recommendations"} <= loaded


# --- who imports whom ---------------------------------------------------------------


@pytest.mark.parametrize("module", ["shared.serving", "shared.tuning", "shared.registry"])
def test_the_read_side_and_the_search_do_not_load_the_pipeline(module: str) -> None:
    assert "shared.pipeline" not in imported_in_a_fresh_interpreter(f"import {module}")


def test_the_api_imports_no_adapter() -> None:
    adapters = {"shared.runtime", "shared.cli", "shared.appsettings", "shared.storage.factory"}
    for name, path in modules().items():
        if name.startswith("shared.api"):
            assert not shared_imports(path) & adapters, name


def test_the_environment_is_read_in_one_place() -> None:
    readers = []
    for path in [*modules().values(), ROOT / "function_app.py"]:
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Attribute)
                and node.attr in {"environ", "getenv"}
                and isinstance(node.value, ast.Name)
                and node.value.id == "os"
            ):
                readers.append(path.relative_to(ROOT).as_posix())
    assert set(readers) == {"shared/appsettings.py"}  # one module reads (and passes on) it


def test_no_import_cycle_among_the_modules_loaded_at_import_time() -> None:
    # Module-level imports only: a cycle there breaks the first import of either module.
    graph: dict[str, set[str]] = {}
    names = modules()
    for name, path in names.items():
        tree = ast.parse(path.read_text())
        graph[name] = {
            node.module
            for node in tree.body
            if isinstance(node, ast.ImportFrom) and node.module in names and node.module != name
        }

    def visit(node: str, trail: tuple[str, ...]) -> None:
        assert node not in trail, " -> ".join([*trail, node])
        for nxt in graph.get(node, ()):
            if not nxt.startswith(f"{node}."):  # a package importing its own parts
                visit(nxt, (*trail, node))

    for name in graph:
        visit(name, ())


# --- size -----------------------------------------------------------------------------


def test_no_function_in_the_package_is_over_80_lines() -> None:
    long = [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.name} "
        f"({node.end_lineno - node.lineno + 1} lines)"
        for path in modules().values()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert long == []


def test_every_module_has_its_tests() -> None:
    # Tests mirror the package: tests/test_<module>.py (a package's parts share one file).
    exempt = {"__init__", "__main__", "errors", "answers"}  # errors, answers: data only
    missing = [
        name
        for name, path in modules().items()
        if path.stem not in exempt
        and path.parent == PACKAGE
        and not (ROOT / "tests" / f"test_{path.stem}.py").exists()
    ]
    assert missing == []
