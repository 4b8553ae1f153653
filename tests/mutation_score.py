"""Systematic mutation testing (cosmic-ray) of the modules that hold rules, each against the few test files that
cover it; the score goes to ``results/mutation_score.json``. Slow: hours for every module on two cores.

    pip install -e ".[mutation]"
    python tests/mutation_score.py [--modules eval/stats.py ...] [--out results/mutation_score.json]

The committed tree (``git archive HEAD``, so uncommitted edits never leak in) is unpacked into a scratch folder
(``--work``), where ``frozen_dt/baselines``, ``frozen_dt/envs`` and ``frozen_dt/eval`` are links to the root folders
they install from (pyproject's package-dir), so the copy imports as the package with nothing installed: PYTHONPATH
is the copy, and a check before any mutant confirms that ``frozen_dt`` and each mutated module import from it.
cosmic-ray mutates the copy's files in place, one mutant at a time (sequentially, one torch thread), and runs the
module's test command there. Each module's session (``<work>/<module>.sqlite``) is resumable: rerunning continues
where it stopped, and the JSON is rewritten after every module, so a partial run is usable (``"partial": true``
until every module listed in MODULES has finished).

Operators (:data:`EXCLUDED_OPERATORS`): the rule-changing ones, as mutmut's set: + <-> -, * <-> /, ** -> *, each
comparison to its boundary twin and its negation, not added/removed, unary minus removed, True <-> False,
and <-> or, break <-> continue, numbers +/- 1, for loops run zero times. Bit operators, shifts, modulo targets,
``is`` between numbers, exception replacement, decorator removal and variable replacement/insertion are excluded
(they mostly produce mutants that cannot run, or that duplicate the kept ones).

Every surviving mutant is listed in ``results/mutation_survivors.json`` with its diff and the reason found for it in
``tests/mutation_dispositions.json`` (keyed ``module:line:operator:occurrence``; "equivalent: ..." mutants count
as equivalent, "out of scope: ..." as out of scope, "killed by TEST ..." as killed by a test written after the
module's run and checked by hand against that mutant (until ``--rerun-survived`` runs it), an entry without a reason
as unexplained).
"""

from __future__ import annotations

import argparse
import datetime
import fcntl
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DISPOSITIONS = REPO / "tests" / "mutation_dispositions.json"
PINNED = "tests/test_pinned_rules.py::"
SEMANTICS = "tests/test_semantics.py::"
ALGORITHMS = "tests/test_algorithms.py::"
STACK = "tests/test_stack.py::test_seed_k_of_a_stack_of_3_equals_seed_k_alone"
EVALUATE = "tests/test_evaluate.py::"
REFERENCE = "tests/test_reference_configs.py"  # the defaults against CORL's configs
TARGETS = PINNED + "test_target_networks_move_by_tau_toward_the_online_networks_after_an_update"  # Polyak, [algo]

