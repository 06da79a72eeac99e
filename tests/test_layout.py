"""The package's shape: imports point one way (no import circles), read from the source."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "import_graph.py"


def load_script():
    spec = importlib.util.spec_from_file_location("import_graph", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_there_are_no_import_circles():
    graph = load_script()
    assert graph.circles(graph.graph_of_package()) == []


def test_the_circle_finder_finds_a_circle():
    graph = load_script()
    assert graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_the_lower_half_never_imports_the_model_side():
    """data/, scenarios/, metrics.py, plots.py and report.py import no layers, methods or runners."""
    graph = load_script().graph_of_package()
    lower = ("data", "scenarios", "metrics", "plots", "report")
    model = ("layers", "backbones", "methods", "runners", "inference", "train")
    for module, targets in graph.items():
        if module.split(".")[1:2] and module.split(".")[1] in lower:
            bad = [t for t in targets if t.split(".")[1:2] and t.split(".")[1] in model]
            assert not bad, f"{module} imports {bad}"
