"""The house rules, checked on the source itself (ast): the pipeline's direction, no import cycle, the layers of
mto pointing one way and its one public surface, the method library's dependencies, and modules small enough to
read."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("mto", "ablations", "benchmarks")
MTO_ALLOWED = {"torch", "torchvision", "timm", "numpy", "sklearn", "mto"}
COMPOSITION_ROOT = "ablations.run.cli"  # runs the study, then builds its report


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, modules: set[str]) -> set[str]:
    """Every module ``path`` imports, at any depth of the code (deferred imports count too; those under
    ``if TYPE_CHECKING:``, for annotations only, never run and do not)."""
    out: set[str] = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:  # ``from pkg import module`` imports the module
                out.add(f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module)
    return out


def graph() -> dict[str, set[str]]:
    mods = sources()
    names = set(mods)
    return {m: {i for i in imports(p, names) if i in names and i != m} for m, p in mods.items()}


def test_no_import_cycle_anywhere():
    g = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(g[m]):
            if m.startswith(n + "."):  # a module's own package: initialised before it, no cycle
                continue
            if state.get(n) == 1:
                cycle = stack[stack.index(n) :] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in sorted(g):
        if m not in state:
            visit(m)


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _method_description(module: str) -> bool:
    """The torch-free description of the methods: the registry, the settings several methods share and each
    method folder's ``__init__`` (``mto.methods.<name>``), plus the ``mto.methods`` package itself."""
    parts = module.split(".")
    folder = len(parts) == 3 and (ROOT / "mto" / "methods" / parts[2] / "__init__.py").is_file()
    return module in ("mto.methods", "mto.methods.registry", "mto.methods.shared") or (
        _under(module, "mto.methods") and folder
    )


# The layers of mto, lowest first; a module belongs to the first layer whose predicate it meets and may import
# only modules of its own layer or lower ones. ``mto`` itself is the public surface over all of them.
MTO_LAYERS = (
    ("config", lambda m: _under(m, "mto.config") or _method_description(m)),
    ("data", lambda m: _under(m, "mto.data")),
    ("objective", lambda m: _under(m, "mto.objective")),
    ("methods", lambda m: _under(m, "mto.methods")),
    ("training", lambda m: _under(m, "mto.training")),
    ("surface", lambda m: m == "mto"),
)


def mto_layer(module: str) -> int:
    """The index in ``MTO_LAYERS`` of the layer ``module`` belongs to."""
    for rank, (_, belongs) in enumerate(MTO_LAYERS):
        if belongs(module):
            return rank
    pytest.fail(f"{module} is in no layer of MTO_LAYERS: declare where it belongs")


def test_mto_layers_point_one_way():
    for m, deps in sorted(graph().items()):
        if not _under(m, "mto"):
            continue
        rank = mto_layer(m)
        for d in sorted(deps):
            if _under(d, "mto") and not m.startswith(d + ".") and mto_layer(d) > rank:
                pytest.fail(
                    f"{m} (layer {MTO_LAYERS[rank][0]}) imports {d} (layer {MTO_LAYERS[mto_layer(d)][0]}): "
                    f"a module imports only its own layer or lower ones, "
                    f"{' < '.join(name for name, _ in MTO_LAYERS)}"
                )


def test_ablations_import_mto_only_through_its_surface():
    """``ablations`` sees ``mto`` as ``from mto import <name in mto.__all__>`` (deferred imports too)."""
    import mto

    for m, p in sources().items():
        if not _under(m, "ablations"):
            continue
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                bad = [a.name for a in node.names if _under(a.name, "mto")]
                assert not bad, f"{m}, line {node.lineno}: import {', '.join(bad)}; write from mto import ..."
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and _under(node.module or "", "mto"):
                assert node.module == "mto", f"{m}, line {node.lineno}: from {node.module} import ...; use from mto"
                hidden = [a.name for a in node.names if a.name not in mto.__all__]
                assert not hidden, f"{m}, line {node.lineno}: from mto import {', '.join(hidden)}, not in mto.__all__"


def test_report_and_run_meet_only_through_the_contract():
    for m, deps in graph().items():
        if m.startswith("ablations.report"):
            assert not [d for d in deps if d.startswith("ablations.run")], f"{m} imports the run side"
        if m.startswith("ablations.run") and m != COMPOSITION_ROOT:
            assert not [d for d in deps if d.startswith("ablations.report")], f"{m} imports the report side"
    g = graph()
    assert "ablations.contract" in g["ablations.run.tracking"] and "ablations.contract" in g["ablations.report.reader"]


def test_the_study_stage_knows_nothing_of_ray_mlflow_torch_or_the_report():
    mods = sources()
    heavy = {"ray", "mlflow", "optuna", "torch"}  # a study is checked in a fraction of a second
    for m, p in mods.items():
        if m.startswith("ablations.study"):
            top = {i.split(".")[0] for i in imports(p, set(mods))}
            assert not top & heavy, f"{m} imports {top & heavy}"
            assert "mto.training.unit" not in imports(p, set(mods)), (
                f"{m} imports mto.training.unit (torch): use mto.training.fusable"
            )
            assert not [i for i in imports(p, set(mods)) if i.startswith(("ablations.run", "ablations.report"))]


def test_mto_imports_only_torch_torchvision_timm_numpy_sklearn():
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    mods = sources()
    for m, p in mods.items():
        if m.startswith("mto"):
            bad = {i.split(".")[0] for i in imports(p, set(mods))} - MTO_ALLOWED - stdlib
            assert not bad, f"{m} imports {bad}"


@pytest.mark.parametrize(
    "path",
    [p for pkg in ("mto", "ablations") for p in sorted((ROOT / pkg).rglob("*.py"))],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_source_files_stay_readable(path):
    """A module is one concept a reader holds at once: at most 400 lines as the formatter (ruff) writes them, which
    puts each argument of a long call on a line of its own."""
    lines = len(path.read_text().splitlines())
    # the report's steps (read, compute, render, write back) and their parts are smaller still
    limit = 250 if path.is_relative_to(ROOT / "ablations" / "report") else 400
    assert lines <= limit, f"{path.relative_to(ROOT)} has {lines} lines (at most {limit}): split it by concept"


def test_no_file_points_outside_the_repository():
    """The method is documented in docs/method.md; no file may send a reader to a document we do not ship."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    outside = ("../" + "shared", "DESIGN" + ".md")  # spelt apart so this file does not match itself
    for name in tracked:
        p = ROOT / name
        if p.suffix in {".py", ".md", ".yaml", ".toml", ".cfg", ""} and p.is_file():
            text = p.read_text(errors="ignore")
            assert not [o for o in outside if o in text], f"{name} points outside the repository"


def test_no_module_outside_the_method_registry_names_a_method():
    """A method is one place: its folder of ``mto.methods`` (and the registry's default). Everywhere else asks
    the registry, so adding a method touches no other module."""
    from mto.methods import registry

    methods = set(registry.names())
    for m, p in sources().items():
        if m == "mto.methods.registry" or any(
            m == f"mto.methods.{n}" or m.startswith(f"mto.methods.{n}.") for n in methods
        ):
            continue
        named = sorted(
            {
                node.value
                for node in ast.walk(ast.parse(p.read_text()))
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in methods
            }
        )
        assert not named, f"{m} names the methods {named}: ask mto.methods.registry instead"