# module -> the test files (or node ids) that cover it; the run goes in this order, short modules first.
MODULES = {
    "eval/stats.py": ["tests/test_pinned_stats.py",
                      EVALUATE + "test_bootstrap_ci_of_one_task_matches_scipy_percentile_bootstrap",
                      EVALUATE + "test_bootstrap_is_stratified_by_task", EVALUATE + "test_iqm_and_summary"],
    "eval/scores.py": ["tests/test_pinned_stats.py::test_a_task_missing_either_reference_score_has_no_normalized_score",
                       EVALUATE + "test_normalization_uses_the_d4rl_references",
                       "tests/test_registry.py::test_normalization_against_d4rl_references"],
    "baselines/cql.py": [PINNED + "test_cql_penalty_is_the_importance_sampled_logsumexp_of_its_three_action_sets",
                         PINNED + "test_cql_td_error_and_actor_loss_are_recomputed_from_the_updates_draws",
                         PINNED + "test_cql_temperature_follows_adam_on_the_entropy_gap",
                         PINNED + "test_cql_policy_log_std_is_scale_times_raw_plus_offset_clamped_to_minus_20_and_2",
                         TARGETS + "[cql]",
                         PINNED + "test_cql_critics_hidden_layers_are_orthogonal_with_gain_sqrt_2_and_zero_bias",
                         REFERENCE,
                         SEMANTICS + "test_cql_penalty_lowers_q_on_out_of_distribution_actions",
                         ALGORITHMS + "test_cql_tanh_gaussian_log_prob_matches_torch_distributions",
                         ALGORITHMS + "test_update_save_load_and_continue[cql-hopper-medium-v2-td_loss]",
                         STACK + "[cql-hopper-medium-v2]"],
    "baselines/iql.py": [PINNED + "test_iql_update_rows_are_recomputed_from_the_networks_before_it",
                         PINNED + "test_iql_defaults_are_corls",
                         SEMANTICS + "test_iql_value_regresses_to_the_expectile_of_the_action_values",
                         SEMANTICS + "test_iql_actor_loss_is_the_awr_weighted_log_likelihood",
                         SEMANTICS + "test_iql_keeps_its_runs_cosine_horizon_on_resume", TARGETS + "[iql]",
                         ALGORITHMS + "test_update_save_load_and_continue[iql-hopper-medium-v2-q_loss]",
                         STACK + "[iql-hopper-medium-v2]", REFERENCE],
    "baselines/td3bc.py": [PINNED + "test_td3bc_update_rows_are_recomputed_from_the_networks_before_it",
                           PINNED + "test_td3bc_defaults_are_the_papers_and_corls",
                           SEMANTICS + "test_td3bc_actor_step_is_scale_free_in_q_and_delayed", TARGETS + "[td3bc]",
                           ALGORITHMS + "test_update_save_load_and_continue[td3bc-hopper-medium-v2-critic_loss]",
                           STACK + "[td3bc-hopper-medium-v2]"],
    "baselines/bc.py": [PINNED + "test_bc_update_is_one_adamw_step_on_the_mean_squared_error",
                        PINNED + "test_bc_defaults_are_corls", ALGORITHMS + "test_update_save_load_and_continue[bc-hopper-medium-v2-loss]",
                        STACK + "[bc-hopper-medium-v2]"],
    "baselines/gciql.py": [PINNED + "test_gciql_update_rows_are_recomputed_from_the_networks_before_it",
                           PINNED + "test_gciql_defaults_are_ogbenchs",
                           PINNED + "test_gciql_acts_with_the_clipped_mean_on_raw_observations", SEMANTICS + "test_gciql_actor_loss_is_scale_free_in_q", TARGETS + "[gciql]",
                           ALGORITHMS + "test_update_save_load_and_continue[gciql-scene-play-v0-critic_loss]",
                           STACK + "[gciql-scene-play-v0]"],
    "baselines/common.py": [SEMANTICS + "test_expectile_loss_weights_positive_errors_by_the_expectile",
                            PINNED + "test_reward_scale_is_1000_over_the_spread_of_episode_returns",
                            PINNED + "test_scale_last_layer_gives_the_last_layer_gain_and_zero_bias_and_keeps_or_"
                                     "orthogonalizes_the_rest",
                            PINNED + "test_no_param_grads_passes_gradients_to_inputs_only_and_restores_what_was_"
                                     "trainable",
                            PINNED + "test_observation_agent_feeds_the_policy_normalized_observations_and_goals",
                            PINNED + "test_shared_defaults_are_corls",
                            PINNED + "test_bc_update_is_one_adamw_step_on_the_mean_squared_error",
                            "tests/test_semantics.py", "tests/test_algorithms.py", TARGETS],
    "eval/rollout.py": [PINNED + "test_do_nothing_ogbench_rollout_cut_short_reports_no_success",
                        PINNED + "test_success_is_the_info_success_at_the_episodes_last_step",
                        PINNED + "test_goal_conditioned_evaluation_runs_each_goal_and_scores_each_policy_by_its_own_"
                                 "episodes",
                        PINNED + "test_evaluation_defaults_roll_out_the_same_episodes_everywhere_and_keep_only_"
                                 "summaries",
                        PINNED + "test_only_a_goal_conditioned_task_hands_its_agents_the_goal_a_reset_reported",
                        "tests/test_rollout.py"],
    "baselines/dt.py": [PINNED + "test_dt_blocks_apply_each_dropout_mask_where_gpt2_drops",
                        PINNED + "test_dt_dropout_masks_cover_every_token_of_every_block",
                        "tests/test_stack.py::test_stacked_updates_take_the_batched_route_their_bodies_allow",
                        PINNED + "test_sequence_update_is_adamw_on_the_masked_mse_with_warmup_and_clipping",
                        SEMANTICS + "test_dt_is_initialised_as_the_reference_gpt2",
                        SEMANTICS + "test_dt_action_at_step_t_depends_only_on_tokens_up_to_its_state",
                        "tests/test_models.py", REFERENCE],
    "frozen_dt/sequence_models.py": [PINNED + "test_dt_agent_return_to_go_window_is_target_minus_the_rewards_so_far",
                                     PINNED + "test_sequence_update_is_adamw_on_the_masked_mse_with_warmup_and_"
                                              "clipping",
                                     PINNED + "test_masked_mean_averages_the_real_steps_entries_only",
                                     PINNED + "test_linear_warmup_factor_rises_to_one_and_no_warmup_is_one_throughout",
                                     PINNED + "test_goal_conditioned_agent_windows_hold_the_normalized_goal_on_every_"
                                              "real_step",
                                     PINNED + "test_tokens_are_the_layer_normed_modality_embeddings_plus_the_"
                                              "timestep_embedding",
                                     PINNED + "test_dropout_masks_are_zero_or_one_over_the_keep_probability",
                                     "tests/test_graphed_step.py",
                                     "tests/test_stack.py::test_random_init_slices_update_as_one_batched_call_equal_"
                                     "to_seed_by_seed",
                                     "tests/test_stack.py::test_stacked_updates_take_the_batched_route_their_bodies_"
                                     "allow",
                                     ALGORITHMS + "test_update_save_load_and_continue[dt-scene-play-v0-loss]",
                                     STACK + "[dt-hopper-medium-v2]", STACK + "[frozen-dt-hopper-medium-v2]",
                                     PINNED + "test_dt_agent_window_timesteps_and_mask_follow_the_episode",
                                     SEMANTICS + "test_dt_loss_is_the_mean_squared_error_over_real_steps_only",
                                     "tests/test_rollout.py", "tests/test_models.py"],
    "frozen_dt/frozen_lm_dt.py": [PINNED + "test_sinusoidal_timestep_features_are_sin_then_cos_at_periods_2pi_to_2pi_"
                                            "10000",
                                  PINNED + "test_only_a_pretrained_wholly_frozen_slice_is_shared_between_seeds",
                                  PINNED + "test_context_is_refused_only_when_its_tokens_exceed_the_slices_positions",
                                  PINNED + "test_frozen_dt_defaults_are_the_borrowed_geometry_setting",
                                  PINNED + "test_timestep_features_must_be_a_positive_even_number",
                                  "tests/test_models.py"],
    "frozen_dt/data/views.py": [SEMANTICS + "test_sequence_windows_are_drawn_in_proportion_to_episode_length",
                                "tests/test_views.py"],
    "frozen_dt/data/dataset.py": ["tests/test_boundaries.py", "tests/test_views.py", "tests/test_readers.py"],
    "frozen_dt/training/trainer.py": [PINNED + "test_trainer_logs_interval_means_evaluates_saves_and_keeps_the_"
                                                "strictly_best",
                                      "tests/test_trainer.py", "tests/test_resume_state.py",
                                      "tests/test_stack.py::test_stop_after_stops_at_the_first_checkpoint_past_the_"
                                      "deadline_and_the_resumed_run_equals_the_whole",
                                      "tests/test_stack.py::test_a_single_run_that_diverges_stops_with_a_clear_message",
                                      STACK],  # a stack member's own RNG (Trainer.own_rng)
    "frozen_dt/training/stack.py": ["tests/test_stack.py"],
}

