"""Bad models and data of the new kinds fail ``python -m search validate`` (and ``run``)
before anything starts: exit 2, one line naming the field and the value; good specs pass."""

from __future__ import annotations

import contextlib
import io
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from search.cli import main

ROOT = Path(__file__).resolve().parents[2]
TRANSFORMER = "{kind: transformer, width: 16, depth: 1, heads: 2, max_length: 32}"


def _validate(tmp_path, *overrides: str) -> tuple[int, list[str]]:
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\n")
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["validate", str(spec), *[a for o in overrides for a in ("--set", o)]])
    return code, err.getvalue().strip().splitlines()


def _pcfg(*more: str) -> list[str]:
    return ["data.kind=pcfg", "data.seq_len=24", "data.train_size=64", "data.holdout_size=16",
            "task.kind=masked_lm", f"teacher.model={TRANSFORMER}",
            f"student.model={TRANSFORMER}", *more]  # fmt: skip


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (
            ["student.model.kind=module", "student.model.factory=nosuchpackage.mod:make"],
            r"^error: student\.model\.factory: cannot import 'nosuchpackage\.mod:make' "
            r"\(ModuleNotFoundError.*importable there",
        ),
        (
            ["student.model.kind=module", "student.model.factory=usermodels:wrong_classes"],
            r"^error: student\.model: the model outputs 8 classes per example, the data has 10",
        ),
        (
            [
                "data.shape=[1, 8, 8]",
                "student.model.kind=module",
                "student.model.factory=usermodels:flat_only",
            ],
            r"^error: student\.model: the model cannot take inputs of shape \(1, 8, 8\)",
        ),
        (
            ["student.model.kind=cnn"],
            r"^error: student\.model\.kind: 'cnn' needs C x H x W inputs.*\(64,\).*data\.shape",
        ),
        (
            ["data.shape=[1, 8, 9]"],
            r"^error: data\.shape: \[1, 8, 9\] holds 72 values, the examples have 64 features",
        ),
        (
            _pcfg("student.model.max_length=16"),
            r"^error: student\.model\.max_length: 16 is shorter than the data's sequences "
            r"\(24 tokens\)",
        ),
        (
            ["data.kind=module", "data.factory=nowhere:make"],
            r"^error: data\.factory: .*'nowhere:make'",
        ),
        (
            [
                "data.kind=module",
                "data.factory=userdata:sequences",
                f"teacher.model={TRANSFORMER}",
                f"student.model={TRANSFORMER}",
            ],
            r"^error: task\.kind: 'classify' needs \(x, label\) examples; data\.factory "
            r"'userdata:sequences' gives token sequences",
        ),
        (
            [
                "data.kind=module",
                "data.factory=userdata:pairs",
                "task.kind=masked_lm",
                f"teacher.model={TRANSFORMER}",
                f"student.model={TRANSFORMER}",
            ],
            r"^error: task\.kind: 'masked_lm' needs token sequences; data\.factory "
            r"'userdata:pairs' gives \(x, label\) examples",
        ),
        (
            _pcfg(
                "student.model.kind=module",
                "student.model.factory=usermodels:tiny_lm",
                "student.model.kwargs={vocab: 1}",
            ),
            r"^error: student\.model: the model cannot take token ids up to 4 \(the data's "
            r"tokens 0\.\.2, the padding id 3, the mask id 4\)",
        ),
        (
            ["task.kind=causal_lm"],
            r"^error: spec: task\.kind: 'causal_lm' needs token sequences .* data\.kind 'digits'",
        ),
    ],
    ids=[
        "factory-import",
        "classes",
        "image-shape",
        "cnn-on-features",
        "data-shape",
        "too-long",
        "data-factory",
        "module-tokens-classify",
        "module-pairs-lm",
        "small-embedding",
        "task-data",
    ],  # fmt: skip
)
def test_a_bad_model_or_data_is_one_line_and_exit_2(tmp_path, overrides, pattern):
    code, lines = _validate(tmp_path, *overrides)
    assert code == 2 and len(lines) == 1, lines
    assert re.search(pattern, lines[0]), lines[0]


def test_a_vocabulary_smaller_than_the_datas_is_refused_naming_both_sizes(tmp_path):
    pytest.importorskip("transformers", reason="the [hf] extra is not installed")
    gpt2 = "{n_embd: 16, n_layer: 1, n_head: 2, vocab_size: 4}"
    code, lines = _validate(
        tmp_path, *_pcfg("task.kind=causal_lm", "teacher.model.kind=hf",
                         "teacher.model.architecture=GPT2LMHeadModel",
                         f"teacher.model.config={gpt2}"),
    )  # fmt: skip
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: teacher.model.")
    assert "4" in lines[0] and "5" in lines[0], lines[0]  # 3 tokens + padding and mask ids


def test_token_ids_beyond_the_vocabulary_are_refused(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50, (40, 12))
    tokens[17, 3] = 300
    np.save(tmp_path / "t.npy", tokens)
    code, lines = _validate(
        tmp_path, "data.kind=tokens", f"data.path={tmp_path / 't.npy'}", "data.vocab_size=256",
        "task.kind=causal_lm", f"teacher.model={TRANSFORMER}", f"student.model={TRANSFORMER}",
    )  # fmt: skip
    assert code == 2 and len(lines) == 1
    assert "data.vocab_size" in lines[0] and "300" in lines[0] and "256" in lines[0]


