"""The code's shape, checked: a straight processor, no probing of learners, no test infrastructure in the
installed package. (Layer contracts and import cycles: import-linter, `scripts/lint-imports.sh`, in CI.)"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("driftline", "stream", "learners", "adapters", "monitoring")  # folders of the installed package
RUNTIME = sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))
KAFKA_CLIENTS = {"kafka", "confluent_kafka"}


def _calls(path: Path, names: set[str]) -> list[tuple[int, str, ast.Call]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.lineno, node.func.id, node) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names]


def test_the_processor_is_one_straight_line_of_at_most_220_lines() -> None:
    lines = len((ROOT / "stream" / "processor.py").read_text(encoding="utf-8").splitlines())
    assert lines <= 220, f"stream/processor.py has {lines} lines"


@pytest.mark.parametrize("path", RUNTIME, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_no_learner_is_probed_for_attributes(path: Path) -> None:
    """Capabilities are declared (driftline.learners.capabilities), never discovered with getattr/hasattr or a
    structural isinstance against a protocol."""
    from driftline.learners import capabilities

    protocols = {cls.__name__ for cls in capabilities.PROTOCOLS.values()} | {"Learner"}
    bad = []
    for line, fn, call in _calls(path, {"getattr", "hasattr", "isinstance"}):
        target = ast.unparse(call.args[0]) if call.args else ""
        if fn == "isinstance":
            kinds = ast.unparse(call.args[1]) if len(call.args) > 1 else ""
            if any(name in kinds.replace("(", " ").replace(",", " ").split() for name in protocols):
                bad.append(f"{line}: {ast.unparse(call)}")
        elif "learner" in target.lower() or (path.parent.name == "learners" and path.name == "base.py"):
            bad.append(f"{line}: {ast.unparse(call)}")
    assert not bad, f"{path.relative_to(ROOT)} probes learners:\n" + "\n".join(bad)


def test_the_probe_check_can_fail(tmp_path: Path) -> None:
    probing = tmp_path / "probing.py"
    probing.write_text("def f(learner):\n    return getattr(learner, 'drain', None)\n", encoding="utf-8")
    assert [fn for _, fn, _ in _calls(probing, {"getattr"})] == ["getattr"]


def test_test_infrastructure_is_not_in_the_installed_package() -> None:
    for module in ("driftline.stream.pki", "driftline.stream.broker_security"):
        assert importlib.util.find_spec(module) is None, f"{module} is still installed"
    for pkg in PACKAGES:
        for path in (ROOT / pkg).glob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "from tests" not in text and "import tests" not in text, f"{path} imports the test tree"
            assert "openssl" not in text, f"{path} generates certificates"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_only_the_kafka_package_imports_a_kafka_client() -> None:
    outside = [p for p in RUNTIME if (ROOT / "stream" / "kafka") not in p.parents]
    offenders = {str(p.relative_to(ROOT)): sorted(_imported_roots(p) & KAFKA_CLIENTS) for p in outside}
    assert not {k: v for k, v in offenders.items() if v}
    inside = [p for p in RUNTIME if (ROOT / "stream" / "kafka") in p.parents]
    assert any("kafka" in _imported_roots(p) for p in inside)  # the check sees imports where they are