_KEPT_BINARY = "Add_Sub|Sub_Add|Mul_Div|Div_Mul|Pow_Mul|FloorDiv_Div"
_KEPT_COMPARISON = "Eq_NotEq|NotEq_Eq|Lt_LtE|LtE_Lt|Gt_GtE|GtE_Gt|Lt_GtE|GtE_Lt|Gt_LtE|LtE_Gt|Is_IsNot|IsNot_Is"
EXCLUDED_OPERATORS = [
    rf"core/ReplaceBinaryOperator_(?!({_KEPT_BINARY})$).*",
    rf"core/ReplaceComparisonOperator_(?!({_KEPT_COMPARISON})$).*",
    r"core/ReplaceUnaryOperator_(?!(USub_UAdd|Delete_Not|Delete_USub)$).*",
    r"core/ExceptionReplacer", r"core/RemoveDecorator", r"core/VariableReplacer", r"core/VariableInserter",
]


def tool(name: str) -> str:
    """A console script of the running interpreter's environment (cosmic-ray's)."""
    path = Path(sys.executable).parent / name
    if not path.exists():
        raise SystemExit(f"{name} not found beside {sys.executable}: pip install -e '.[mutation]'")
    return str(path)


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}


def snapshot(work: Path, commit: str) -> Path:
    """The committed tree at ``commit`` under ``work/tree``, unpacked afresh on every run (a run stopped mid-mutant
    leaves that mutant in its copy of the file)."""
    tree = work / "tree"
    stamp = work / "tree.commit"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=REPO, capture_output=True, check=True)
    with tempfile.TemporaryFile() as f:
        f.write(archive.stdout)
        f.seek(0)
        with tarfile.open(fileobj=f) as tar:
            tar.extractall(tree, filter="data")
    for name in ("baselines", "envs", "eval"):  # pyproject's package-dir, as links
        (tree / "frozen_dt" / name).symlink_to(Path("..") / name)
    stamp.write_text(commit + "\n")
    return tree


