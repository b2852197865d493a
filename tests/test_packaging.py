"""The project's own wiring: one source of truth for dependencies, and the
README's two commands are the ones CI and the Makefile actually run."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

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
    # The pip section is the package itself (with the dev extra), nothing else:
    # any dependency listed here too could drift from pyproject.toml.
    assert pip_sections[0] == ['-e ".[dev]"']
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


def test_readme_commands_are_the_makefile_targets_ci_runs():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    for target in ("course", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M), f"Makefile has no {target} target"
    assert re.search(r"^make test\b", ci, re.M), ".ci/run must call the README's test command"
