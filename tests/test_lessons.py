"""The lesson frame (starunet.lessons) and the shape every lesson notebook keeps:
a frame at the top, 3-5 exercises with hidden, asserting solutions, a summary and a
link onwards at the end, figures with alt text."""
from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

from starunet import lessons

LESSONS = sorted(p for p in lessons.NOTEBOOKS_DIR.glob("0[1-6]_*.ipynb"))
APPENDIX = sorted(lessons.NOTEBOOKS_DIR.glob("07_*.ipynb"))
EXERCISE = re.compile(r"^### Exercise (\d+)\b", re.M)
HEADING = re.compile(r"^#{1,3} ", re.M)


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _exercises(cells: list[dict]) -> list[tuple[int, list[dict]]]:
    """(number, cells up to the next heading) for every ``### Exercise N``."""
    found = []
    for i, cell in enumerate(cells):
        match = EXERCISE.search(_source(cell)) if cell["cell_type"] == "markdown" else None
        if match:
            body = []
            for nxt in cells[i + 1:]:
                if nxt["cell_type"] == "markdown" and HEADING.search(_source(nxt)):
                    break
                body.append(nxt)
            found.append((int(match.group(1)), body))
    return found


def test_the_lessons_and_the_appendix_are_there():
    assert [p.name[:2] for p in LESSONS] == ["01", "02", "03", "04", "05", "06"]
    assert len(APPENDIX) == 1, "the appendix on reproducibility engineering is notebooks/07_*.ipynb"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_a_lesson_opens_with_its_frame(path):
    cells = _cells(path)
    intro = _source(cells[0])
    assert cells[0]["cell_type"] == "markdown" and "What you will learn" in intro, path.name
    points = re.findall(r"^\s*[-*] ", intro.split("What you will learn", 1)[1].split("\n\n#", 1)[0], re.M)
    assert 3 <= len(points) <= 5, f"{path.name}: {len(points)} learning points"
    calls = [i for i, c in enumerate(cells[:4]) if c["cell_type"] == "code"
             and f'lesson_header("{path.name[:2]}")' in _source(c)]
    assert calls, f"{path.name}: no su.lesson_header({path.name[:2]!r}) in its first cells"


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name[:2])
def test_a_lesson_has_exercises_with_hidden_asserting_solutions(path):
    exercises = _exercises(_cells(path))
    assert 3 <= len(exercises) <= 5, f"{path.name}: {len(exercises)} exercises"
    assert [n for n, _ in exercises] == list(range(1, len(exercises) + 1)), path.name
    for number, body in exercises:
        solutions = [c for c in body if c["cell_type"] == "code" and lessons.SOLUTION_TAG in _tags(c)]
        assert solutions, f"{path.name}: exercise {number} has no cell tagged 'solution'"
        for cell in solutions:
            assert "hide-cell" in _tags(cell), f"{path.name}: exercise {number}'s solution is not folded on the site"
            assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, \
                f"{path.name}: exercise {number}'s solution is not collapsed in JupyterLab"
        assert any(re.search(r"^\s*assert\b", _source(c), re.M) for c in solutions), \
            f"{path.name}: exercise {number}'s solution checks nothing"


@pytest.mark.parametrize("path", LESSONS + APPENDIX, ids=lambda p: p.name[:2])
def test_a_lesson_ends_with_a_summary_and_where_to_go_next(path):
    tail = "\n".join(_source(c) for c in _cells(path)[-4:] if c["cell_type"] == "markdown")
    assert "## Summary" in tail, path.name
    assert re.search(r"\]\((0\d_[a-z_]+\.ipynb|\.\./README\.md)[)#]", tail), f"{path.name}: no link onwards"


@pytest.mark.parametrize("path", [p for p in LESSONS if p.name[:2] in {"01", "04", "05", "06"}],
                         ids=lambda p: p.name[:2])
def test_engineering_passages_link_to_the_appendix(path):
    assert APPENDIX and APPENDIX[0].name in path.read_text(), f"{path.name} does not link to the appendix"


@pytest.mark.parametrize("path", LESSONS + APPENDIX, ids=lambda p: p.name[:2])
def test_every_figure_is_a_png_with_alt_text(path):
    for i, cell in enumerate(_cells(path)):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            assert "image/jpeg" not in data, f"{path.name} cell {i}: JPEG output (PNG for every figure)"
            if "image/png" in data:
                alt = output.get("metadata", {}).get("image/png", {}).get("alt", "")
                assert alt.strip(), f"{path.name} cell {i}: figure without alt text"


