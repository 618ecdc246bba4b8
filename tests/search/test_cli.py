"""The CLI as a user runs it: a subprocess, exit codes, one line per problem, no traceback."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "search", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_validate_accepts_the_quickstart(tmp_path):
    result = _cli("validate", str(ROOT / "examples" / "quickstart.yaml"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is a valid sweep spec" in result.stdout


def test_bad_spec_exits_2_with_one_line_per_problem_and_starts_nothing(tmp_path):
    spec = tmp_path / "bad.yaml"
    spec.write_text(
        "name: bad\nstorage: out\nbogus: 1\n"
        "data: {kind: file, path: missing.parquet}\n"
        "student:\n  distill: {alpha: 1.5, temperature: 0}\n  curriculum: {kind: cosine}\n"
    )
    for command in ("validate", "run"):
        result = _cli(command, str(spec), "--set", "student.optim.steps=abc", cwd=tmp_path)
        assert result.returncode == 2
        lines = result.stderr.strip().splitlines()
        assert "Traceback" not in result.stderr
        assert sorted(line.split(":")[1].strip() for line in lines) == sorted(
            ["bogus", "data.path", "student.optim.steps", "student.distill.temperature",
             "student.distill.alpha", "student.curriculum.kind"]
        )  # fmt: skip
        assert all(line.startswith("error: ") for line in lines)
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


def test_usage_errors_exit_2(tmp_path):
    assert _cli("run", cwd=tmp_path).returncode == 2
    assert _cli("explode", "x.yaml", cwd=tmp_path).returncode == 2
    missing = _cli("validate", "nope.yaml", cwd=tmp_path)
    assert (
        missing.returncode == 2
        and missing.stderr.strip() == "error: spec: file 'nope.yaml' does not exist"
    )


def test_submit_packs_the_validated_spec_into_the_jobs_working_dir(tmp_path):
    from search.spec import load_spec
    from search.submit import job_request

    spec = load_spec(QUICKSTART, ["num_samples=3", "name=remote"])
    request = job_request(spec, root=tmp_path)
    assert request["entrypoint"] == "python -m search run .kd-submit/remote.yaml"
    assert request["runtime_env"]["working_dir"] == str(tmp_path)
    assert {".venv", ".git", "results"} <= set(request["runtime_env"]["excludes"])
    written = load_spec(tmp_path / ".kd-submit" / "remote.yaml")
    assert written == spec  # what runs on the cluster is exactly what was validated here


def test_submit_without_the_jobs_sdk_or_server_exits_2_with_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "search", "submit", str(QUICKSTART), "--address",
         "http://127.0.0.1:1"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: ") and ("Ray Jobs SDK" in line or "address:" in line)
