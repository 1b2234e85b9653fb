"""The house rules of the package, read from the source: imports flow one way.

Every ``import`` and ``from ... import`` statement of ``nbjax/`` is collected,
those inside functions included (a lazy import is still an import), and so are
``importlib.import_module("...")`` calls with a literal name.  From them:

* the library (everything but ``nbjax.commands``, ``nbjax.cli`` and
  ``nbjax.__main__``) never imports the command layer;
* no two modules import each other, directly or through others (no circle);
* the graph the test reads is not empty (so the rules cannot pass vacuously).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "nbjax"
COMMAND_LAYER = ("nbjax.commands", "nbjax.cli", "nbjax.__main__")


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imported(node, here: str, is_package: bool, modules) -> list:
    """The nbjax modules one import statement (or import_module call) brings in."""
    names = []
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = here.split(".") if is_package else here.split(".")[:-1]
            base = base[: len(base) - (node.level - 1)]
            module = ".".join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ""
        # "from nbjax.io import hkl" imports the module nbjax.io.hkl when there is one
        names = [f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module for a in node.names]
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
          and node.func.attr == "import_module" and node.args and isinstance(node.args[0], ast.Constant)
          and isinstance(node.args[0].value, str)):
        names = [node.args[0].value]
    return [n for n in names if n == "nbjax" or n.startswith("nbjax.")]


def import_graph() -> dict:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        targets = set()
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", modules):
                # an import of a module that is not a file here is an import of its package
                while target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]
                if target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def _in(name: str, layer) -> bool:
    return any(name == top or name.startswith(top + ".") for top in layer)


def test_the_graph_is_read():
    graph = import_graph()
    assert "nbjax.renderer.engine" in graph["nbjax.experiment"]
    assert "nbjax.commands.render" in graph["nbjax.commands.main"]  # a lazy import counts
    assert "nbjax.io.matrix" in graph["nbjax.experiment"]  # "from nbjax.io import matrix as matrix_io"


def test_the_library_never_imports_the_command_layer():
    graph = import_graph()
    offenders = sorted(f"{module} -> {target}" for module, targets in graph.items() if not _in(module, COMMAND_LAYER)
                       for target in targets if _in(target, COMMAND_LAYER))
    assert offenders == []


def _cycles(graph) -> list:
    """Strongly connected components with more than one module (Tarjan), package __init__s left out.

    A package's ``__init__`` only re-exports (lazily) what its modules define;
    "from nbjax.io import X" touches it without making a dependency circle.
    """
    packages = {name for name in graph if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").exists()}
    nodes = [n for n in graph if n not in packages]
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w in packages:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def test_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    assert _cycles(import_graph()) == []


def test_submodules_are_attributes_of_the_package():
    """``import nbjax; nbjax.renderer.sharding.render_sharded`` works without importing the module first (as the docs use it)."""
    import subprocess
    import sys

    code = ("import sys, nbjax\n"
            "assert 'nbjax.renderer.sharding' not in sys.modules\n"
            "print(nbjax.renderer.sharding.render_sharded.__name__, nbjax.sharding.render_batch.__name__,"
            " nbjax.groups.GROUPS[0], nbjax.batch.render_series.__name__)\n"
            "names = dir(nbjax)\n"
            "print(len(names) == len(set(names)), 'sharding' in names, 'simulate' in names)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["render_sharded", "render_batch", "cell", "render_series", "True", "True", "True"]


RENDERER = "nbjax.renderer"


def _private_uses_of_the_renderer(path: pathlib.Path, modules) -> list:
    """``module._name`` attribute reads and ``from module import _name`` of a renderer module in one file."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = {}, []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(RENDERER):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                elif alias.name.startswith("_"):
                    found.append(f"from {node.module} import {alias.name}")
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith(RENDERER) and alias.asname:
                    aliases[alias.asname] = alias.name
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            found.append(f"{aliases[node.value.id]}.{node.attr}")
    return found


def test_private_renderer_names_stay_inside_the_renderer():
    modules = _modules()
    offenders = {name: uses for name, path in modules.items() if not _in(name, (RENDERER,))
                 for uses in [_private_uses_of_the_renderer(path, modules)] if uses}
    assert offenders == {}
    # the check sees a private use where there is one
    inside = _private_uses_of_the_renderer(modules["nbjax.renderer.adjoint"], modules)
    assert any(use.startswith("nbjax.renderer.engine._") for use in inside)


def test_render_config_refuses_what_the_renderer_cannot_mean():
    """RenderConfig validates its modes and sizes when it is made, not deep inside a trace."""
    import numpy as np

    from nbjax.renderer.engine import RenderConfig

    assert RenderConfig(8, 8, oversample=np.int64(2)).oversample == 2   # numpy integers are whole numbers
    for kwargs, named in [({"shape": "cube"}, "shape"), ({"accumulation": "C"}, "accumulation"),
                          ({"phi_carryover": "c"}, "phi_carryover"), ({"interpolation_fallback": "x"},
                                                                      "interpolation_fallback"),
                          ({"oversample": 0}, "oversample"), ({"block_rows": 2.5}, "block_rows"),
                          ({"thicksteps": True}, "thicksteps")]:
        with pytest.raises(ValueError, match=f"RenderConfig.{named}:"):
            RenderConfig(8, 8, **kwargs)


def test_render_config_modes_are_enums_equal_to_their_spelling():
    """A mode given by its command-line spelling is stored as its enum member: one configuration, one compile."""
    from nbjax.renderer import modes
    from nbjax.renderer.engine import RenderConfig

    spelled = RenderConfig(8, 8, shape="round", accumulation="c-parity", phi_carryover="spec",
                           interpolation_fallback="point")
    members = RenderConfig(8, 8, shape=modes.Shape.ROUND, accumulation=modes.Mode.C_PARITY,
                           phi_carryover=modes.Mode.SPEC, interpolation_fallback=modes.InterpolationFallback.AT_POINT)
    assert spelled == members and hash(spelled) == hash(members)
    assert spelled.shape is modes.Shape.ROUND and spelled.accumulation is modes.Mode.C_PARITY
    assert spelled.interpolation_fallback is modes.InterpolationFallback.AT_POINT
    assert not spelled.image_wide_fallback
    assert RenderConfig(8, 8).interpolation_fallback is modes.InterpolationFallback.IMAGE_WIDE
    # the command layer's choices are the same values
    assert [str(m) for m in modes.SHAPES] == ["square", "round", "gauss", "tophat"]
    assert [str(m) for m in modes.ACCUMULATIONS] == ["spec", "c-parity"]
