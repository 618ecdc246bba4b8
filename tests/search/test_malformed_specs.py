"""Hundreds of malformed specs through the real CLI entry point: every one exits 2 naming each
broken field, none with a traceback."""

import copy
import typing
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from search.cli import main
from search.spec import SET_BY_THE_SWEEP, SweepSpec

ROOT = Path(__file__).resolve().parents[2]
BASE = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())


def _paths(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple]:
    """(path, annotation) for every field of the spec, nested models included."""
    out = []
    for name, info in model.model_fields.items():
        if prefix and name in SET_BY_THE_SWEEP.get(prefix[0], {}):
            continue
        path, annotation = (*prefix, name), info.annotation
        out.append((path, annotation))
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            out += _paths(annotation, path)
    return out


PATHS = _paths(SweepSpec)


def _never_valid(annotation) -> object:
    """A value no field of this annotation accepts."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [1, 2]
    if typing.get_origin(annotation) is dict:
        return "not a mapping"
    return {"not": "a value"}


def _set(spec: dict, path: tuple[str, ...], value) -> None:
    node = spec
    for part in path[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[path[-1]] = value


@st.composite
def malformed(draw):
    """A spec with 1-3 broken fields (wrong types or unknown keys); the fields it broke."""
    spec = copy.deepcopy(BASE)
    broken = []
    chosen = draw(
        st.lists(st.sampled_from(PATHS), min_size=1, max_size=3, unique_by=lambda p: p[0])
    )
    for path, annotation in chosen:
        if any(path[: len(b)] == b or b[: len(path)] == path for b in broken):
            continue  # one problem per branch, so each is reported on its own
        if draw(st.booleans()):
            _set(spec, path, _never_valid(annotation))
            broken.append(path)
        else:
            key = draw(st.from_regex(r"[a-z]{3,8}_x", fullmatch=True))
            _set(spec, (*path[:-1], key), 1)  # an unknown key beside the field
            broken.append((*path[:-1], key))
    return spec, broken


@settings(
    max_examples=220, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
@given(case=malformed())
def test_every_malformed_spec_exits_2_naming_the_field(case, tmp_path, capsys):
    spec, broken = case
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert lines and all(line.startswith("error: ") for line in lines), err
    for field in broken:
        assert any(line.startswith(f"error: {'.'.join(field)}") for line in lines), (field, err)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=200))
def test_arbitrary_text_is_valid_yaml_spec_or_a_one_line_error(text, tmp_path, capsys):
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    code = main(["validate", str(path)])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert all(line.startswith("error: ") for line in err.strip().splitlines())
