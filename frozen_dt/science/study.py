"""The recall study from its SPEC: ``python -m frozen_dt.science.study {plan,run,select,analyze} SPEC ...``.

A SPEC (JSON, e.g. ``results/science/recall_study.json``)::

    {"results": "results/science/recall",          # result files (committed), one JSON per run
     "runs": "runs/science/recall",                # checkpoints (not committed)
     "profiles": {"cpu": {"device": "cpu", "precision": "fp32"},
                  "gpu": {"device": "cuda", "precision": "bf16"}},
     "common": {"backbone": "gemma3-270m", "layers": "3:5", "steps": 2000, ...},   # RunSpec fields
     "phases": {"pilot": {"arms": {"pretrained": [1e-3, 3e-3, 1e-2], ...}, "seeds": [100]},
                "main": {"arms": ["pretrained", ...], "lr": "pilot", "seeds": [0, 1, 2, 3, 4]},
                "replication-pilot": {"arms": {...}, "seeds": [100], "common": {"backbone": "smollm2-135m", ...}},
                "replication": {"arms": [...], "lr": "replication-pilot", "seeds": [...], "common": {...}}},
     "rule": {"fixed": "L8", "long": "L12", "solve_fraction": 0.5, "last_evals": 2}}

``run --phase P`` trains the phase's runs in order (a complete result file is skipped, an unfinished
run resumes from its checkpoint, or from the committed snapshot that ``snapshot --phase P`` copies beside an
unfinished run's result file when its trainable state is small, and removes once the run is complete). Several ``run`` workers may share a phase (one
torch thread each on a small machine): each run is locked by the worker that trains it and skipped by the others. ``select`` applies the pilot's pre-registered rule (per arm the learning rate with
the lowest final error at the fixed length, ties to the smaller rate) and its go/no-go rule (some arm's final error
at most ``solve_fraction`` times the no-recall error), writing ``<results>/<pilot phase>_selection.json``; a phase
whose ``lr`` names a pilot phase reads its selection. ``analyze --phase P`` writes
``<results>/<phase>_analysis.{json,md}`` with the per-seed values and the tests of
:mod:`frozen_dt.science.analysis`. Every result file records its spec, so a figure in the study's README can be
traced to a command and a file.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from frozen_dt.errors import FrozenDTError
from frozen_dt.locks import LockHeld, run_lock
from frozen_dt.run_dir import read_json, write_json
from frozen_dt.science import exit_code
from frozen_dt.science.analysis import analyze_phase, phase_results
from frozen_dt.science.train import RunSpec, final_error, run, snapshot, snapshot_path

RUNSPEC_FIELDS = {f.name for f in fields(RunSpec)}


def load_spec(path: str | Path) -> dict:
    if not Path(path).is_file():
        raise FrozenDTError(f"no such SPEC file: {path}")
    spec = read_json(Path(path))
    for key in ("results", "runs", "profiles", "common", "phases", "rule"):
        if key not in spec:
            raise FrozenDTError(f"{path}: the SPEC has no {key!r}")
    return spec


def _check_fields(where: str, settings: dict) -> None:
    unknown = set(settings) - RUNSPEC_FIELDS
    if unknown:
        raise FrozenDTError(f"{where}: unknown run settings {sorted(unknown)} (known: {sorted(RUNSPEC_FIELDS)})")


def phase_runs(spec: dict, phase: str, profile: str) -> list[RunSpec]:
    if phase not in spec["phases"]:
        raise FrozenDTError(f"no phase {phase!r} in the SPEC (phases: {', '.join(spec['phases'])})")
    if profile not in spec["profiles"]:
        raise FrozenDTError(f"no profile {profile!r} in the SPEC (profiles: {', '.join(spec['profiles'])})")
    p = spec["phases"][phase]
    settings = {**spec["common"], **p.get("common", {}), **spec["profiles"][profile]}
    settings = {k: v for k, v in settings.items() if k != "threads"}
    _check_fields(f"phase {phase}", settings)
    if isinstance(p["arms"], dict):
        # i-th rate of every arm before any arm's (i+1)-th: an early stop still covers every arm
        depth = max(len(lrs) for lrs in p["arms"].values())
        grid = [(arm, lrs[i]) for i in range(depth) for arm, lrs in p["arms"].items() if i < len(lrs)]
    else:
        pilot = p.get("lr")
        if pilot not in spec["phases"] or not isinstance(spec["phases"][pilot]["arms"], dict):
            raise FrozenDTError(f"phase {phase}: a list of arms needs 'lr' naming the pilot phase whose selection "
                                "gives the rates")
        selection = Path(spec["results"]) / f"{pilot}_selection.json"
        if not selection.is_file():
            raise FrozenDTError(f"phase {phase} takes its rates from the pilot: run 'select' once the pilot is "
                                f"complete ({selection} is missing)")
        chosen = read_json(selection)["lr"]
        missing = [a for a in p["arms"] if a not in chosen]
        if missing:
            raise FrozenDTError(f"phase {phase}: the pilot chose no rate for {missing}")
        grid = [(arm, chosen[arm]) for arm in p["arms"]]
    return [RunSpec(arm=arm, lr=float(lr), seed=int(seed), **settings) for seed in p["seeds"] for arm, lr in grid]


def result_path(spec: dict, phase: str, run_spec: RunSpec) -> Path:
    return Path(spec["results"]) / phase / f"{run_spec.name}.json"


def snapshot_phase(spec: dict, phase: str, profile: str) -> list[str]:
    """Beside each unfinished run's result file, a copy of its small checkpoint (to be committed, so that a later
    session resumes it); a complete run's snapshot is removed (git history keeps it). One line per run touched."""
    lines = []
    for r in phase_runs(spec, phase, profile):
        result = result_path(spec, phase, r)
        status = read_json(result).get("status") if result.is_file() else None
        if status == "running":
            copied = snapshot(Path(spec["runs"]) / phase / r.name, result)
            lines.append(f"{r.name}: " + (f"snapshot {copied}" if copied else "no small checkpoint to snapshot"))
        elif status == "complete" and snapshot_path(result).is_file():
            snapshot_path(result).unlink()
            lines.append(f"{r.name}: complete; its snapshot {snapshot_path(result)} removed")
    return lines