def check_imports(tree: Path, modules: list[str]) -> None:
    names = [module_name(m) for m in modules]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    m = importlib.import_module(name)\n"
            f"    assert m.__file__.startswith({str(tree)!r}), (name, m.__file__)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tree, env={**env(), "PYTHONPATH": str(tree)},
                          capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"the copy does not import as the package:\n{proc.stderr[-2000:]}")


def module_name(path: str) -> str:
    parts = Path(path).with_suffix("").parts
    return ".".join(parts if parts[0] == "frozen_dt" else ("frozen_dt", *parts))


def slug(module: str) -> str:
    return module.replace("/", "__").removesuffix(".py")


def test_command(tests: list[str]) -> str:
    return f"{sys.executable} -m pytest -x -q -p no:cacheprovider " + " ".join(f"'{t}'" for t in tests)


def write_config(work: Path, module: str, timeout: float) -> Path:
    lines = ["[cosmic-ray]", f'module-path = "{module}"', f"timeout = {timeout:.0f}", "excluded-modules = []",
             f"test-command = {json.dumps(test_command(MODULES[module]))}", "",
             "[cosmic-ray.distributor]", 'name = "local"', "",
             "[cosmic-ray.filters.operators-filter]",
             "exclude-operators = [" + ", ".join(json.dumps(e) for e in EXCLUDED_OPERATORS) + "]", ""]
    path = work / f"{slug(module)}.toml"
    path.write_text("\n".join(lines))
    return path


