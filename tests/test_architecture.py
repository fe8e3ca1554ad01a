"""The package's shape: no import cycle anywhere (module level, lazy imports included), and
``import xception_trt`` plus the runner contract stay importable without TensorRT or torch.
The layering itself is enforced by import-linter ([tool.importlinter] in pyproject.toml), which
README's test command runs."""

from __future__ import annotations

import subprocess
import sys

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), as sorted lists."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:  # iterative: deep import chains must not hit recursion limits
        nonlocal counter
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if not child.startswith("xception_trt"):
                    continue
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(
                        child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.append(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        found.append(sorted(group))

    for module in sorted(graph.modules):
        if module.startswith("xception_trt") and module not in index:
            visit(module)
    return found


def test_the_package_has_no_import_cycle():
    graph = grimp.build_graph("xception_trt")
    # A package's __init__ re-exporting its submodules is not a cycle of logic: leave the
    # package -> own submodule edges out, keep everything else (lazy imports included).
    for module in list(graph.modules):
        for imported in list(graph.find_modules_directly_imported_by(module)):
            if imported.startswith(module + "."):
                graph.remove_import(importer=module, imported=imported)
    assert _cycles(graph) == []


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for a, b in [("xception_trt.a", "xception_trt.b"), ("xception_trt.b", "xception_trt.c"),
                 ("xception_trt.c", "xception_trt.a"), ("xception_trt.c", "xception_trt.d")]:
        graph.add_import(importer=a, imported=b)
    assert _cycles(graph) == [["xception_trt.a", "xception_trt.b", "xception_trt.c"]]


def test_the_contract_and_sidecar_import_without_heavy_dependencies():
    code = ("import sys; import xception_trt.contract, xception_trt.sidecar, "
            "xception_trt.runners, xception_trt.trt; "
            "heavy = [m for m in ('torch', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', 'onnx') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"
