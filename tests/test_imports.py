"""The library's import graph: no gradio (nor the Space's package) behind `import gms_hub`, and no cycles."""

import ast
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "gms_hub"


def _run(code: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _module_names() -> dict:
    """Dotted module name -> file, for every module of the package."""
    names = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def test_importing_the_library_does_not_import_gradio():
    code = (
        "import sys, json\n"
        "import gms_hub\n"
        "from gms_hub import GMS, load_model\n"
        "import gms_hub.data, gms_hub.inference.predict, gms_hub.io.reading, gms_hub.models.resolver\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('gradio', 'gradio_client', 'space'))))\n"
    )
    assert json.loads(_run(code).stdout.strip().splitlines()[-1]) == []


def test_every_module_imports_first_in_a_fresh_package():
    """Import each module as the first one of the package (a module-level cycle fails only in some orders)."""
    names = [name for name in _module_names() if name != "gms_hub"]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for loaded in [m for m in sys.modules if m == 'gms_hub' or m.startswith('gms_hub.')]:\n"
        "        del sys.modules[loaded]\n"
        "    importlib.import_module(name)\n"
        f"print('imported', {len(names)})\n"
    )
    assert f"imported {len(names)}" in _run(code).stdout


def _import_graph() -> dict:
    """module -> package modules it imports anywhere in its source (module level or inside functions)."""
    sys.path.insert(0, str(REPO))
    import gms_hub

    lazy = {name: "gms_hub" + module for name, module in gms_hub._LAZY.items()}  # `from gms_hub import GMS`
    modules = _module_names()
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:
                        edges.add(submodule)
                    elif target == "gms_hub" and alias.name in lazy:
                        edges.add(lazy[alias.name])
                    else:
                        edges.add(target)
        graph[name] = sorted(edge for edge in edges if edge in modules and edge != name)
    return graph


def _cycles(graph: dict) -> list:
    """Every strongly connected component with more than one module (Tarjan's algorithm)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_import_cycle_in_the_package_even_inside_functions():
    graph = _import_graph()
    # The graph is real: the edges this test exists for are seen (a parser that finds nothing would pass).
    assert "gms_hub.models.reference" in graph["gms_hub.models.gms"]
    assert {"gms_hub.models.gms", "gms_hub.models.reference"} <= set(graph["gms_hub.models.resolver"])
    assert "gms_hub.models.resolver" in graph["gms_hub.models.convert"]
    assert _cycles(graph) == []
    assert _cycles({**graph, "gms_hub.models.reference": graph["gms_hub.models.reference"] + ["gms_hub.models.gms"]}) == [
        ["gms_hub.models.gms", "gms_hub.models.reference"]
    ]


def test_the_library_never_imports_the_space_or_gradio():
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            for name in names:
                assert name.split(".")[0] not in ("gradio", "gradio_client", "space", "app"), (path, name)


def _private_imports_across_subpackages() -> list:
    """(module, imported module, name) for every `from X import _name` where X is in another subpackage."""
    modules = _module_names()
    found = []
    for name, path in modules.items():
        own = name.split(".")[:2]  # ["gms_hub", "<subpackage or module>"]
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("gms_hub.") or target.split(".")[:2] == own:
                continue
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append((name, target, alias.name))
    return found


def test_no_module_imports_a_private_name_of_another_subpackage():
    assert _private_imports_across_subpackages() == []


def test_the_private_name_check_sees_an_offending_import(tmp_path, monkeypatch):
    """The check above is real: a module importing `_private` from a sibling subpackage is reported."""
    package = tmp_path / "gms_hub"
    (package / "io").mkdir(parents=True)
    (package / "models").mkdir()
    for folder in (package, package / "io", package / "models"):
        (folder / "__init__.py").write_text("")
    (package / "models" / "gms.py").write_text("def _helper():\n    pass\n")
    (package / "io" / "reading.py").write_text("from ..models.gms import _helper\nfrom ..models import gms\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", package)
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _private_imports_across_subpackages() == [("gms_hub.io.reading", "gms_hub.models.gms", "_helper")]


def test_the_top_level_holds_the_public_api_and_the_cli_entries_only():
    """The folder names are the table of contents: modules sit in a subpackage by job, except thin CLI entries."""
    top = sorted(path.stem for path in PACKAGE.glob("*.py"))
    assert top == ["__init__", "convert", "export", "predict"]
    for stem in ("convert", "export", "predict"):
        source = (PACKAGE / f"{stem}.py").read_text()
        assert len(source.splitlines()) <= 10 and 'if __name__ == "__main__":' in source, stem
    subpackages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert subpackages == ["data", "evaluation", "inference", "io", "models", "training"]
