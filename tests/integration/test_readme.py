"""The README's "Use in your own Ray job" runs as written: every ``python`` block of the
section, in order, in one namespace, in a directory whose ``results/quickstart`` is a sweep
of ``examples/quickstart.yaml``, through public names only."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Use in your own Ray job"


def readme_blocks(section: str = SECTION) -> list[str]:
    text = (ROOT / "README.md").read_text()
    start = text.index(section + "\n")
    end = text.find("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start : end if end > 0 else None], re.S)


def test_the_section_has_its_flows_and_imports_public_names_only(public_only):
    blocks = readme_blocks()
    code = "\n".join(blocks)
    for name in ("search.teacher_bank", "train_student", "student_worker", "load_student",
                 "search.config_of", "search.checkpoint_of"):  # fmt: skip
        assert name in code
    public_only(code=code)


@pytest.mark.ray
@pytest.mark.slow
def test_the_sections_code_runs_as_written(example_sweep, tmp_path, monkeypatch, capsys):
    sweep = example_sweep(
        "quickstart.yaml", "quickstart", "num_samples=2", "baselines=[labels_only]",
        "student.optim.steps=100", "student.eval_every=50", "teacher.optim.steps=200",
    )  # fmt: skip
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "quickstart").symlink_to(sweep)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # Tune's default is ~/ray_results
    namespace: dict = {}
    for block in readme_blocks():
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["model"] is not None and not namespace["model"].training
    assert namespace["result"].metrics["step"] == 200
    row, rerun = namespace["row"], namespace["rerun"]
    assert rerun.metrics["val_accuracy"] == pytest.approx(row["val_accuracy"], abs=1e-9)
    assert not (tmp_path / "home").exists()  # everything under ./results, as the code says
