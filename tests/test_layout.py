"""The package's imports run one way (model <- training <- evaluation; serving beside them) and
form no circle, no library module imports the `configs/` folder, every command answers --help,
and the shipped models carry their cards and no build machine's paths."""

import ast
import os
import subprocess
import sys

import pytest

from fbp_jax.tools import cli
from tests.conftest import REPO

# Layer of each package; a module may import its own layer and lower ones only.
LAYERS = {
    "fbp_jax.model": 0,
    "fbp_jax.metrics": 0,
    "fbp_jax.io": 0,
    "fbp_jax.extras": 0,
    "fbp_jax.parallel": 0,
    "fbp_jax.base_config": 0,
    "fbp_jax.workdir": 1,
    "fbp_jax.input_pipeline": 1,
    "fbp_jax.training": 2,
    "fbp_jax.serving": 2,
    "fbp_jax.evaluation": 3,
    "fbp_jax.tools": 4,
}
# Pairs that must never meet, whatever the layers say.
FORBIDDEN = {
    "fbp_jax.serving": ("fbp_jax.training", "fbp_jax.evaluation", "fbp_jax.input_pipeline"),
    "fbp_jax.training": ("fbp_jax.evaluation", "fbp_jax.serving"),
    "data_prep.features": ("data_prep.builders", "tensorflow_datasets"),
}


def _modules():
    for top in ("fbp_jax", "data_prep"):
        for root, _, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(root, f)
                    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                    yield rel.removesuffix(".__init__"), path


def _imports(path):
    """Every module a file imports, at any depth (lazy imports inside functions too)."""
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module
            yield from (f"{node.module}.{a.name}" for a in node.names)


def _layer(module):
    best = None
    for prefix, layer in LAYERS.items():
        if module == prefix or module.startswith(prefix + "."):
            best = layer
    return best


def test_imports_point_one_way():
    problems = []
    for module, path in _modules():
        mine = _layer(module)
        for imported in set(_imports(path)):
            if imported == "configs" or imported.startswith("configs."):
                problems.append(f"{module} imports {imported}: the library never reads configs/")
            theirs = _layer(imported)
            if mine is not None and theirs is not None and theirs > mine:
                problems.append(f"{module} (layer {mine}) imports {imported} (layer {theirs})")
            for prefix, banned in FORBIDDEN.items():
                if module.startswith(prefix) and any(
                    imported == b or imported.startswith(b + ".") for b in banned
                ):
                    problems.append(f"{module} imports {imported}")
    assert not problems, "\n".join(sorted(set(problems)))


# Import circles left on purpose: the `cv` command's `--select` hands over to the selection
# module, which reads cross-validation workdirs with the cross-validation library.
KNOWN_CIRCLES = ({"fbp_jax.evaluation.cross_validation", "fbp_jax.evaluation.selection"},)


def _owner(imported, modules):
    """The project module an imported name belongs to (`a.b.c.name` -> `a.b.c`), or None."""
    parts = imported.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in modules:
            return ".".join(parts[:n])
    return None


def _module_graph():
    """Module -> the project modules it imports (at any depth: lazy imports count)."""
    paths = dict(_modules())
    graph = {}
    for module, path in paths.items():
        owners = {_owner(imported, paths) for imported in _imports(path)}
        graph[module] = owners - {None, module}
    return graph


def test_no_module_imports_one_that_imports_it_back():
    """Imports form no circle (a lower module never reaches back into the command above it),
    but for the ones listed in KNOWN_CIRCLES."""
    graph = _module_graph()

    def reach(start):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    reachable = {m: reach(m) for m in graph}
    # A module that reaches itself, with every module on a way back to it.
    circles = {
        frozenset({m} | {o for o in r if m in reachable[o]}) for m, r in reachable.items() if m in r
    }
    assert sorted(map(sorted, circles - set(map(frozenset, KNOWN_CIRCLES)))) == []


def test_the_layer_table_is_complete():
    """Every fbp_jax module has a layer, so `test_imports_point_one_way` checks all of them."""
    unplaced = [m for m, _ in _modules() if m.startswith("fbp_jax.") and _layer(m) is None]
    assert unplaced == [] or set(unplaced) <= {"fbp_jax.__main__"}, unplaced


@pytest.mark.parametrize("command", sorted(cli.COMMANDS))
def test_every_command_answers_help(command):
    proc = subprocess.run(
        [sys.executable, "-m", "fbp_jax", command, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text[-2000:]
    assert cli.COMMANDS[command][1] in text or "usage" in text.lower(), text[-2000:]


def test_unknown_command_lists_the_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "fbp_jax", "nosuch"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "unknown command 'nosuch'" in proc.stderr
    assert "predict" in proc.stderr and "evaluate" in proc.stderr


def test_export_refuses_a_trained_by_count_in_one_line_before_reading_a_workdir(tmp_path):
    """Three commands for two workdirs: exit 2 with one line naming the counts, before any
    checkpoint is looked for (these workdirs do not exist), and nothing written."""
    out = tmp_path / "export"
    proc = subprocess.run(
        [sys.executable, "-m", "fbp_jax", "export", f"--workdir={tmp_path}/a,{tmp_path}/b",
         f"--output_dir={out}", "--trained_by=x", "--trained_by=y", "--trained_by=z"],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last == "error: --trained_by: give one command for all 2 workdirs or one for each, got 3"
    assert "Traceback" not in proc.stderr and not out.exists()


def test_shipped_models_carry_a_card_and_no_path_of_the_machine_that_made_them():
    """A shipped bundle says how each of its runs was trained (`export --trained_by`), not
    where its workdir lay on the machine that trained it, and every shipped model has its
    card."""
    from fbp_jax import io
    from fbp_jax.serving import bundle, shipped

    assert shipped.available()
    for name in shipped.available():
        folder = shipped.path(name)
        assert os.path.isfile(os.path.join(folder, "MODEL_CARD.md")), name
        serving = io.read_json(os.path.join(folder, bundle.SERVING_FILE))
        for run in serving.get("members", [serving]):
            assert "workdir" not in run, (name, run)
            assert run["trained_by"].startswith("fbp-jax train --config=configs/"), (name, run)