def test_an_empty_text_file_is_refused(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    code, lines = _validate(
        tmp_path, "data.kind=text", f"data.path={tmp_path / 'empty.txt'}", "task.kind=causal_lm",
        f"teacher.model={TRANSFORMER}", f"student.model={TRANSFORMER}",
    )  # fmt: skip
    assert code == 2 and lines == [f"error: data.path: {str(tmp_path / 'empty.txt')!r} is empty"]


@pytest.mark.parametrize("example", ["digits_cnn.yaml", "text_lm.yaml", "pcfg_progressive.yaml"])
def test_the_examples_validate(example, capsys):
    assert main(["validate", str(ROOT / "examples" / example)]) == 0


def test_run_refuses_a_bad_model_before_starting_ray(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("name: t\nstudent:\n  model: {kind: module, factory: 'nope:make'}\n")
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(spec), "--storage", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "error: student.model.factory: cannot import 'nope:make' (ModuleNotFoundError: No "
        "module named 'nope'); the factory is imported on the worker that runs the trial, so "
        "its package must be importable there (installed, or shipped with the job's "
        "runtime_env)"
    ]
    assert not (tmp_path / "r").exists()  # nothing written, nothing started


def test_submit_leaves_code_that_may_exist_only_on_the_cluster_to_the_job(tmp_path):
    from search._inputs import check_inputs
    from search.spec import load_spec

    spec = load_spec(
        ROOT / "examples" / "quickstart.yaml",
        ["student.model.kind=module", "student.model.factory=onlyonthecluster:make"],
    )
    assert check_inputs(spec, own_code=False) is not None  # the data is still checked
    with pytest.raises(ValueError, match="student.model.factory: cannot import"):
        check_inputs(spec)


def test_a_teacher_bank_larger_than_the_free_disk_is_refused_before_the_teacher(tmp_path):
    from search._inputs import bank_bytes, check_bank_fits, check_inputs
    from search.spec import load_spec

    spec = load_spec(
        ROOT / "examples" / "text_lm.yaml",
        [f"storage={tmp_path}", "data.max_examples=1000", "teacher.checkpoint_every=100"],
    )
    info = check_inputs(spec)
    need, parts = bank_bytes(spec, info)
    # 1,000 windows x 63 next-byte positions x 256 logits x 4 bytes x 4 checkpoints (400 steps)
    assert need == 1000 * 63 * 256 * 4 * 4
    assert parts == (
        "1,000 examples x 63 positions x 256 tokens (dense float32: 64,512 bytes an example) "
        "x 4 checkpoints"
    )
    top8 = load_spec(ROOT / "examples" / "text_lm.yaml", [
        f"storage={tmp_path}", "data.max_examples=1000", "teacher.checkpoint_every=100",
        "teacher.bank.top_k=8", "teacher.bank.precision=int8",
    ])  # fmt: skip
    # per token: 8 uint8 ids, 9 uint8 codes (the top 8 and the tail), a float16 scale
    assert bank_bytes(top8, info)[0] == 1000 * 63 * (8 + 9 + 2) * 4
    check_bank_fits(spec, info, tmp_path / "no-bank-yet")  # 258 MB fit on this disk
    huge = load_spec(
        ROOT / "examples" / "text_lm.yaml",
        [f"storage={tmp_path}", "data.max_examples=10000000", "data.path='{stdlib}/**/*.py'",
         "data.seq_len=4096", "teacher.checkpoint_every=1", "teacher.model.max_length=4096",
         "student.model.max_length=4096"],
    )  # fmt: skip
    huge_info = check_inputs(huge)
    with pytest.raises(ValueError, match=r"^teacher: its bank would take .* TiB \(.*free under"):
        check_bank_fits(huge, huge_info, tmp_path / "no-bank-yet")
    (tmp_path / "built").mkdir()
    (tmp_path / "built" / "manifest.json").write_text("{}")
    check_bank_fits(huge, huge_info, tmp_path / "built")  # an existing bank is reused


def test_run_refusing_an_oversized_bank_writes_nothing(tmp_path):
    storage = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "search", "run", str(ROOT / "examples" / "pcfg_progressive.yaml"),
         "--storage", str(storage), "--set", "data.vocab_size=1000000",
         "--set", "data.train_size=100000", "--set", "teacher.checkpoint_every=1"],
        capture_output=True, text=True, timeout=300, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert (
        line.startswith("error: teacher: its bank would take ")
        and "raise teacher.checkpoint_every" in line
    )
    assert not storage.exists()


def test_both_models_problems_are_named_at_once(tmp_path):
    code, lines = _validate(
        tmp_path, *_pcfg("teacher.model.max_length=16", "student.model.max_length=16")
    )
    assert code == 2 and [line.split(":")[1] for line in lines] == [
        " teacher.model.max_length",
        " student.model.max_length",
    ]


def test_a_models_own_check_is_named_by_its_dotted_field(tmp_path):
    code, lines = _validate(tmp_path, "data.kind=pcfg", "data.vocab_size=3", "data.pad_id=3")
    assert code == 2 and lines == ["error: data.pad_id: 3 must be < vocab_size 3"]
