"""``frozen-dt sweep SPEC``: expand the SPEC, run its jobs (local pool or Ray), then write ``sweep.json`` and the
leaderboard of its runs into the SPEC's output root.

Rerunning a SPEC does only what is left: finished runs are skipped, interrupted ones resume from ``last.pt``,
failed ones are retried. The exit status is 1 when a run is still failed at the end.
"""

from __future__ import annotations

import datetime
import os
from pathlib import Path

from frozen_dt.errors import FrozenDTError
from frozen_dt.locks import run_lock
from frozen_dt.progress import progress_bar
from frozen_dt.provenance import DATA_PACKAGES, git_commit, package_versions
from frozen_dt.run_dir import write_json
from frozen_dt.sweeps.jobs import datasets_to_prepare, job_argvs, prepare_data, run_local, run_ray, run_state
from frozen_dt.sweeps.spec import load_sweep


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".frozen-dt-write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as error:
        raise FrozenDTError(f"output root {out} is not writable ({error.strerror or error})") from None


def default_jobs(threads: int) -> int:
    """As many jobs as the machine's cores hold at ``threads`` torch threads each."""
    return max(1, (os.cpu_count() or 1) // threads)


def run_sweep(args) -> int:
    sweep = load_sweep(Path(args.spec), args.max_runs, args.profile)
    threads = sweep.resources["cpus"]
    if args.backend == "ray" and not args.dry_run:
        from frozen_dt.sweeps.jobs import check_ray_address, import_ray

        import_ray()  # fail before anything starts
        check_ray_address(args.ray_address)
    if args.dry_run:
        for what, argv in datasets_to_prepare(sweep):
            print(f"data     {what}\n           frozen-dt {' '.join(argv)}")
        for job in sweep.jobs():
            for run in job if isinstance(job, list) else [job]:
                print(f"{run_state(run):8s} {run.run_dir}  [cpus {threads}, gpus {sweep.resources['gpus']}]")
            for argv in job_argvs(job, threads):
                print(f"           frozen-dt {' '.join(argv)}")
        profile = f"; profile {sweep.profile}" if sweep.profile else ""
        print(f"{len(sweep.runs)} runs; backend {args.backend}{profile}")
        return 0
    check_writable(sweep.out)
    with run_lock(sweep.out, "sweep output root"):  # one sweep per root: its jobs, sweep.json, the leaderboard
        return run_locked(sweep, args, threads)


def run_locked(sweep, args, threads: int) -> int:
    """Run ``sweep``'s jobs, then write ``sweep.json`` and the leaderboard (the output root is locked)."""
    prepare_data(sweep, threads)
    bar = progress_bar(total=len(sweep.runs), desc="sweep", unit="run")
    counts = {"done": 0, "skipped": 0, "failed": 0}

    def on_result(outcome: dict) -> None:
        counts[outcome["status"]] += 1
        bar.update(1)
        bar.set_postfix(counts)
        if outcome["status"] == "failed":
            bar.write(f"failed: {outcome['run_dir']}: {outcome['error']}")
        elif bar.disable:  # no terminal (a log file): one line per finished run instead of the bar
            print(f"sweep: {sum(counts.values())}/{len(sweep.runs)} {outcome['status']} {outcome['run_dir']}"
                  + (f" ({outcome['seconds']:.0f} s)" if outcome.get("seconds") else ""), flush=True)

    jobs = args.jobs or default_jobs(threads)
    started = datetime.datetime.now()
    try:
        if args.backend == "ray":
            results = run_ray(sweep.jobs(), address=args.ray_address, cpus=threads,
                              gpus=sweep.resources["gpus"], retries=args.retries, on_result=on_result)
        else:
            results = run_local(sweep.jobs(), jobs=jobs, threads=threads,
                                retries=args.retries, on_result=on_result)
    finally:
        bar.close()
    record = {"spec_file": str(sweep.spec_file), "profile": sweep.profile, "spec": sweep.raw, "backend": args.backend,
              "ray_address": args.ray_address, "jobs": jobs if args.backend == "local" else None,
              "retries": args.retries,
              "started_at": started.isoformat(timespec="seconds"),
              "finished_at": datetime.datetime.now().isoformat(timespec="seconds"),
              "versions": package_versions(DATA_PACKAGES), "git": git_commit(),
              "runs": [{**r, "settings": run.settings} for r, run in zip(sorted_like(results, sweep.runs), sweep.runs)]}
    write_json(sweep.out / "sweep.json", record)
    failed = [r for r in results if r["status"] == "failed"]
    print(f"sweep {sweep.spec_file}: {counts['done']} run, {counts['skipped']} already done, {len(failed)} failed "
          f"({len(sweep.runs)} runs)", flush=True)
    for r in failed:
        print(f"failed: {r['run_dir']}: {r['error']}", flush=True)
    evaluated = [r["run_dir"] for r, run in zip(sorted_like(results, sweep.runs), sweep.runs)
                 if r["status"] != "failed" and run.evaluation.get("episodes", 0) > 0]
    if evaluated:
        from frozen_dt.eval.leaderboard import write_leaderboard

        rows, skipped = write_leaderboard(evaluated, sweep.out / "leaderboard.csv", sweep.eval["checkpoint"],
                                          env_version=sweep.eval.get("env_version"))
        print(f"leaderboard: {sweep.out / 'leaderboard.csv'} ({len(rows)} rows)", flush=True)
        for line in skipped:
            print(f"left out of the leaderboard: {line}", flush=True)
        failed = failed or skipped
    return 1 if failed else 0


def sorted_like(results: list[dict], runs) -> list[dict]:
    """``results`` in the order of ``runs`` (Ray returns them as they finish)."""
    by_dir = {r["run_dir"]: r for r in results}
    return [by_dir[str(run.run_dir)] for run in runs]
