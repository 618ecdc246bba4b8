"""The CLI as a user runs it: a subprocess, exit codes, one line per problem, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_submit_stages_the_validated_spec_and_ships_the_packages(tmp_path):
    from search.spec import load_spec
    from search.submit import PACKAGES, job_request

    spec = load_spec(QUICKSTART, ["num_samples=3", "name=remote", "storage=/shared/results"])
    request = job_request(spec, tmp_path)
    assert request["entrypoint"] == "python -m search run remote.yaml"
    env = request["runtime_env"]
    assert env["working_dir"] == str(tmp_path) and [p.name for p in tmp_path.iterdir()] == [
        "remote.yaml"
    ]  # the job uploads the spec, not the directory submit runs from
    assert [Path(m).name for m in env["py_modules"]] == list(PACKAGES)
    assert all((Path(m) / "__init__.py").is_file() for m in env["py_modules"])
    assert load_spec(tmp_path / "remote.yaml") == spec  # exactly what was validated here


def test_submit_refuses_relative_paths_with_one_line_naming_the_field(tmp_path):
    run = _cli("submit", str(QUICKSTART), "--address", "http://127.0.0.1:1", cwd=tmp_path)
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: storage: 'results' is relative")


def test_submit_names_every_relative_input_path(monkeypatch, tmp_path):
    import numpy as np

    from search.errors import SweepInputError
    from search.spec import load_spec
    from search.submit import check_paths

    monkeypatch.chdir(tmp_path)  # the relative files exist here, so the spec is valid
    np.savez("data.npz", x=np.zeros((4, 2), np.float32), y=np.zeros(4, np.int64))
    Path("teacher.pt").write_bytes(b"")
    spec = load_spec(
        QUICKSTART, ["storage=/shared", "data.kind=file", "data.path=data.npz",
                     "teacher.init_from=teacher.pt", "teacher.bank.root=banks"],
    )  # fmt: skip
    with pytest.raises(SweepInputError) as info:
        check_paths(spec)
    assert str(info.value).startswith("data.path: 'data.npz' is relative")
    assert "; teacher.init_from: 'teacher.pt' is relative" in str(info.value)
    assert "; teacher.bank.root: 'banks' is relative" in str(info.value)
    absolute = spec.data.model_copy(update={"path": str(tmp_path / "data.npz")})
    no_init = spec.teacher.model_copy(
        update={"init_from": None, "bank": spec.teacher.bank.model_copy(update={"root": None})}
    )
    check_paths(spec.model_copy(update={"data": absolute, "teacher": no_init}))  # no error
    stdlib = load_spec(ROOT / "examples" / "text_lm.yaml", ["storage=/shared"])
    check_paths(stdlib)  # {stdlib}: the cluster's own standard library
    Path("hf_model").mkdir()
    hf = spec.student.model.model_copy(update={"kind": "hf", "path": "hf_model"})
    with pytest.raises(SweepInputError, match="student.model.path: 'hf_model' is relative"):
        check_paths(
            spec.model_copy(update={"student": spec.student.model_copy(update={"model": hf})})
        )


def test_submit_without_the_jobs_sdk_or_server_exits_2_with_one_line(tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "search", "submit", str(QUICKSTART), "--address",
         "http://127.0.0.1:1", "--storage", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: ") and ("Ray Jobs SDK" in line or "address:" in line)


class FakeJobs:
    """A Jobs client answering ``submit_job`` from ``answers`` (an exception is raised); every
    job ends ``status`` with ``logs`` (the live server is covered in tests/integration)."""

    def __init__(self, answers, logs="", status="SUCCEEDED"):
        self.answers, self.logs, self.status, self.submitted = list(answers), logs, status, []

    def __call__(self, address):
        return self

    def submit_job(self, **request):
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        self.submitted.append(request)
        return answer

    def get_job_status(self, job):
        return self.status

    def get_job_info(self, job):
        from types import SimpleNamespace

        return SimpleNamespace(status=self.status, message="")

    def get_job_logs(self, job):
        return self.logs

    def delete_job(self, job):
        return True


def _check_log(missing):
    import json

    from search.submit import _CHECK_MARK

    return f"{_CHECK_MARK} {json.dumps({'python': '/opt/py/bin/python', 'missing': missing})}\n"


def test_submit_waits_for_a_starting_job_agent_and_names_a_refusal_in_one_line(
    monkeypatch, tmp_path
):
    import ray.job_submission

    from search import submit as submit_module
    from search.errors import RayAuthError
    from search.spec import load_spec

    no_agent = RuntimeError("Request failed with status code 500: No available agent to submit job")
    jobs = FakeJobs(
        [no_agent, no_agent, "raysubmit_check", "raysubmit_1",
         RuntimeError("Request failed with status code 401: Authentication required\n\nmore")],
        logs=_check_log([]),
    )  # fmt: skip
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", jobs)
    monkeypatch.setattr(submit_module.time, "sleep", lambda s: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    spec = load_spec(QUICKSTART, [f"storage={tmp_path}"])
    assert submit_module.submit(spec, "http://head:8265") == "raysubmit_1"
    check, sweep = jobs.submitted
    assert check["entrypoint"].startswith("python -c ") and "optuna" in check["entrypoint"]
    assert check["runtime_env"] == sweep["runtime_env"]  # the same packages, uploaded once
    assert sweep["entrypoint"] == "python -m search run quickstart.yaml"
    with pytest.raises(RayAuthError) as refused:
        submit_module.submit(spec, "http://head:8265")
    assert str(refused.value).startswith(
        "address: the Ray Jobs server at 'http://head:8265' requires token authentication and "
        "this machine sent no token (RAY_AUTH_MODE is not 'token'): export RAY_AUTH_MODE=token"
    )


@pytest.mark.parametrize(
    ("logs", "status", "expected"),
    [
        (_check_log(["optuna", "torch"]), "SUCCEEDED",
         "python: '/opt/py/bin/python' on the cluster's head (/opt/py/bin/python) lacks "
         "optuna, torch; install the project into the cluster's Python"),
        ("/bin/sh: 1: /opt/py/bin/python: not found\n", "FAILED",
         "python: '/opt/py/bin/python' did not run on the cluster's head (/bin/sh: 1: "
         "/opt/py/bin/python: not found); install the project into the cluster's Python"),
    ],
)  # fmt: skip
def test_submit_refuses_a_cluster_python_without_the_dependencies_before_the_sweep(
    monkeypatch, tmp_path, logs, status, expected
):
    import ray.job_submission

    from search.errors import ClusterPythonError
    from search.spec import load_spec
    from search.submit import submit

    jobs = FakeJobs(["raysubmit_check", "raysubmit_sweep"], logs=logs, status=status)
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", jobs)
    spec = load_spec(QUICKSTART, [f"storage={tmp_path}"])
    with pytest.raises(ClusterPythonError) as refused:
        submit(spec, "http://head:8265", python="/opt/py/bin/python")
    message = str(refused.value)
    assert message.startswith(expected) and "\n" not in message
    assert message.endswith("with --python /path/to/bin/python")
    assert [job["entrypoint"].split()[:2] for job in jobs.submitted] == [
        ["/opt/py/bin/python", "-c"]
    ]  # the check only: the sweep's job was never submitted


def test_ray_auth_error_says_where_ray_reads_the_token_and_how_to_get_it(monkeypatch, tmp_path):
    from search.errors import ray_auth_error

    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    how = "`ray get-auth-token` on the head node prints it"
    assert "sent no token (RAY_AUTH_MODE is not 'token')" in str(ray_auth_error("X"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "missing"))
    message = str(ray_auth_error("the Ray cluster at 'h:1'"))
    assert message.startswith(
        f"address: RAY_AUTH_MODE=token but no token in RAY_AUTH_TOKEN_PATH ({tmp_path}"
        "/missing) to send to the Ray cluster at 'h:1': "
    )
    (tmp_path / "token").write_text("abc\n")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "token"))
    assert "refused the token in RAY_AUTH_TOKEN_PATH" in str(ray_auth_error("X"))
    monkeypatch.setenv("RAY_AUTH_TOKEN", "secret")
    message = str(ray_auth_error("X"))
    assert "refused the token in RAY_AUTH_TOKEN," in message and "secret" not in message
    assert message.endswith(how) and "\n" not in message


@pytest.mark.parametrize(
    ("status", "code"), [("SUCCEEDED", 0), ("FAILED", 1), ("STOPPED", 1)]
)  # fmt: skip
def test_submit_wait_exits_by_how_the_job_ended_with_its_last_lines_on_failure(
    monkeypatch, capsys, tmp_path, status, code
):
    from search import cli
    from search import submit as submit_module

    monkeypatch.setattr(submit_module, "submit", lambda spec, address, python: "raysubmit_7")
    end = submit_module.JobEnd(status, "it ended" if code else "", ["line a", "error: boom"])
    monkeypatch.setattr(submit_module, "follow_job", lambda address, job, write: end)
    argv = ["submit", str(QUICKSTART), "--storage", str(tmp_path), "--address", "http://h:8265"]
    assert cli.main([*argv, "--wait"]) == code
    out, err = capsys.readouterr()
    assert out.splitlines()[:3] == [
        "submitted sweep 'quickstart' as job raysubmit_7; follow it with:",
        "  ray job logs --follow raysubmit_7 --address http://h:8265",
        "  ray job status raysubmit_7 --address http://h:8265",
    ]
    if code:
        assert err.splitlines() == [
            f"error: job raysubmit_7 {status}: it ended; its last log lines:",
            "  line a",
            "  error: boom",
        ]
    else:
        assert out.splitlines()[-1] == "job raysubmit_7 succeeded" and err == ""
    assert cli.main(argv) == 0  # without --wait: the job id and the commands only
    assert "succeeded" not in capsys.readouterr().out


def test_two_shot_from_a_flat_teachers_transition_exits_2_before_any_student(tmp_path):
    """A teacher that cannot learn (SGD at lr 1e-9) has no phase transition: the sweep
    refuses two_shot from checkpoint 'transition' in one line naming the teacher table, after
    the teacher phase and before any student trial."""
    import pyarrow.parquet as pq

    spec = tmp_path / "flat.yaml"
    spec.write_text(
        f"name: flat\nstorage: {tmp_path / 'out'}\nnum_samples: 1\n"
        "teacher:\n  model: {hidden: [8]}\n"
        "  optim: {kind: sgd, lr: 1.0e-9, batch_size: 32, steps: 20}\n  eval_every: 5\n"
        "student:\n  model: {hidden: [8]}\n  optim: {steps: 20}\n  eval_every: 10\n"
        "  teacher_schedule: {kind: two_shot, checkpoint: transition}\n"
        "resources: {cpus_per_trial: 1}\n"
    )
    result = _cli("run", str(spec), cwd=tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    sweep = tmp_path / "out" / "flat"
    table = sweep / "teacher" / "teacher.parquet"
    assert line.startswith(
        "error: student.teacher_schedule.checkpoint: 'transition' with two_shot needs the "
        f"teacher's phase transition, but the teacher table {table} shows none: its steepest "
        "rise in accuracy over 3 evaluations is "
    )
    assert "required (teacher.transition_min_rise 0.05)" in line
    assert line.endswith("or lower teacher.transition_min_rise (the teacher is then trained again)")
    marks = pq.read_table(table).to_pydict()  # the teacher table marks no transition
    assert marks["step"] == [5, 10, 15, 20]
    assert not any(marks["in_transition"]) and not any(marks["is_transition_checkpoint"])
    assert "no phase transition" in result.stdout
    assert not (sweep / "tune" / "students").exists() and not (sweep / "trials").exists()


def test_a_space_that_can_draw_two_shot_is_checked_against_the_teacher_too(tmp_path):
    import numpy as np

    from search.errors import SweepInputError
    from search.spec import load_spec
    from search.sweep import _check_transition
    from trainables.distill import write_bank

    logits = {split: np.zeros((4, 10), np.float32) for split in ("train", "val", "test")}
    metrics = {"transition_rise": 0.004, "transition_required_rise": 0.05}
    bank = write_bank(tmp_path / "bank", {5: logits, 10: logits}, metrics=metrics)
    base = [f"storage={tmp_path}"]
    searched = load_spec(QUICKSTART, [*base, "space.teacher_schedules=[final, two_shot]"])
    with pytest.raises(SweepInputError) as refused:
        _check_transition(searched, bank)
    assert str(refused.value).startswith("student.teacher_schedule.checkpoint: 'transition'")
    assert (
        "steepest rise in accuracy over teacher.transition_window evaluations is 0.004, below "
        "the 0.050 required; set student.teacher_schedule.checkpoint to one of the kept steps "
        "(5, 10)"
    ) in str(refused.value)
    for fine in (
        [
            *base,
            "space.teacher_schedules=[final, two_shot]",
            "student.teacher_schedule.checkpoint=5",
        ],
        [*base, "space.teacher_schedules=[final, lockstep]"],
    ):
        _check_transition(load_spec(QUICKSTART, fine), bank)  # no error


@pytest.mark.ray
def test_relative_data_paths_are_read_from_where_the_command_runs(tmp_path):
    """Trials run in directories of their own: a relative data path is made absolute
    against the directory the command runs in (it once failed inside the teacher's trial)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4))
    table = pa.table({**{f"f{i}": x[:, i] for i in range(4)}, "label": (x[:, 0] > 0).astype(int)})
    (tmp_path / "data").mkdir()
    pq.write_table(table, tmp_path / "data" / "d.parquet")
    run = subprocess.run(
        [sys.executable, "-m", "search", "teacher", str(ROOT / "examples" / "quickstart.yaml"),
         "--storage", "results", "--name", "rel", "--set", "data.kind=file",
         "--set", "data.path=data/d.parquet", "--set", "teacher.optim.steps=20",
         "--set", "teacher.eval_every=10"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert "teacher bank:" in run.stdout


def test_with_absolute_paths_makes_every_input_path_absolute(tmp_path, monkeypatch):
    from search.spec import validate_spec

    monkeypatch.chdir(tmp_path)
    for name in ("tr.npz", "va.npz", "te.npz", "w.pt"):
        (tmp_path / name).write_bytes(b"")
    spec = validate_spec({
        "name": "a", "data": {"kind": "file", "paths": {"train": "tr.npz", "val": "va.npz",
                                                        "test": "te.npz"}},
        "teacher": {"init_from": "w.pt"},
    }).with_absolute_paths()  # fmt: skip
    assert spec.data.paths.train == str(tmp_path / "tr.npz")
    assert spec.data.paths.test == str(tmp_path / "te.npz") and spec.data.paths.holdout is None
    assert spec.teacher.init_from == str(tmp_path / "w.pt")
    lm = {"task": {"kind": "causal_lm"}, "teacher": {"model": {"kind": "transformer"}},
          "student": {"model": {"kind": "transformer"}}}  # fmt: skip
    text = validate_spec({"name": "t", "data": {"kind": "text", "path": "{stdlib}/*.py"}, **lm})
    assert text.with_absolute_paths().data.path == "{stdlib}/*.py"  # the standard library's
    glob = validate_spec({"name": "g", "data": {"kind": "text", "path": "docs/*.txt"}, **lm})
    assert glob.with_absolute_paths().data.path == str(tmp_path / "docs" / "*.txt")
    assert validate_spec({"name": "d"}).with_absolute_paths().data.path is None


def test_the_cluster_python_check_looks_for_every_declared_dependency():
    import re

    import tomllib

    from search.submit import REQUIRED_MODULES

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    distributions = {re.match(r"[A-Za-z0-9_.-]+", d)[0].lower() for d in declared}
    imported_as = {"pyyaml": "yaml", "scikit-learn": "sklearn"}
    assert {imported_as.get(d, d) for d in distributions} == set(REQUIRED_MODULES)


def test_an_address_that_is_no_ray_head_is_refused_naming_the_gcs_port():
    """A port that accepts connections but is no Ray head (the dashboard's, given to `run`):
    refused after the probe's own time, however long importing Ray took on a loaded machine."""
    import http.server
    import threading

    from search.errors import RayConnectError
    from search.sweep import _check_reachable

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(RayConnectError, match="no Ray head answered within 5 s.*GCS address"):
            _check_reachable(f"127.0.0.1:{server.server_port}", answer_s=5)
    finally:
        server.shutdown()
