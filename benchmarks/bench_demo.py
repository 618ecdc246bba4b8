"""`make demo` as a new user meets it: a fresh clone, a new virtual environment, the install and
the quickstart sweep, timed end to end (the pip cache of the machine is used as it is).

Records ``make_demo_fresh_clone_s`` (target: <= 300 s on a 2-core machine) and
``quickstart_trials`` (target: >= 8 rows in the trials table).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _record import record  # noqa: E402

ROOT = HERE.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        started = time.perf_counter()
        demo = subprocess.run(["make", "demo"], cwd=clone, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if demo.returncode != 0:
            sys.exit(f"make demo failed:\n{demo.stdout[-2000:]}\n{demo.stderr[-2000:]}")
        count = subprocess.run(
            [str(clone / ".venv/bin/python"), "-c",
             "from analysis import load_trials; print(load_trials('results/quickstart').num_rows)"],
            cwd=clone, capture_output=True, text=True, check=True,
        )  # fmt: skip
    record("make_demo_fresh_clone_s", elapsed, "s", "fresh clone and venv, install included")
    record(
        "quickstart_trials",
        int(count.stdout.strip()),
        "trials",
        "rows in results/quickstart/trials",
    )


if __name__ == "__main__":
    main()