def run_phase(spec: dict, phase: str, profile: str, only: list[str] | None = None) -> list[dict]:
    threads = spec["profiles"][profile].get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    out = []
    for run_spec in phase_runs(spec, phase, profile):
        if only and run_spec.arm not in only:
            continue
        run_dir = Path(spec["runs"]) / phase / run_spec.name
        run_dir.mkdir(parents=True, exist_ok=True)
        try:  # several workers may share a phase: each run is trained by whichever worker locks it first
            with run_lock(run_dir, "study run"):
                out.append(run(run_spec, run_dir, result_path(spec, phase, run_spec),
                               log=lambda m: print(m, flush=True)))
        except LockHeld as held:
            print(f"{run_spec.name}: skipped, {held}", flush=True)
    return out


def select(spec: dict, pilot: str = "pilot", profile: str = "cpu") -> dict:
    """The pilot's pre-registered learning-rate rule and go/no-go rule, from the complete result files of its own
    runs (a leftover file of another rate or seed is not read); a rate's error is the mean over its seeds."""
    rule = spec["rule"]
    key, last = f"err_{rule['fixed']}", int(rule["last_evals"])
    names = [r.name for r in phase_runs(spec, pilot, profile)]
    records = [r for r in phase_results(spec, pilot, names) if r["status"] == "complete"]
    missing = sorted(set(names) - {r["name"] for r in records})  # every seed of every rate, as analyze requires
    if missing:
        raise FrozenDTError(f"the pilot {pilot!r} is not complete: {len(missing)} of {len(names)} runs missing "
                            f"({', '.join(missing[:4])} ...)")
    errors: dict[str, dict[float, list[float]]] = {}
    for r in records:
        errors.setdefault(r["spec"]["arm"], {}).setdefault(r["spec"]["lr"], []).append(final_error(r, key, last))
    table = {arm: {lr: float(np.mean(v)) for lr, v in by_lr.items()} for arm, by_lr in errors.items()}
    chosen = {}
    for arm, by_lr in table.items():
        chosen[arm] = min(sorted(by_lr), key=lambda lr: (round(by_lr[lr], 6), lr))
    norecall = records[0]["baselines"][f"norecall_{rule['fixed']}"]
    bar = rule["solve_fraction"] * norecall
    best = min(table[a][chosen[a]] for a in table)
    selection = {"lr": chosen, "final_error": table, "metric": f"{key}, mean of the last {last} evaluations",
                 "norecall": norecall, "go_bar": bar, "best_final_error": best, "go": bool(best <= bar)}
    write_json(Path(spec["results"]) / f"{pilot}_selection.json", selection)
    return selection


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m frozen_dt.science.study", description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=("plan", "run", "snapshot", "select", "analyze"))
    parser.add_argument("spec")
    parser.add_argument("--phase", default="pilot")
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--only", nargs="*", help="run only these arms")
    args = parser.parse_args(argv)
    return exit_code(lambda: _command(args))


def _command(args) -> None:
    spec = load_spec(args.spec)
    if args.action == "plan":
        for r in phase_runs(spec, args.phase, args.profile):
            path = result_path(spec, args.phase, r)
            if not path.is_file():
                print(f"{r.name}: pending")
                continue
            record = read_json(path)
            last = record["curve"][-1] if record.get("curve") else {}
            bars = record["baselines"]
            errors = " ".join(f"{k}={v:.4f} (no recall {bars.get('norecall_' + k[4:], float('nan')):.4f})"
                              for k, v in last.items() if k.startswith("err_"))
            print(f"{r.name}: {record.get('status', '?')} at step {record.get('step', 0)}: {errors} "
                  f"[{record.get('wall_s', 0):.0f} s]")
    elif args.action == "run":
        run_phase(spec, args.phase, args.profile, args.only)
    elif args.action == "snapshot":
        for line in snapshot_phase(spec, args.phase, args.profile):
            print(line)
    elif args.action == "select":
        s = select(spec, args.phase, args.profile)
        print(json.dumps(s, indent=2))
    else:
        expected = [r.name for r in phase_runs(spec, args.phase, args.profile)]
        print(analyze_phase(spec, args.phase, expected=expected))


if __name__ == "__main__":
    raise SystemExit(main())