def run(cmd: list[str], tree: Path, log) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=tree, env={**env(), "PYTHONPATH": str(tree)}, capture_output=True, text=True)
    log.write(f"$ {' '.join(cmd)}\n{proc.stdout[-4000:]}{proc.stderr[-4000:]}\n")
    log.flush()
    return proc


def baseline_seconds(tree: Path, module: str, log) -> float:
    started = time.time()
    proc = subprocess.run(test_command(MODULES[module]), shell=True, cwd=tree, env={**env(), "PYTHONPATH": str(tree)},
                          capture_output=True, text=True)
    seconds = time.time() - started
    log.write(f"baseline {module}: rc {proc.returncode} in {seconds:.1f}s\n{proc.stdout[-1500:]}\n")
    log.flush()
    if proc.returncode:
        raise SystemExit(f"{module}: the unmutated tests fail in the copy:\n{proc.stdout[-2000:]}")
    return seconds


def forget_survivors(session: Path) -> None:
    """Mark the session's surviving mutants as not yet run, so that ``exec`` runs them again."""
    with sqlite3.connect(session) as db:
        db.execute("DELETE FROM work_results WHERE test_outcome = 'SURVIVED'")


def session_records(tree: Path, session: Path) -> list[dict]:
    proc = subprocess.run([tool("cosmic-ray"), "dump", str(session)], cwd=tree, env=env(),
                          capture_output=True, text=True, check=True)
    records = []
    for line in proc.stdout.splitlines():
        job, result = json.loads(line)
        records.append({"job": job, "result": result})
    return records


def classify(records: list[dict], module: str, dispositions: dict) -> tuple[dict, list[dict]]:
    counts = dict(mutants=0, killed=0, timeout=0, survived=0, equivalent=0, out_of_scope=0, killed_by_new_test=0,
                  unexplained=0, incompetent=0, pending=0)
    survivors = []
    for r in records:
        mutation = r["job"]["mutations"][0]
        result = r["result"]
        if result is None:
            counts["pending"] += 1
            continue
        if result["worker_outcome"] == "skipped":
            continue  # filtered out (an excluded operator)
        if result["worker_outcome"] == "no-test":
            continue  # nothing to mutate at that occurrence
        counts["mutants"] += 1
        outcome = result["test_outcome"]
        if outcome == "killed":
            counts["timeout" if (result.get("output") or "").strip() == "timeout" else "killed"] += 1
        elif outcome == "incompetent" or result["worker_outcome"] == "exception":
            counts["incompetent"] += 1
        else:
            counts["survived"] += 1
            line = mutation["start_pos"][0]
            key = f"{module}:{line}:{mutation['operator_name'].removeprefix('core/')}:{mutation['occurrence']}"
            reason = dispositions.get(key, "")
            kind = ("equivalent" if reason.startswith("equivalent") else
                    "out_of_scope" if reason.startswith("out of scope") else
                    "killed_by_new_test" if reason.startswith("killed by") else "unexplained")
            counts[kind] += 1
            survivors.append({"key": key, "reason": reason,
                              "diff": "\n".join(l for l in (result.get("diff") or "").splitlines()
                                                if l.startswith(("+", "-")) and not l.startswith(("+++", "---")))})
    return counts, survivors


