"""Write the run directories that tests/test_legacy_runs.py evaluates and resumes.

Run once, with the code of the commit named in ``made_by.json`` (c344ed4: flat ``TrainArgs``, before algorithms
became one module each), from the repository root:

    FROZEN_DT_DATA=tests/legacy_runs/data python tests/legacy_runs/make_legacy_runs.py

For each algorithm it writes ``<algo>/whole`` (6 uninterrupted steps) and ``<algo>/split`` (the same run
interrupted at step 5, so its ``last.pt`` is the step-3 checkpoint). A later version must evaluate both and
resume ``split`` to the parameters ``whole`` ended with.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from frozen_dt import cli  # noqa: E402
from frozen_dt.trainer import Trainer  # noqa: E402
from test_cli import write_d4rl_hdf5  # noqa: E402
from test_download import write_ogbench_npz  # noqa: E402

RUNS = [("bc", "hopper-medium-v2"), ("dt", "hopper-medium-v2"), ("frozen-dt", "hopper-medium-v2"),
        ("iql", "hopper-medium-v2"), ("cql", "hopper-medium-v2"), ("gciql", "scene-play-v0")]
FLAGS = {"bc": ["--batch-size", "8"],
         "dt": ["--batch-size", "8", "--embed-dim", "16", "--dt-layers", "1", "--context", "4"],
         "frozen-dt": ["--batch-size", "8", "--backbone", "minilm-l6", "--layers", "0:1", "--context", "4"],
         "iql": ["--batch-size", "8", "--hidden-dim", "32", "--hidden-layers", "1"],
         "cql": ["--batch-size", "8", "--hidden-dim", "32", "--hidden-layers", "1"],
         "gciql": ["--batch-size", "8", "--hidden-dim", "32", "--hidden-layers", "1"]}
COMMON = ["--steps", "6", "--eval-episodes", "0", "--log-every", "2", "--save-every", "3"]


def main() -> None:
    data = Path(os.environ["FROZEN_DT_DATA"])
    data.mkdir(parents=True, exist_ok=True)
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    write_ogbench_npz(data / "scene-play-v0.npz")
    after_update = Trainer.after_update

    def interrupt_at_step_5(self, *args):
        if self.step == 5:
            raise KeyboardInterrupt
        return after_update(self, *args)

    for algo, task in RUNS:
        for name in ("whole", "split"):
            run_dir = HERE / algo / name
            shutil.rmtree(run_dir, ignore_errors=True)
            Trainer.after_update = interrupt_at_step_5 if name == "split" else after_update
            code = cli.main(["train", task, "--algo", algo, "--run-dir", str(run_dir), *COMMON, *FLAGS[algo]])
            assert code == (130 if name == "split" else 0), (algo, name, code)
            (run_dir / "checkpoints" / "best.pt").unlink(missing_ok=True)
    Trainer.after_update = after_update
    sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=HERE).stdout.strip()
    (HERE / "made_by.json").write_text(json.dumps({"commit": sha, "command": " ".join(sys.argv)}, indent=2) + "\n")


if __name__ == "__main__":
    main()
