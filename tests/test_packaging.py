"""The project's own wiring: one source of truth for dependencies, and the
README's two commands are the ones CI and the Makefile actually run."""
from __future__ import annotations

import ast
import os
import re
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dep_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].strip().lower().replace("_", "-")


def test_environment_yml_installs_the_package_instead_of_repeating_its_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    conda_deps = [d for d in env["dependencies"] if isinstance(d, str)]
    pip_sections = [d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, "environment.yml needs exactly one pip section"
    # The pip section is the package itself (with the extras make install gives), nothing
    # else: any dependency listed here too could drift from pyproject.toml.
    assert pip_sections[0] == ['-e ".[dev,cluster]"']
    # Conda only provides the interpreter and pip.
    assert sorted(_dep_name(d) for d in conda_deps) == ["pip", "python"]
    py_pin = next(d for d in conda_deps if d.startswith("python"))
    minimum = _pyproject()["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, py_pin.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))


def test_pyproject_declares_the_course_stack_and_a_dev_extra():
    project = _pyproject()["project"]
    deps = {_dep_name(d) for d in project["dependencies"]}
    for needed in ["torch", "numpy", "matplotlib", "scikit-learn", "ipywidgets", "jupyterlab"]:
        assert needed in deps, f"{needed} missing from pyproject dependencies"
    dev = {_dep_name(d) for d in project["optional-dependencies"]["dev"]}
    assert {"pytest", "nbval"} <= dev


def test_submitit_is_the_optional_cluster_extra_that_make_and_ci_install():
    """The course runs without submitit; the lab's parallel runs name the extra that
    brings it, and make install (so make test and CI) installs it, so the fan-out tests run."""
    from starunet.lab import fanout

    project = _pyproject()["project"]
    assert "submitit" not in {_dep_name(d) for d in project["dependencies"]}
    assert [_dep_name(d) for d in project["optional-dependencies"]["cluster"]] == ["submitit"]
    assert fanout.EXTRA == "pip install -e '.[cluster]'"
    assert 'pip install -e ".[dev,cluster]"' in (ROOT / "Makefile").read_text()
    assert re.search(r"^export CI=", (ROOT / ".ci" / "run").read_text(), re.M)  # lab tests run, never skip


def test_readme_commands_are_the_makefile_targets_ci_runs():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for target in ("course", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"
    assert re.search(r"^make test\b", ci, re.M), ".ci/run must call the README's test command"


def _section(readme: str, title: str) -> str:
    start = readme.index(f"## {title}\n")
    end = readme.find("\n## ", start + 1)
    return readme[start:] if end < 0 else readme[start:end]


def test_readme_command_lines_run_from_a_fresh_shell():
    """Every command line of the sections a newcomer follows runs without an
    activated venv: a make target, or the venv's own executables."""
    readme = (ROOT / "README.md").read_text()
    allowed = ("make ", ".venv/bin/", "STARUNET_SMOKE=1 .venv/bin/")
    for title in ("Two commands", "Reading and changing the course", "Developing"):
        blocks = re.findall(r"```bash\n(.*?)```", _section(readme, title), re.S)
        lines = [line for block in blocks for line in block.splitlines() if line.strip()]
        assert lines, title
        for line in lines:
            assert line.startswith(allowed), f"{title}: {line!r} needs an activated venv"
    assert "source .venv/bin/activate" in readme  # for the sections that type plain `python`


def _make_n(*args: str) -> str:
    import subprocess

    # a make that runs these tests (make test, CI's TORCH_INDEX=) passes its command-line
    # variables down, through MAKEFLAGS and the environment: drop them, so the Makefile's
    # own defaults are what is tested
    passed_down = {"MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "TORCH_INDEX", "TORCH_SPEC", "GPU"}
    env = {k: v for k, v in os.environ.items() if k not in passed_down}
    return subprocess.run(["make", "-n", "install", "VENV=/nonexistent/venv", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True).stdout


def test_cpu_only_linux_gets_the_cpu_wheel_index_and_ci_stays_offline():
    import platform

    cpu_index = "--index-url https://download.pytorch.org/whl/cpu"
    if platform.system() == "Linux":
        assert cpu_index in _make_n("GPU=0")
    assert cpu_index not in _make_n("GPU=1")  # an NVIDIA GPU: PyPI's default (CUDA) build
    assert "--index-url" not in _make_n("GPU=0", "TORCH_INDEX=")
    assert re.search(r'^make test TORCH_SPEC="torch==2\.13\.0" TORCH_INDEX=$', (ROOT / ".ci" / "run").read_text(),
                     re.M), "CI must keep installing the wheel on its disk, not reach PyTorch's index"
    steps = _make_n("GPU=0").splitlines()
    check = next(i for i, s in enumerate(steps) if "version_info" in s)
    assert check < next(i for i, s in enumerate(steps) if "-m venv" in s)  # Python checked before any install


def test_make_refuses_an_old_python_in_one_line(tmp_path):
    import subprocess
    import sys

    fake = tmp_path / "python3.9"  # this interpreter, claiming to be 3.9
    fake.write_text(f'#!/bin/sh\nexec {sys.executable} -c "import sys; sys.version_info = (3, 9, 18); '
                    f'exec(sys.argv[1])" "$2"\n')
    fake.chmod(0o755)
    proc = subprocess.run(["make", "check-python", f"PYTHON={fake}"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0
    error = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "is Python 3.9 but starunet needs Python >= 3.11" in error[0], proc.stderr
    missing = subprocess.run(["make", "check-python", f"PYTHON={tmp_path / 'nope'}"], cwd=ROOT,
                             capture_output=True, text=True)
    assert missing.returncode != 0 and "not found; install Python >= 3.11" in missing.stderr


def test_license_is_an_spdx_string_with_a_build_backend_that_reads_it():
    data = _pyproject()
    assert data["project"]["license"] == "MIT"  # a table is deprecated by setuptools (PEP 639)
    (setuptools,) = [r for r in data["build-system"]["requires"] if _dep_name(r) == "setuptools"]
    assert setuptools.replace(" ", "") == "setuptools>=77"  # the first setuptools that accepts the string


def _module_files() -> dict[str, Path]:
    """Every module of the package by its name below ``starunet``: ``grid``,
    ``lab.fanout``, and ``lab`` for ``starunet/lab/__init__.py``."""
    files = {}
    for path in sorted((ROOT / "starunet").rglob("*.py")):
        parts = path.relative_to(ROOT / "starunet").with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)] = path
    return files


def _imported(nodes, modules) -> set[str]:
    """The package's modules that the import statements among ``nodes`` name
    (``from starunet.lab.fanout import FanOut`` and ``from starunet.lab import fanout``
    both name ``lab.fanout``)."""
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "starunet":
            base = node.module.removeprefix("starunet").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}" if base else alias.name
                found.add(sub if sub in modules or not base else base)
        elif isinstance(node, ast.Import):
            found.update(a.name.removeprefix("starunet.") for a in node.names if a.name.startswith("starunet."))
    return found


def test_module_level_imports_of_the_package_form_no_circle():
    """The package's modules import each other at module level only downwards: walking
    those imports (not the lazy ones inside functions) finds no cycle."""
    files = _module_files()
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        graph[name] = _imported(ast.parse(path.read_text(encoding="utf-8")).body, files) - {name}  # module level only
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " -> ".join(path + [node, nxt]))
            if nxt in graph and not state.get(nxt):
                visit(nxt, path + [node])
        state[node] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [])
    assert {"device", "training", "runs", "evaluate", "grid", "report"} <= set(graph) and "runs" in graph["training"]
    assert "lab.session_plan" in graph["lab.gpu_session"]


# The top of the tree: the command line maps commands to modules by name, lab ones included.
ENTRY_POINTS = {"cli", "__main__"}


def test_no_module_of_the_course_reaches_the_lab():
    """The course package is what a student reads; the lab (``starunet.lab``) imports
    it, never the other way round: no course module imports the lab or the command
    line, at module level or inside a function, directly or through another module,
    nor names a lab module to ``importlib``."""
    files = _module_files()
    graph = {name: _imported(ast.walk(ast.parse(path.read_text(encoding="utf-8"))), files) - {name}
             for name, path in files.items()}
    lab = {name for name in files if name == "lab" or name.startswith("lab.")}
    course = sorted(set(files) - lab - ENTRY_POINTS)
    assert {"grid", "runners", "training", "widgets", "course"} <= set(course) and "lab.fanout" in lab
    for start in course:
        reached, todo = {start: [start]}, [start]
        while todo:
            node = todo.pop()
            for nxt in sorted(graph.get(node, ())):
                chain = reached[node] + [nxt]
                assert nxt not in lab | ENTRY_POINTS, f"the course reaches the lab: {' -> '.join(chain)}"
                if nxt in graph and nxt not in reached:
                    reached[nxt] = chain
                    todo.append(nxt)
        for node in ast.walk(ast.parse(files[start].read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in {
                    "import_module", "__import__"}:
                named = [a.value for a in node.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]
                assert not [n for n in named if n.startswith(("starunet.lab", "starunet.cli"))], start


def test_the_public_api_is_small_and_every_module_is_one_attribute_away():
    """``su.__all__`` is the deliberate API (about thirty names, each resolving to the
    object of the module named for it); every module is ``su.<module>``, and the list
    of modules in ``__init__`` is the package's files."""
    import importlib

    import starunet as su

    names = [n for n in su.__all__ if n != "__version__"]
    assert 25 <= len(names) <= 35, len(names)
    for name in names:
        module = importlib.import_module(f"starunet.{su._EXPORTS[name]}")
        assert getattr(su, name) is getattr(module, name), name
    files = {p.stem for p in (ROOT / "starunet").glob("*.py") if not p.stem.startswith("_")}
    assert set(su._SUBMODULES) == files
    assert callable(su.train) and su.training.train is su.train  # the function, not the module
    with pytest.raises(AttributeError, match="no attribute 'make_fusion'"):
        su.make_fusion  # noqa: B018  (a module's name, reached as su.fusion.make_fusion)


def test_no_module_outgrows_one_concept():
    """A module holds one concept (docs/ARCHITECTURE.md): 500 lines at most, so a
    reader can hold it in mind. One that grows past this is split, not the limit raised."""
    sizes = {name: len(p.read_text(encoding="utf-8").splitlines()) for name, p in _module_files().items()}
    assert {name: n for name, n in sizes.items() if n > 500} == {}


def test_the_architecture_map_lists_each_modules_imports():
    """docs/ARCHITECTURE.md says, per module, which modules it imports ("Imports: ..."):
    before any parenthesis, exactly the module-level imports; the in-function ones are
    named too (in the parenthesis), so the map cannot drift."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    checked = 0
    files = _module_files()
    for name, path in files.items():
        if name in ("__init__", "__main__", "lab"):
            continue
        paragraph = re.search(r"\*\*`" + re.escape(name) + r"`\*\*(.*?)(?=\n\n)", doc, re.S)
        listed = re.search(r"Imports: (.*?)\.(?:\s|$)", paragraph.group(1), re.S) if paragraph else None
        assert listed is not None, f"docs/ARCHITECTURE.md has no Imports line for {name}"
        if "most modules" in " ".join(listed.group(1).split()):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = _imported(tree.body, files) - {name}
        lazily = _imported(list(ast.walk(tree)), files) - imported - {name}
        assert set(re.findall(r"`([\w.]+)`", listed.group(1).split("(")[0])) == imported, name
        assert lazily <= set(re.findall(r"`([\w.]+)`", listed.group(1))), (name, lazily)
        checked += 1
    assert checked >= 40


def test_no_import_reaches_down_the_map_but_the_one_it_names():
    """The map lists modules in the order of the data path and says a module imports only
    modules above it: true of every import, in functions too, but `toys` -> `stats`."""
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    order = {m: i for i, m in enumerate(dict.fromkeys(re.findall(r"\*\*`([\w.]+)`\*\* --", doc)))}
    files = _module_files()
    below = {(name, m) for name, path in files.items() if name in order
             for m in _imported(list(ast.walk(ast.parse(path.read_text(encoding="utf-8")))), files)
             if m in order and order[m] > order[name]}
    assert below == {("toys", "stats")}


def test_every_starunet_reference_in_docs_docstrings_and_notebooks_resolves():
    """``starunet.<module>.<name>`` written anywhere (docstrings, README, docs, notebook
    text) names something that exists: moving code cannot leave stale pointers behind."""
    import importlib

    import starunet

    texts = [*(ROOT / "starunet").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md"),
             *(ROOT / "notebooks").glob("*.ipynb")]
    modules = set(starunet._SUBMODULES) | set(_module_files())
    stale = set()
    for path in texts:
        for match in re.finditer(r"(?<![\w/])starunet\.((?:lab\.)?\w+)(?:\.(\w+))?", path.read_text(encoding="utf-8")):
            module, name = match.groups()
            if module not in modules:
                if not hasattr(starunet, module) and module != "plots_":  # "starunet.plots_*" in a table
                    stale.add(f"{path.name}: {match.group(0)}")
            elif name and not hasattr(importlib.import_module(f"starunet.{module}"), name):
                stale.add(f"{path.name}: {match.group(0)}")
    assert not stale, sorted(stale)
