"""The package's layers: nothing imports from a layer above it, and no module grows past a screenful of screens."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "actionclip"
# Bottom to top. models and data are side by side: neither imports the other.
LAYERS = {"prompts": 0, "losses": 0, "models": 1, "data": 1, "engine": 2, "apps": 3}
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py") or p.parent != PACKAGE)


def _layer(parts: list[str]) -> str:
    return parts[0].removesuffix(".py")


def _imported(path: Path) -> set[str]:
    """The first component below ``actionclip`` of every module ``path`` imports (absolute or relative)."""
    own = list(path.relative_to(PACKAGE).parts)
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = own[: len(own) - node.level]
            target = base + (node.module.split(".") if node.module else [])
            found.add(target[0] if target else "actionclip")
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "actionclip":
            names = node.module.split(".")[1:] or [alias.name for alias in node.names]
            found.update(names[:1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names if alias.name.startswith("actionclip."))
            if any(alias.name == "actionclip" for alias in node.names):
                found.add("actionclip")
    return found


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_imports_from_a_layer_above_or_beside_it(path):
    layer = _layer(list(path.relative_to(PACKAGE).parts))
    for target in _imported(path):
        if target == "actionclip":  # the public API imports every layer
            assert layer == "apps", f"{path.name} imports the package root"
            continue
        assert LAYERS[target] < LAYERS[layer] or target == layer, f"{path.relative_to(PACKAGE)} imports actionclip.{target}"


def test_the_root_keeps_only_the_api_prompts_and_losses():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == ["__init__.py", "__main__.py", "losses.py", "prompts.py"]


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_modules_stay_under_400_lines(path):
    assert len(path.read_text().splitlines()) <= 400