def hardware() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores (shared), {platform.system()} {platform.release()}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modules", nargs="+", default=list(MODULES), choices=list(MODULES))
    parser.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "frozen-dt-mutation"))
    parser.add_argument("--out", default=str(REPO / "results" / "mutation_score.json"))
    parser.add_argument("--survivors", default=str(REPO / "results" / "mutation_survivors.json"))
    parser.add_argument("--report-only", action="store_true", help="rewrite the JSON from the sessions; run nothing")
    parser.add_argument("--rerun-survived", action="store_true",
                        help="run the surviving mutants of the listed modules again (after new tests were committed)")
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.strip()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if args.report_only:  # the sessions ran on the snapshot's commit; leave a running snapshot alone
        tree, commit = work / "tree", (work / "tree.commit").read_text().strip()
    else:
        tree = snapshot(work, commit)
    out, survivors_out = Path(args.out), Path(args.survivors)
    header = {"tool": "cosmic-ray " + subprocess.run([tool("cosmic-ray"), "--version"], env=env(),
                                                     capture_output=True, text=True).stdout.strip().split()[-1],
              "command": "python tests/mutation_score.py", "commit": commit, "hardware": hardware(),
              "python": sys.version.split()[0], "excluded_operators": EXCLUDED_OPERATORS}
    with open(work / "run.log", "a") as log:
        if not args.report_only:
            check_imports(tree, args.modules)
        for module in args.modules:
            session = work / f"{slug(module)}.sqlite"
            if not args.report_only:
                started = time.time()
                fresh = not session.exists()
                seconds = baseline_seconds(tree, module, log)
                config = write_config(work, module, timeout=max(60.0, 4 * seconds))
                if fresh:
                    run([tool("cosmic-ray"), "init", str(config), str(session)], tree, log)
                    run([tool("cr-filter-operators"), str(session), str(config)], tree, log)
                    run([tool("cr-filter-pragma"), str(session)], tree, log)
                if args.rerun_survived and not fresh:
                    forget_survivors(session)
                print(f"{module}: tests take {seconds:.1f}s unmutated; running its mutants", flush=True)
                run([tool("cosmic-ray"), "exec", str(config), str(session)], tree, log)
            if not session.exists():
                continue
            dispositions = json.loads(DISPOSITIONS.read_text()) if DISPOSITIONS.exists() else {}  # as they are now
            counts, survivors = classify(session_records(tree, session), module, dispositions)
            entry = {**counts, "tests": MODULES[module], "commit": commit, "finished": counts["pending"] == 0,
                     "score": round((counts["killed"] + counts["timeout"] + counts["killed_by_new_test"])
                                    / max(1, counts["mutants"] - counts["equivalent"] - counts["incompetent"]), 3)
                     if counts["mutants"] else None,
                     "when": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%MZ")}
            with report_lock(out):  # another run (or --report-only) may have written other modules meanwhile
                record = {**header, "modules": read_json(out).get("modules", {})}
                all_survivors = read_json(survivors_out)
                seconds = None if args.report_only else round(time.time() - started)
                update(record, all_survivors, module, entry, survivors, seconds)
                write_json(out, record)
                write_json(survivors_out, all_survivors)
            print(f"{module}: {json.dumps(counts)}", flush=True)
    return 0


def update(record: dict, all_survivors: dict, module: str, entry: dict, survivors: list, seconds: int | None) -> None:
    """``module``'s entry and survivors into the files' current contents, and the totals over every module.
    ``seconds``: the run's time; None for a report of sessions run before (--report-only)."""
    report_only = seconds is None
    if report_only and entry["pending"] == 0 and module in record["modules"]:
        entry["commit"] = record["modules"][module]["commit"]  # the commit its (finished) run was on
    if not report_only:
        entry["seconds"] = seconds
    elif module in record["modules"] and "seconds" in record["modules"][module]:
        entry["seconds"] = record["modules"][module]["seconds"]
    record["modules"][module] = entry
    all_survivors[module] = survivors
    finished = [m for m in MODULES if record["modules"].get(m, {}).get("finished")]
    record["partial"] = len(finished) < len(MODULES)
    record["finished_modules"] = finished
    totals = {k: sum(record["modules"][m].get(k, 0) for m in record["modules"])
              for k in ("mutants", "killed", "timeout", "survived", "equivalent", "out_of_scope",
                        "killed_by_new_test", "unexplained", "incompetent")}
    record["totals"] = totals


@contextmanager
def report_lock(out: Path):
    """The score and survivors files have one writer at a time (a second run waits here), which reads them afresh."""
    with open(out.parent / f".{out.name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def write_json(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        f.write(json.dumps(data, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
