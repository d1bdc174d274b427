"""The package's shape: no import cycles, no upward imports, and backbone kinds found through the registry."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import longedit
from longedit.backbones import registry
from longedit.backbones.kind import BackboneKind, UNetAdapter

PACKAGE = Path(longedit.__file__).resolve().parent
ROOT = PACKAGE.parent
#: Only the command layer may import these (they sit on top of everything else).
TOP_LAYERS = ("longedit.bench", "longedit.commands")
TOP_IMPORTERS = ("longedit.cli", "longedit.commands", "longedit.bench")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(name: str, path: Path) -> set[str]:
    """longedit modules `name` imports anywhere in its file (lazy imports in functions count), with
    the packages whose `__init__` Python runs first (not its own packages: they are initialised before
    it); the registry's kind modules count as its imports."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in MODULES:
                target = target.rpartition(".")[0]
            while target:  # the module and every package above it, except the packages holding `name`
                if target != name and target in MODULES and not name.startswith(target + "."):
                    found.add(target)
                target = target.rpartition(".")[0]
    if name == "longedit.backbones.registry":
        found |= set(registry.KIND_MODULES.values())
    found.discard("longedit")  # the top package imports nothing
    return found


GRAPH = {name: imported_modules(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_lazy_imports_and_packages():
    assert "longedit.random_models" in GRAPH["longedit.models"]  # imported inside a function
    assert "longedit.backbones" in GRAPH["longedit.random_models"]  # the package of backbones.registry
    assert "longedit.backbones.tuneavideo" in GRAPH["longedit.backbones.registry"]


def test_no_import_cycle_in_the_package():
    assert cycles(GRAPH) == []


def test_only_the_command_layer_imports_bench_and_commands():
    upward = sorted(
        f"{name} -> {target}"
        for name, targets in GRAPH.items()
        if not name.startswith(TOP_IMPORTERS)
        for target in targets
        if target.startswith(TOP_LAYERS)
    )
    assert upward == []


def test_every_module_imports_in_a_fresh_interpreter():
    """Imports each module in name order in one new process (a partial-import cycle would fail here)."""
    names = sorted(n for n in MODULES if not n.endswith("__main__"))
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    result = subprocess.run([sys.executable, "-c", code, *names], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


# ------------------------------------------------------------------------------------ registry
def test_config_and_adapters_come_from_the_registry():
    from longedit.backbones.adapters import adapter_for
    from longedit.config import EditJob

    assert registry.BACKBONE_CHOICES == ("auto", "sd", "t2v", "tuneavideo")
    job = {"input": "a.mp4", "output": "b.mp4", "source_prompt": "a car", "prompt": "a robot"}
    for choice in registry.BACKBONE_CHOICES:
        assert EditJob(**job, backbone=choice).backbone == choice
    with pytest.raises(ValueError, match="'auto', 'sd', 't2v' or 'tuneavideo'"):
        EditJob(**job, backbone="unet3d")
    for kind in registry.backbone_kinds():
        assert adapter_for(kind.name) is kind.adapter and kind.adapter.kind == kind.name


def test_unknown_kind_is_a_user_error_naming_the_choices():
    from longedit.errors import UserError

    with pytest.raises(UserError, match="unknown backbone kind 'svd' .use one of sd, t2v, tuneavideo"):
        registry.backbone_kind("svd")


def test_temporal_pattern_is_the_union_of_the_kinds():
    from longedit.attention import is_temporal_layer

    assert is_temporal_layer("transformer_in.transformer_blocks.0.attn1")
    assert is_temporal_layer("down_blocks.1.temp_attentions.0.transformer_blocks.0.attn2")
    assert is_temporal_layer("tuneavideo_temporal.layers.x.attn_temp")
    assert not is_temporal_layer("down_blocks.1.attentions.0.transformer_blocks.0.attn2")
    assert not is_temporal_layer("down_blocks.1.my_transformer_in.attn2")


def test_a_new_kind_is_one_module_and_one_registry_line(monkeypatch, tmp_path):
    """A kind module on the path plus a KIND_MODULES entry: detection, adapter and loader find it."""
    from longedit.backbones.adapters import adapter_for
    from longedit.backbones.detect import detect_backbone_kind, resolve_backbone_kind

    (tmp_path / "fake_kind.py").write_text(
        "from longedit.backbones.kind import BackboneKind, UNetAdapter\n"
        "BACKBONE = BackboneKind(name='fake', title='Fake video', unet_class='UNetFakeModel',\n"
        "    adapter=UNetAdapter('fake', uses_anchor=False), load_unet=lambda source, local: ('loaded', source),\n"
        "    random_unet=lambda size, seed, sd_unet: None, save_folder=lambda c, f, s: f, temporal_layers=('fake_temporal',))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.KIND_MODULES, "fake", "fake_kind")
    kind = registry.backbone_kind("fake")
    assert isinstance(kind, BackboneKind) and isinstance(kind.adapter, UNetAdapter)
    assert detect_backbone_kind({"_class_name": "UNetFakeModel"}) == "fake"
    assert adapter_for("fake").uses_anchor is False
    assert "UNetFakeModel (Fake video)" in registry.supported_unets()
    assert registry.temporal_layer_pattern().search("mid_block.fake_temporal.attn1")
    (tmp_path / "model" / "unet").mkdir(parents=True)
    (tmp_path / "model" / "unet" / "config.json").write_text('{"_class_name": "UNetFakeModel"}')
    assert resolve_backbone_kind("m", str(tmp_path / "model")) == "fake"
    assert kind.load_unet("src", False) == ("loaded", "src")


# --------------------------------------------------------------------------- public API and stages
def test_the_public_names_are_the_documented_api():
    """`longedit.__all__` is what README's "From Python" section documents, and the top package defines
    nothing public besides it (the pipeline is imported on first use, so `import longedit` stays light)."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text())
    defined = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    defined |= {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
    assert {name for name in defined if not name.startswith("_")} == set()
    section = (ROOT / "README.md").read_text().split("## From Python", 1)[1].split("\n## ", 1)[0]
    public = [name for name in longedit.__all__ if name != "__version__"]
    assert public and all(f"`{name}`" in section or f"import {name}" in section for name in public), public
    for name in public:
        assert getattr(longedit, name).__doc__, name
    code = "import sys, longedit; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0  # import longedit loads no torch


def test_the_commands_use_no_private_helper_of_a_stage():
    """`longedit.commands` uses the engine's public names (`from longedit.engine import run_edit`), never a
    stage module's `_helper`: the stages can change inside without the commands noticing."""
    stages = {name for name in MODULES if name.startswith("longedit.engine.")}
    assert "longedit.engine.runner" in stages
    reached = []
    for name, path in MODULES.items():
        if not name.startswith("longedit.commands"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("longedit.engine"):
                reached += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = ast.unparse(node.value)
                if base.startswith(("engine", "longedit.engine")) or base.split(".")[-1] in {s.rpartition(".")[2] for s in stages}:
                    reached.append(f"{name}: {base}.{node.attr}")
    assert reached == []


def test_no_module_is_over_400_lines_in_the_engine_and_the_api():
    long = {name: n for name, path in MODULES.items()
            if name.startswith(("longedit.engine", "longedit.pipeline", "longedit.edit_job"))
            and (n := len(path.read_text().splitlines())) > 400}
    assert long == {}
