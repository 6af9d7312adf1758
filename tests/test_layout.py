"""The package's layout: imports only downward between packages, no import loop at any depth (module-level and
function-local imports alike), torch-free packages free of torch, and no module past a screenful of screens."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "actionclip"
# Bottom to top; packages on the same level are side by side and import nothing of each other.
LAYERS = {
    "prompts": 0,
    "losses": 0,
    "host": 1,
    "video": 2,
    "weights": 2,
    "data": 3,
    "models": 3,
    "onnx_runtime": 3,
    "checkpoints": 4,
    "export": 5,
    "inference": 6,
    "engine": 7,
    "serve": 8,
    "benchmark": 8,
    "demo": 8,
    "cli": 9,
}
# Run where torch is not installed (the ONNX runtime and what it reads videos and files with); prompts.py imports
# torch only inside the functions that tokenize, which tests/test_onnx_runtime.py checks by running without torch.
TORCH_FREE = ("video", "onnx_runtime", "host/files.py", "host/records.py")
TORCH_FREE_IMPORTS = (*TORCH_FREE, "prompts.py")
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py") or p.parent != PACKAGE)


def _name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(["actionclip", *parts[:-1]] + ([] if parts[-1] == "__init__" else [parts[-1]]))


NAMES = {_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path) -> set[str]:
    """Every ``actionclip`` module that ``path`` imports, at any depth of its code, resolved to module names (an
    imported name that is a module counts as that module, one that is not as its package)."""
    own = _name(path)
    package = own if path.name == "__init__.py" else own.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            if base.split(".")[0] != "actionclip":
                continue
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in NAMES else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "actionclip")
    return found - {own}


def _layer(module: str) -> str:
    return module.split(".")[1] if module.count(".") else "actionclip"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_or_beside_it(path):
    own = _layer(_name(path))
    for target in _imports(path):
        layer = _layer(target)
        if layer == "actionclip":  # the public API imports every layer
            assert LAYERS[own] >= LAYERS["serve"], f"{path.relative_to(PACKAGE)} imports the package root"
        elif layer != own:
            assert LAYERS[layer] < LAYERS[own], f"{path.relative_to(PACKAGE)} imports {target}"


def test_no_import_loop_at_any_depth():
    graph = {name: _imports(path) for name, path in NAMES.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                loop = path[path.index(target) :] + [target] if target in path else [node, target]
                pytest.fail("import loop: " + " -> ".join(loop))
            if target not in state:
                visit(target, path + [target])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


@pytest.mark.parametrize("part", TORCH_FREE)
def test_torch_free_parts_import_no_torch(part):
    paths = sorted((PACKAGE / part).rglob("*.py")) if (PACKAGE / part).is_dir() else [PACKAGE / part]
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module or ""]
                if isinstance(node, ast.ImportFrom)
                else [alias.name for alias in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                assert name.split(".")[0] not in ("torch", "torchvision", "open_clip"), f"{path.relative_to(PACKAGE)} imports {name}"
                assert not name.startswith("actionclip.") or any(
                    name.removeprefix("actionclip.").replace(".", "/").startswith(free.removesuffix(".py")) for free in TORCH_FREE_IMPORTS
                ), f"{path.relative_to(PACKAGE)} imports {name}, which is not torch-free"


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages <= set(LAYERS), f"packages without a layer in LAYERS: {packages - set(LAYERS)}"


def test_the_root_keeps_only_the_api_prompts_and_losses():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "losses.py", "prompts.py"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400
