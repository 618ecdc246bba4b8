from pathlib import Path

import pytest

from search.spec import SpecError, load_spec, validate_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_validates(path):
    spec = load_spec(path)
    assert spec.num_samples >= 1


def _problems(raw):
    with pytest.raises(SpecError) as info:
        validate_spec(raw)
    return info.value.problems


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"name": "a", "bogus": 1}, "bogus: unknown key; allowed: baselines, data, metric"),
        (
            {"name": "a", "student": {"optim": {"stepz": 3}}},
            "student.optim.stepz: unknown key; allowed: batch_size, kind, lr, momentum, steps",
        ),
        ({"name": "a", "num_samples": "two"}, "num_samples: Input should be a valid integer"),
        (
            {"name": "a", "student": {"distill": {"alpha": 1.5}}},
            "student.distill.alpha: Input should be less than or equal to 1 (got 1.5)",
        ),
        (
            {"name": "a", "student": {"distill": {"temperature": 0}}},
            "student.distill.temperature: Input should be greater than 0 (got 0)",
        ),
        (
            {"name": "a", "student": {"curriculum": {"kind": "cosine"}}},
            "student.curriculum.kind: Input should be 'none', 'paced', 'confidence', 'self_paced', 'focal', 'importance', 'rho', 'staged', 'bandit' or 'mixture' (got 'cosine')",
        ),
        (
            {"name": "a", "data": {"kind": "file", "path": "/no/such.parquet"}},
            "data.path: '/no/such.parquet' does not exist",
        ),
        ({"name": "a", "data": {"kind": "file"}}, "data.path: required when kind is 'file'"),
        ({"name": "has space"}, "name: must be 1-100 letters"),
        ({}, "name: required field is missing"),
        (
            {"name": "a", "space": {"alpha": [0.2, 1.2]}},
            "space.alpha: 1.2 is not a valid distill.alpha: Input should be less than or equal to 1",
        ),
        (
            {"name": "a", "search": {"algorithm": "grid", "grid": {"curriculum/kind": ["none"]}}},
            "search.grid: unknown parameter 'curriculum/kind' (did you mean 'curriculum.kind'?)",
        ),
        (
            {"name": "a", "search": {"points": [{"distill.temprature": 2.0}]}},
            "search.points: unknown parameter 'distill.temprature'; parameters are named by their config path",
        ),
        (
            {"name": "a", "scheduler": {"kind": "pb2"}, "search": {"algorithm": "tpe"}},
            "spec: scheduler.kind 'pb2' draws its population at random",
        ),
    ],
)
def test_each_problem_names_the_field_and_what_is_allowed(raw, expected):
    problems = _problems(raw)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_every_problem_is_reported_at_once():
    raw = {
        "name": "a",
        "x": 1,
        "student": {"distill": {"alpha": 2, "temperature": -1}},
        "num_samples": 0,
    }
    assert len(_problems(raw)) == 4


def test_overrides_are_parsed_as_yaml_and_validated(tmp_path):
    spec_file = tmp_path / "s.yaml"
    spec_file.write_text("name: a\n")
    spec = load_spec(
        spec_file, ["student.optim.lr=1e-2", "space.curricula=[paced]", "num_samples=3"]
    )
    assert (
        spec.student.optim.lr == 0.01
        and spec.space.curricula == ["paced"]
        and spec.num_samples == 3
    )
    with pytest.raises(SpecError) as info:
        load_spec(spec_file, ["student.distill.alpha=7", "nonsense", "name.x=1"])
    problems = info.value.problems
    assert problems[0].startswith("--set 'nonsense': expected KEY=VALUE")
    assert problems[1].startswith("--set 'name.x=1': name is 'a', not a mapping")
    assert any(p.startswith("student.distill.alpha:") for p in problems)


def test_unreadable_specs(tmp_path):
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(SpecError, match="not valid YAML at line"):
        load_spec(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(tmp_path / "list.yaml")


def test_a_sweep_started_under_an_older_results_format_is_not_resumed(tmp_path):
    """Its study names parameters `curriculum/kind`, its columns hold JSON-text lists: resuming
    it would mix both. The manifest's fingerprint carries the format; nothing is overwritten."""
    import hashlib
    import json

    from search._resume import _MUTABLE, Manifest
    from search.errors import SweepExistsError

    spec = validate_spec({"name": "old", "storage": str(tmp_path)})
    spec_json = spec.model_dump(mode="json")
    fixed = {k: v for k, v in spec_json.items() if k not in _MUTABLE}  # how format 1 hashed
    old = hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]
    manifest = spec.sweep_dir / "manifest.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"fingerprint": old, "spec": spec_json, "runs": []}))
    with pytest.raises(SweepExistsError, match=r"differs in: format"):
        Manifest.open(spec)
    assert json.loads(manifest.read_text())["fingerprint"] == old
    manifest.unlink()
    assert Manifest.open(spec).data["fingerprint"] != old  # a new sweep: the current format