# -- the frame's functions ------------------------------------------------------------


def _notebook(tmp_path: Path, name: str, markdown: str, code: str, solution: str = "") -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(markdown), nbformat.v4.new_code_cell(code)]
    if solution:
        nb.cells.append(nbformat.v4.new_code_cell(solution, metadata={"tags": ["solution"]}))
    path = tmp_path / name
    nbformat.write(nb, path)
    return path


def test_reading_time_counts_words_and_code_but_not_solutions(tmp_path):
    words = " ".join(["word"] * (2 * lessons.WORDS_PER_MINUTE))
    code = "\n".join(["x = 1"] * lessons.CODE_LINES_PER_MINUTE)
    path = _notebook(tmp_path, "01_a.ipynb", words, code, solution="\n".join(["y = 2"] * 1000))
    assert lessons.reading_minutes(path) == 3


def test_notebook_path_names_the_valid_lessons(tmp_path):
    _notebook(tmp_path, "01_a.ipynb", "x", "1")
    assert lessons.notebook_path("01", tmp_path).name == "01_a.ipynb"
    with pytest.raises(ValueError, match="valid: 01"):
        lessons.notebook_path("09", tmp_path)


def test_timings_merge_per_notebook_and_say_what_trained(tmp_path):
    csv = tmp_path / "timings.csv"
    row = {"notebook": "04_t.ipynb", "seconds": 1035, "runs_trained": 4, "cpu": "AMD EPYC", "cores": 2,
           "measured": "2026-12-06"}
    lessons.record_timings([row, dict(row, notebook="05_c.ipynb", seconds=59, runs_trained=0)], csv)
    lessons.record_timings([dict(row, seconds=20, runs_trained=0)], csv)
    assert lessons.compute_time("05", csv) == "59 s on a 2-core AMD EPYC (2026-12-06)"
    assert lessons.compute_time("04", csv) == "20 s on a 2-core AMD EPYC (2026-12-06)"
    lessons.record_timings([row], csv)
    assert lessons.compute_time("04", csv).startswith("17 min on a 2-core AMD EPYC (2026-12-06), training 4 runs")
    assert "not measured" in lessons.compute_time("01", csv)


def test_the_header_shows_the_registered_result(tmp_path, monkeypatch):
    monkeypatch.setattr(lessons, "_RESULTS", {})
    lessons.lesson_result("01")(lambda: ["forty-two vessels"])
    _notebook(tmp_path, "01_a.ipynb", "some words", "1")
    text = lessons.lesson_header("01", tmp_path, tmp_path / "none.csv").data
    assert "- forty-two vessels" in text and "about 1 min" in text and "not measured" in text
    with pytest.raises(ValueError, match="registered: 01"):
        lessons.lesson_header("02", tmp_path)


def test_every_lesson_has_a_result_that_computes():
    for path in LESSONS:
        text = lessons.lesson_header(path.name[:2]).data
        assert 3 <= text.count("\n- ") <= 5, f"{path.name}: {text}"


def test_the_comparison_result_follows_the_committed_seeds(tmp_path, monkeypatch):
    """Lesson 05's header reads the verdicts.csv files: one seed says "one seed,
    preliminary" and shows no interval; several seeds show the interval and the verdict."""
    from starunet import verdicts
    from starunet.stats import MAIN_COMPARISONS

    def folder(name: str, n_seeds: int) -> Path:
        rows = [{"comparison": comparison, "config_a": "sum/none", "config_b": "star/none", "metric": metric,
                 "statistic": statistic, "n_seeds": str(n_seeds), "n_images": "10", "estimate": "0.012",
                 "low": "" if n_seeds < 2 else "-0.020", "high": "" if n_seeds < 2 else "0.044", "margin": "0.01",
                 "verdict": "inconclusive", "adjusted_level": "0.983333" if n_seeds > 1 else "0.95"}
                for comparison in MAIN_COMPARISONS for metric in ("roc_auc", "pr_auc", "f1")
                for statistic in ("pooled", "per_image")]
        (tmp_path / name).mkdir()
        verdicts.write_verdicts(tmp_path / name, rows)
        return tmp_path / name

    monkeypatch.setattr(verdicts, "COMMITTED_FOLDERS", {"full": folder("full", 1), "fast": folder("fast_one", 1)})
    assert lessons.comparison_result()[0] == ("**In short.** No comparison has two seeds yet, so none has an interval: "
                                              "every difference below is one seed, preliminary.")
    monkeypatch.setattr(verdicts, "COMMITTED_FOLDERS", {"full": folder("full_three", 3), "fast": folder("fast", 1)})
    lines = lessons.comparison_result()
    assert 3 <= len(lines) <= 5
    first = next(line for line in lines if line.startswith("**star − sum, without ReLU**"))
    assert "`full` 3 seeds: ROC-AUC +0.012 [-0.020, +0.044] inconclusive" in first
    assert "`fast` one seed, preliminary: ROC-AUC +0.012, PR-AUC +0.012, F1 +0.012 (no interval, no verdict)" in first
    assert lines[0].startswith("**In short** (`full` and `fast`, pooled, two or more seeds). star − sum at the same "
                               "activation: 0 of 6 headline intervals decide: none detects a difference")
    assert "with ReLU: 0 of 3 decide." in lines[0] and "`full` 3 intervals" in lines[1]


