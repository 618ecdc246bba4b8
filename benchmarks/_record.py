"""Record benchmark figures: ``benchmarks/results.json`` (machine-readable, one key per figure)
and ``benchmarks/RESULTS.md`` (the same figures as a table, regenerated from the JSON)."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"
READINGS_MD = HERE / "READINGS.md"  # hand-written readings, appended to RESULTS.md as they are

# The targets the issues set: key -> (">=" or "<=", bound). RESULTS.md marks each figure.
TARGETS = {
    "make_demo_fresh_clone_s": ("<=", 300),
    "quickstart_trials": (">=", 8),
    "sampler_batch_us_10m": ("<=", 50),
    "sampler_build_s_10m": ("<=", 2),
    "bank_over_student_only_throughput": (">=", 0.95),
    "bank_over_online_teacher_speedup": (">=", 3),
    "parity_lockstep_over_oneshot_steps": ("<=", 0.5),
    "parity_twoshot_over_oneshot_steps": ("<=", 0.5),
    "parity_searched_over_oneshot_steps": ("<=", 0.35),
    "parity_bench_wall_s": ("<=", 600),
    "asha_over_fifo_steps": ("<=", 0.35),
    "asha_minus_fifo_best_val_accuracy": (">=", -0.01),
    "sweep_wall_over_ideal": ("<=", 1.15),
    # issue 5's bound against the ideal this machine can reach (two trials side by side)
    "sweep_wall_over_packed_ideal": ("<=", 1.15),
    "best_schedules_10k_trials_s": ("<=", 2),
    "best_schedules_10k_trials_running_s": ("<=", 2),
    "pcfg_progressive_over_oneshot_steps": ("<=", 0.7),
    "pcfg_bench_wall_s": ("<=", 900),
    "lm_kd_over_ce_throughput": (">=", 0.9),
    "lm_kd_over_ce_throughput_cuda": (">=", 0.9),
    "bank_bytes_per_token_k32_v32k": ("<=", 100),
    "topk_kd_accuracy_gap": (">=", -0.005),
    "topk_kd_accuracy_gap_cuda": (">=", -0.005),
    "bank_build_scaling_2_over_1": (">=", 1.7),
    "sparse_bank_over_dense_student_throughput": (">=", 0.95),
    "sparse_bank_over_dense_student_throughput_cuda": (">=", 0.95),
    "bandit_over_uniform_steps": ("<=", 0.7),
    "bandit_over_best_mixture_steps": ("<=", 1.2),
}


def _verdict(key: str, value: float) -> str:
    if key not in TARGETS:
        return ""
    op, bound = TARGETS[key]
    met = value >= bound if op == ">=" else value <= bound
    return f"{op} {bound:g}: {'met' if met else '**missed**'}"


def machine() -> str:
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}, "
        f"Python {platform.python_version()}"
    )


def record(key: str, value: float, unit: str, note: str = "") -> None:
    results = json.loads(RESULTS_JSON.read_text()) if RESULTS_JSON.exists() else {}
    results[key] = {
        "value": value,
        "unit": unit,
        "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "command": "python " + " ".join([os.path.relpath(sys.argv[0], HERE.parent), *sys.argv[1:]]),
        **({"note": note} if note else {}),
    }
    RESULTS_JSON.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    _write_markdown(results)
    print(f"{key} = {value:.4g} {unit}" + (f"  ({note})" if note else ""))


def _write_markdown(results: dict) -> None:
    lines = [
        "# Benchmark results",
        "",
        "Generated from `results.json` by the benchmark scripts (`make bench`); figures are",
        "measured side by side within one run of each script, on the machine named; the",
        "target column is the bound the issues set (`TARGETS` in `_record.py`).",
        "",
        "| key | value | unit | target | note | measured at | machine | command |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, r in sorted(results.items()):
        lines.append(
            f"| `{key}` | {r['value']:.4g} | {r['unit']} | {_verdict(key, r['value'])} "
            f"| {r.get('note', '')} "
            f"| {r['measured_at']} | {r['machine']} | `{r['command']}` |"
        )
    if READINGS_MD.exists():
        lines += ["", READINGS_MD.read_text().rstrip()]
    RESULTS_MD.write_text("\n".join(lines) + "\n")
