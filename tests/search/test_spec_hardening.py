"""Specs a user must not be able to write: fields the sweep owns, names with a trailing newline,
documents that exhaust the validator (YAML alias bombs, deep nesting), and credentials that
would be echoed or stored."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from search.cli import main
from search.spec import SpecError, validate_spec

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SECRET = "s3cret"
STORAGE_URL = f"postgresql://kd:{SECRET}@db.example:5432/studies"


def _validate(capsys, spec_text: str, *overrides: str, tmp_path: Path) -> tuple[int, list[str]]:
    path = tmp_path / "spec.yaml"
    path.write_text(spec_text)
    args = ["validate", str(path)]
    for override in overrides:
        args += ["--set", override]
    code = main(args)
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, err.strip().splitlines()


def _problems(raw) -> list[str]:
    with pytest.raises(SpecError) as info:
        validate_spec(raw)
    return info.value.problems


# -- fields the sweep owns ---------------------------------------------------------------------


def test_student_arm_in_a_spec_exits_2_with_one_line_naming_the_field(tmp_path, capsys):
    text = "name: a\nstudent:\n  arm: baseline:oneshot\n"
    code, lines = _validate(capsys, text, tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: student.arm: set by the sweep") and "baselines" in line


def test_student_arm_through_set_is_refused_the_same_way(tmp_path, capsys):
    code, lines = _validate(capsys, "name: a\n", "student.arm=baseline:oneshot", tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: student.arm: set by the sweep")


def test_student_arm_is_refused_by_the_cli_in_a_subprocess(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: a\nstudent: {arm: search}\n")
    run = subprocess.run(
        [sys.executable, "-m", "search", "validate", str(spec)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2 and "Traceback" not in run.stderr
    (line,) = run.stderr.strip().splitlines()
    assert line.startswith("error: student.arm: set by the sweep")


@pytest.mark.parametrize(
    ("section", "field", "value", "instead"),
    [
        ("teacher", "data", {"kind": "digits"}, "top-level data"),
        ("teacher", "task", {"kind": "classify"}, "top-level task"),
        ("teacher", "output_dir", "/tmp/run", "<storage>/_teachers/"),
        ("teacher", "fold", 1, "every fold of teacher.score_folds"),
        ("student", "data", {"kind": "digits"}, "top-level data"),
        ("student", "teacher_bank", "/tmp/bank", "configure it under teacher"),
        ("student", "repeats", 3, "top-level repeats"),
        ("student", "arm", "search", "top-level baselines"),
    ],
)
def test_every_field_the_sweep_owns_is_refused_in_one_line_and_seeds_are_not(
    section, field, value, instead
):
    raw = {"name": "a", "teacher": {"seed": 2}, "student": {"seed": 3}}
    raw[section][field] = value
    (problem,) = _problems(raw)  # teacher.seed / student.seed are the user's to set
    assert problem.startswith(f"{section}.{field}: set by the sweep") and instead in problem


def test_owned_fields_are_reported_beside_every_other_problem():
    raw = {
        "name": "a",
        "teacher": {"output_dir": "/x"},
        "student": {"arm": "x", "repeats": 2, "distill": {"alpha": 7}},
    }
    fields = sorted(p.split(":")[0] for p in _problems(raw))
    assert fields == [
        "student.arm", "student.distill.alpha", "student.repeats", "teacher.output_dir"
    ]  # fmt: skip


def test_the_teachers_former_bank_dir_is_an_unknown_key():
    (problem,) = _problems({"name": "a", "teacher": {"bank_dir": "/x"}})
    assert problem.startswith("teacher.bank_dir: unknown key") and "output_dir" in problem


def test_a_config_object_given_to_the_spec_is_refused_too():
    from trainables.config import StudentConfig

    (problem,) = _problems({"name": "a", "student": StudentConfig(arm="baseline:oneshot")})
    assert problem.startswith("student.arm: set by the sweep")


def test_a_name_with_a_trailing_newline_is_refused():
    (problem,) = _problems({"name": "abc\n"})
    assert problem.startswith("name: must be 1-100 letters")


# -- specs that would exhaust the validator ----------------------------------------------------


def _alias_bomb(levels: int = 9) -> str:
    """A flow list whose last item expands to 9**(levels - 1) values through aliases."""
    items = ["&l0 [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&l{i} [" + ", ".join([f"*l{i - 1}"] * 9) + "]" for i in range(1, levels)
    ]
    return "[" + ", ".join(items) + "]"


def test_an_alias_bomb_under_search_grid_exits_2_with_one_line(tmp_path, capsys):
    text = f"name: a\nsearch:\n  grid:\n    distill.temperature: {_alias_bomb()}\n"
    code, lines = _validate(capsys, text, tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: spec: ") and "expands to more than 100000 values" in line


def test_an_alias_bomb_through_set_exits_2_with_one_line(tmp_path, capsys):
    bomb = f"search.grid={{distill.temperature: {_alias_bomb()}}}"
    code, lines = _validate(capsys, "name: a\n", bomb, tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: --set 'search.grid=") and "expands to more than" in line


def test_a_merge_key_bomb_is_refused_before_it_is_built(tmp_path, capsys):
    """``<<`` copies the merged pairs while loading (9**6 here, to build one small point):
    refused from the composed graph, before anything is copied."""
    points = ["&l0 {distill.temperature: 1}"] + [
        f"&l{i} {{<<: [" + ", ".join([f"*l{i - 1}"] * 9) + "]}" for i in range(1, 7)
    ]
    text = "name: a\nsearch:\n  points: [" + ", ".join(points) + "]\n"
    code, lines = _validate(capsys, text, tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert "expands to more than" in line


@pytest.mark.parametrize("depth", [100, 100_000])
def test_deep_nesting_exits_2_with_one_line(depth, tmp_path, capsys):
    deep = "[" * depth + "]" * depth
    text = f"name: a\nsearch:\n  grid:\n    distill.temperature: {deep}\n"
    code, lines = _validate(capsys, text, tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: spec: ") and "nested more than 64 levels deep" in line
    code, lines = _validate(capsys, "name: a\n", f"student.model.hidden={deep}", tmp_path=tmp_path)
    assert code == 2
    (line,) = lines
    assert line.startswith("error: --set 'student.model.hidden=[[[[")
    assert "nested more than 64 levels deep" in line and len(line) < 300


def test_validate_spec_refuses_a_shared_structure_that_expands_too_far():
    """What YAML aliases load as: one list object referenced 9 times at each of 7 levels."""
    value = [1] * 9
    for _ in range(7):
        value = [value] * 9
    (problem,) = _problems({"name": "a", "search": {"grid": {"distill.temperature": value}}})
    assert problem.startswith("spec: expands to more than 100000 values")


def test_an_override_changes_only_its_own_path_of_an_aliased_mapping(tmp_path):
    from search.spec import load_spec

    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(
        "name: a\nteacher: {optim: &o {lr: 0.001, batch_size: 64, steps: 800}}\n"
        "student: {optim: *o}\n"
    )
    spec = load_spec(spec_file, ["student.optim.steps=50"])
    assert spec.student.optim.steps == 50 and spec.teacher.optim.steps == 800


# -- credentials -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (STORAGE_URL, "postgresql://kd:***@db.example:5432/studies"),
        ("redis://:pw@h:6379/0", "redis://:***@h:6379/0"),
        ("mysql+pymysql://u:p%40ss@h/db", "mysql+pymysql://u:***@h/db"),
        ("postgresql://u@h/db?sslmode=require&password=pw", "postgresql://u@h/db?sslmode=require&password=***"),
        (f"cannot open '{STORAGE_URL}': refused", "cannot open 'postgresql://kd:***@db.example:5432/studies': refused"),
        ("sqlite:////tmp/study.db", "sqlite:////tmp/study.db"),
        ("http://head:8265", "http://head:8265"),
    ],
)  # fmt: skip
def test_redact_hides_the_password_of_every_url(text, expected):
    from search.spec import redact

    assert redact(text) == expected


def _spec_with_storage(tmp_path: Path, url: str):
    return validate_spec({"name": "db", "storage": str(tmp_path), "search": {"study_storage": url}})


def test_the_manifest_stores_no_password_and_a_new_password_is_the_same_sweep(tmp_path):
    from search._resume import Manifest

    spec = _spec_with_storage(tmp_path, STORAGE_URL)
    manifest = Manifest.open(spec)
    manifest.begin()
    text = (spec.sweep_dir / "manifest.json").read_text()
    assert SECRET not in text
    stored = json.loads(text)["spec"]["search"]["study_storage"]
    assert stored == "postgresql://kd:***@db.example:5432/studies"
    rotated = _spec_with_storage(tmp_path, STORAGE_URL.replace(SECRET, "n3w"))
    assert Manifest.open(rotated).data["fingerprint"] == manifest.data["fingerprint"]
    assert spec.search.study_storage == STORAGE_URL  # the sweep itself still connects with it


def test_a_manifest_written_with_the_password_is_resumed_and_rewritten_without_it(tmp_path):
    from search._resume import Manifest, _fingerprint

    spec = _spec_with_storage(tmp_path, STORAGE_URL)
    spec_json = spec.model_dump(mode="json")
    old = _fingerprint(spec_json)  # how a manifest was fingerprinted before redaction
    path = spec.sweep_dir / "manifest.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"fingerprint": old, "spec": spec_json, "runs": [{}]}))
    assert Manifest.open(spec).runs == 1  # the same sweep, resumed
    assert SECRET not in path.read_text()


def test_spec_errors_never_echo_a_password(tmp_path, capsys):
    text = f"name: a\nsearch: {STORAGE_URL}\n"  # a URL where a mapping belongs
    code, lines = _validate(capsys, text, f"name.x={STORAGE_URL}", tmp_path=tmp_path)
    assert code == 2 and len(lines) == 2
    assert all(SECRET not in line for line in lines)
    assert all("kd:***@db.example" in line for line in lines), lines


def test_a_study_storage_that_cannot_be_opened_is_one_line_without_the_password(tmp_path):
    from search._study import study_storage
    from search.errors import SweepInputError

    url = f"nosuchdialect://kd:{SECRET}@db.example/studies"
    spec = _spec_with_storage(tmp_path, url)
    with pytest.raises(SweepInputError) as info:
        study_storage(spec)
    message = str(info.value)
    assert message.startswith(
        "search.study_storage: cannot open the study at 'nosuchdialect://kd:***@"
    )
    assert SECRET not in message and "\n" not in message


def test_submit_names_the_jobs_server_without_its_password(monkeypatch, tmp_path):
    import ray.job_submission

    from search import submit as submit_module
    from search.errors import RayConnectError
    from search.spec import load_spec

    class RefusingClient:
        def __init__(self, address):
            pass

        def submit_job(self, **request):
            spec_text = next(Path(request["runtime_env"]["working_dir"]).glob("*.yaml"))
            assert STORAGE_URL in spec_text.read_text()  # the job gets the real URL
            raise RuntimeError(f"Request to {address} failed with status code 401")

    address = f"http://admin:{SECRET}@head:8265"
    monkeypatch.setattr(ray.job_submission, "JobSubmissionClient", RefusingClient)
    spec = load_spec(QUICKSTART, [f"storage={tmp_path}", f"search.study_storage={STORAGE_URL}"])
    with pytest.raises(RayConnectError) as info:
        submit_module.submit(spec, address)
    assert SECRET not in str(info.value) and "admin:***@head:8265" in str(info.value)