def test_the_training_result_puts_one_run_alone_first_and_counts_what_results_fast_holds(tmp_path, monkeypatch):
    """Lesson 04's header: one run alone from benchmarks/cpu.csv (bf16 and fp32, the ratio
    computed), then results/fast's configurations and seeds counted from its metrics, and
    that its runs shared the machine (their times are not one run's alone)."""
    from starunet import results
    from starunet.io import write_csv_atomic

    runs = [{"fusion": f, "activation": a, "seed": s, "train_seconds": 600 + 60 * s % 7, "epochs": 8, "best_epoch": 7}
            for f in ("sum", "star", "star_bn") for a in ("none", "relu") for s in (2024, 2025)
            if not (f == "star_bn" and s == 2025)]
    write_csv_atomic(tmp_path / "metrics.csv", runs, list(runs[0]))
    (tmp_path / "provenance.json").write_text(json.dumps({
        "fanout": {"jobs": 2, "threads_per_job": 1}, "hardware": {"summary": "cpu: test"}, "precision": "bf16"}))
    monkeypatch.setattr(results, "FAST_DIR", tmp_path)
    lines = lessons.training_result()
    bench = lessons.fast_run_benchmark()
    assert 3 <= len(lines) <= 5
    if {"bf16", "fp32"} <= set(bench):
        ratio = bench["fp32"]["minutes"] / bench["bf16"]["minutes"]
        assert lines[1].startswith("One `fast` run trained alone") and f"{ratio:.2f}× as fast" in lines[1]
    held = next(line for line in lines if line.startswith("`results/fast` holds"))
    assert "holds 10 such runs" in held and "seeds 2024, 2025 (1–2 seeds per configuration)" in held
    assert "the 2×2 grid (4 of those configurations); star_bn are notebook 06's" in held
    assert "2 run(s) at a time with 1 torch thread(s) each on a shared machine" in lines[-1]
    assert "not the time of one run alone" in lines[-1]


def test_the_readme_states_the_course_time_that_timings_csv_adds_up_to():
    """README's `make course` times are computed from the lessons' recorded times (and, for a
    CPU without native bf16, the fp32/bf16 ratio of a whole fast run in benchmarks/cpu.csv)."""
    from starunet.io import read_csv

    rows = read_csv(lessons.TIMINGS_CSV)
    total = sum(int(r["seconds"]) for r in rows)
    trainer = next(r for r in rows if int(r["runs_trained"]) > 0)
    training = int(trainer["seconds"])
    readme = " ".join((lessons.PROJECT_ROOT / "README.md").read_text(encoding="utf-8").split())
    assert (f"add up to {total // 60} min {total % 60:02d} s, {training // 60} min {training % 60:02d} s of it "
            f"notebook {trainer['notebook'][:2]} training its four runs") in readme
    assert f"make course` about {round(total / 60 / 5) * 5} min after the install" in readme
    fast = {r["variant"]: float(r["value"]) for r in read_csv(lessons.PROJECT_ROOT / "benchmarks" / "cpu.csv")
            if r["what"].startswith("fast preset run")}
    without_bf16 = training * fast["fp32"] / fast["bf16"] + total - training
    assert f"so expect about {round(without_bf16 / 60 / 5) * 5} min" in readme
