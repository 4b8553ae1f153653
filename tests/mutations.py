"""Mutation check: each defining rule's one-line mutation must make its test fail (tests/test_semantics.py; the
stacked seeds' rules: tests/test_stack.py; the rules recomputed by hand: tests/test_pinned_rules.py,
tests/test_pinned_stats.py).

    python tests/mutations.py [--out results/mutations.json]

For each mutation below the source line is replaced in place (the file must be unmodified in git, and is restored
afterwards, also on Ctrl-C), the named tests run in a subprocess, and each must fail.
A mutation counts as caught when every test named for it fails on its own. The unmutated tests run first and must
pass. Exit status 1 if any mutation survives.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
T = "tests/test_semantics.py::"
S = "tests/test_stack.py::test_seed_k_of_a_stack_of_3_equals_seed_k_alone"
P = "tests/test_pinned_rules.py::"
PS = "tests/test_pinned_stats.py::"
MUTATIONS = [  # (name, file, original line (stripped), mutated line, tests that must fail)
    ("Baselines: observation std eps 1e-6 instead of CORL's 1e-3", "baselines/common.py",
     "return arg(1e-3, \"added to the observation std when normalizing observations (CORL's compute_mean_std eps)\",",
     "return arg(1e-6, \"added to the observation std when normalizing observations (CORL's compute_mean_std eps)\",",
     [T + "test_observations_are_normalized_with_the_references_eps"]),
    ("DT: GPT-2 residual projections scaled at init (not kzl's copy of GPT-2)", "baselines/dt.py",
     "nn.init.normal_(param, 0.0, 0.02)",
     "nn.init.normal_(param, 0.0, 0.02 / (2 * n_layer) ** 0.5 if name.endswith(('c_proj.weight', 'mlp.2.weight')) else 0.02)",
     [T + "test_dt_is_initialised_as_the_reference_gpt2"]),
    ("IQL: reversed expectile weights", "baselines/common.py",
     "weight = torch.where(diff > 0, expectile, 1.0 - expectile)",
     "weight = torch.where(diff > 0, 1.0 - expectile, expectile)",
     [T + "test_expectile_loss_weights_positive_errors_by_the_expectile",
      T + "test_iql_value_regresses_to_the_expectile_of_the_action_values"]),
    ("IQL: AWR weights not clipped at 100", "baselines/iql.py",
     "weights = torch.exp(first.beta * advantage.detach()).clamp(max=EXP_ADV_MAX)",
     "weights = torch.exp(first.beta * advantage.detach())",
     [T + "test_iql_actor_loss_is_the_awr_weighted_log_likelihood"]),
    ("IQL: AWR weights exp(-beta * advantage)", "baselines/iql.py",
     "weights = torch.exp(first.beta * advantage.detach()).clamp(max=EXP_ADV_MAX)",
     "weights = torch.exp(-first.beta * advantage.detach()).clamp(max=EXP_ADV_MAX)",
     [T + "test_iql_actor_loss_is_the_awr_weighted_log_likelihood"]),
    ("IQL: resume drops the run's cosine horizon", "baselines/iql.py",
     "self.actor_schedule.T_max = horizon",
     "pass",
     [T + "test_iql_keeps_its_runs_cosine_horizon_on_resume"]),
    ("CQL: conservative penalty with flipped sign", "baselines/cql.py",
     "q_loss = td_loss + first.cql_alpha * penalty",
     "q_loss = td_loss - first.cql_alpha * penalty",
     [T + "test_cql_penalty_lowers_q_on_out_of_distribution_actions"]),
    ("GCIQL: actor's Q not normalized", "baselines/gciql.py",
     "q_loss = -q.mean(-1) / (q.abs().mean(-1).detach() + 1e-6)",
     "q_loss = -q.mean(-1)",
     [T + "test_gciql_actor_loss_is_scale_free_in_q"]),
    ("TD3+BC: Q term not normalized by mean |Q|", "baselines/td3bc.py",
     "lam = c.alpha / (q.abs().mean(-1).detach() + 1e-6)  # per seed",
     "lam = c.alpha",
     [T + "test_td3bc_actor_step_is_scale_free_in_q_and_delayed"]),
    ("TD3+BC: actor updated every step", "baselines/td3bc.py",
     "if first.updates % c.policy_freq == 0:",
     "if True:",
     [T + "test_td3bc_actor_step_is_scale_free_in_q_and_delayed"]),
    ("DT: loss over padded steps", "frozen_dt/sequence_models.py",
     'return masked_mean((predicted.float() - tensors["actions"]) ** 2, tensors["mask"])',
     'return ((predicted.float() - tensors["actions"]) ** 2).mean()',
     [T + "test_dt_loss_is_the_mean_squared_error_over_real_steps_only"]),
    ("DT: attention not causal", "baselines/dt.py",
     "causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()",
     "causal = torch.ones(t, t, dtype=torch.bool, device=x.device)",
     [T + "test_dt_action_at_step_t_depends_only_on_tokens_up_to_its_state"]),
    ("Sequence view: window starts not uniform over all steps", "frozen_dt/data/views.py",
     "starts = rng.integers(0, len(self), size=batch_size)",
     "starts = rng.integers(0, len(self) // 2, size=batch_size)",
     [T + "test_sequence_windows_are_drawn_in_proportion_to_episode_length"]),
    ("Frozen weights: fingerprint check a no-op", "frozen_dt/parameters.py",
     "if len(saved) != len(now) or any(abs(a - b) > 1e-9 * max(abs(a), abs(b)) for a, b in zip(saved, now)):",
     "if False:",
     [T + "test_frozen_weights_other_than_the_runs_are_refused_on_resume_and_eval"]),
    ("Stack: the seeds' losses averaged, not summed (each seed's gradient divided by N)", "frozen_dt/sequence_models.py",
     "torch.stack(losses).sum().backward()  # each seed's parameters get exactly its own loss's gradient",
     "torch.stack(losses).mean().backward()",
     [S + "[frozen-dt-hopper-medium-v2]"]),
    ("Stack: a seed's dropout drawn from the process RNG, not its own", "frozen_dt/training/trainer.py",
     "if self.own_torch_rng is None:",
     "if True:",
     [S + "[dt-hopper-medium-v2]"]),
    ("Stack: every seed's vmapped networks use seed 0's parameters", "frozen_dt/training/stack.py",
     "params = {**fixed, **{name: torch.stack([m.get_parameter(name) for m in modules]) for name in names}}",
     "params = {**fixed, **{name: torch.stack([modules[0].get_parameter(name) for m in modules]) for name in names}}",
     [S + "[iql-hopper-medium-v2]", S + "[bc-hopper-medium-v2]", S + "[dt-hopper-medium-v2]"]),
    ("Stack: DT's vmapped seeds draw their dropout masks from the process RNG", "frozen_dt/sequence_models.py",
     "with rng():  # the seed's masks, from its own RNG as it draws them alone",
     "if True:",
     [S + "[dt-hopper-medium-v2]"]),
    ("Stack: TD3+BC's smoothing noise from the process RNG, not the seed's", "baselines/td3bc.py",
     "with rng():",
     "with contextlib.nullcontext():",
     [S + "[td3bc-hopper-medium-v2]"]),
    ("Stack: CQL's random draws from the process RNG, not the seed's", "baselines/cql.py",
     "with rng():",
     "with contextlib.nullcontext():",
     [S + "[cql-hopper-medium-v2]"]),
    ("Device sampling: the generator is not restored on resume", "frozen_dt/data/views.py",
     'self.set_state(state["generator"])',
     "pass",
     ["tests/test_algorithms.py::test_device_sampling_trains_and_resumes_exactly[dt]"]),
    ("DT agent: the return-to-go not lowered by each reward", "frozen_dt/sequence_models.py",
     'w["rtg"] -= float(reward) / self.rtg_scale',
     "pass",
     [P + "test_dt_agent_return_to_go_window_is_target_minus_the_rewards_so_far"]),
    ("CQL(H): the uniform proposals' log-density dropped from the logsumexp", "baselines/cql.py",
     "proposals = torch.cat([stacked_call(qs, obs, random_actions) - log_uniform,",
     "proposals = torch.cat([stacked_call(qs, obs, random_actions),",
     [P + "test_cql_penalty_is_the_importance_sampled_logsumexp_of_its_three_action_sets"]),
    ("CQL(H): the policy's log-probability of its actions at s dropped from the logsumexp", "baselines/cql.py",
     "stacked_call(qs, obs, current_actions) - current_log_pi], dim=2)",
     "stacked_call(qs, obs, current_actions)], dim=2)",
     [P + "test_cql_penalty_is_the_importance_sampled_logsumexp_of_its_three_action_sets"]),
    ("Target networks: Polyak's weights swapped (target <- tau * target + (1 - tau) * online)", "baselines/common.py",
     "p_t.mul_(1.0 - tau).add_(p, alpha=tau)",
     "p_t.mul_(tau).add_(p, alpha=1.0 - tau)",
     [P + f"test_target_networks_move_by_tau_toward_the_online_networks_after_an_update[{name}]"
      for name in ("cql", "iql", "td3bc", "gciql")]),
    ("Target networks: the target critics never move", "baselines/common.py",
     "soft_update(self.target_q, nn.ModuleList([self.model.q1, self.model.q2]), self.tau)",
     "pass",
     [P + f"test_target_networks_move_by_tau_toward_the_online_networks_after_an_update[{name}]"
      for name in ("cql", "iql", "td3bc", "gciql")]),
    ("OGBench: every finished episode counted a success", "eval/rollout.py",
     'success = bool(infos.get("success", np.zeros(n))[s]) if infos.get("_success", np.zeros(n))[s] else False',
     "success = bool(done[s])",
     [P + "test_do_nothing_ogbench_rollout_cut_short_reports_no_success",
      P + "test_success_is_the_info_success_at_the_episodes_last_step"]),
    ("Stats: the across-seed summary resamples episodes, not seeds", "eval/stats.py",
     'summary, ci_over = summarize_runs(means[:, None]), f"seeds (bootstrap, n={len(per_run)})"',
     'summary, ci_over = summarize_runs(np.concatenate(per_run)[:, None]), f"seeds (bootstrap, n={len(per_run)})"',
     [PS + "test_across_seed_interval_resamples_seeds_not_episodes"]),
    ("Stats: the 2-4 seed t-interval over the episodes, not the seed means", "eval/stats.py",
     'summary["ci_low"], summary["ci_high"] = t_interval(means)',
     'summary["ci_low"], summary["ci_high"] = t_interval(np.concatenate(per_run))',
     [PS + "test_two_to_four_seeds_get_a_t_interval_over_the_seed_means_not_their_episodes"]),
    ("Stats: the stratified bootstrap draws the same runs for every task", "eval/stats.py",
     "rows = rng.integers(0, n_runs, size=(size, n_runs, n_tasks))  # each task's runs resampled independently",
     "rows = rng.integers(0, n_runs, size=(size, n_runs, 1))",
     [PS + "test_stratified_bootstrap_draws_each_tasks_runs_independently"]),
    ("Frozen slice: a left-padded query row sees no key", "frozen_dt/backbones/slice.py",
     "allowed = (distance >= 0) & (padding[:, None, :] | (distance == 0))  # (B, T, T)",
     "allowed = (distance >= 0) & padding[:, None, :]",
     ["tests/test_backbones.py::test_left_padded_window_is_finite_and_equals_the_math_backend[gemma3]"]),
    ("Frozen slice: sliding layers see the whole window", "frozen_dt/backbones/slice.py",
     'masks["sliding_attention"] = (allowed & (distance < config.sliding_window))[:, None]',
     'masks["sliding_attention"] = allowed[:, None]',
     ["tests/test_backbones.py::test_masks_are_built_up_front_for_sliding_layers"]),
    ("Sync-free step: the masked mean divides by the steps, not the entries", "frozen_dt/sequence_models.py",
     "per_step = values.numel() // mask.numel()",
     "per_step = 1",
     ["tests/test_sync_free.py::test_the_action_loss_is_the_mean_over_the_real_steps"]),
    ("--cuda-graph: the learning-rate schedule never advances", "frozen_dt/sequence_models.py",
     "self.scheduler.step()  # fills the optimizer's device-tensor rate for the next step",
     "pass",
     ["tests/test_graphed_step.py::test_the_graph_ready_step_computes_the_ordinary_step[dt]"]),
    ("Stack: every per-seed slice runs seed 0's frozen weights", "frozen_dt/training/stack.py",
     "return {name: torch.stack([m.get_parameter(name).detach() for m in modules]).to(dtype or p.dtype)",
     "return {name: torch.stack([modules[0].get_parameter(name).detach() for m in modules]).to(dtype or p.dtype)",
     ["tests/test_stack.py::test_random_init_slices_update_as_one_batched_call_equal_to_seed_by_seed[gemma3-fp32]"]),
    ("Evaluation: conditions in one env reset on their global episode number", "eval/rollout.py",
     "seeds = (lambda e: seed + e) if seed_period is None else (lambda e: seed + e % seed_period)",
     "seeds = lambda e: seed + e  # noqa: E731",
     ["tests/test_rollout.py::test_every_seed_and_target_in_one_vector_env_equals_each_alone"]),
    ("Evaluation: env workers forked from a CUDA process", "eval/rollout.py",
     'WORKER_START = "forkserver"  # how env worker processes start (multiprocessing context)',
     'WORKER_START = "fork"',
     ["tests/test_rollout.py::test_env_workers_start_from_a_forkserver"]),
    ("TD3+BC: target policy smoothing noise not clipped", "baselines/td3bc.py",
     "noise = (torch.stack(draws) * c.policy_noise).clamp(-c.noise_clip, c.noise_clip)",
     "noise = torch.stack(draws) * c.policy_noise",
     [P + "test_td3bc_update_rows_are_recomputed_from_the_networks_before_it"]),
    ("TD3+BC: the BC term subtracted in the actor's step", "baselines/td3bc.py",
     "optimizers_step([a.actor_opt for a in algorithms], q_term + bc_term)",
     "optimizers_step([a.actor_opt for a in algorithms], q_term - bc_term)",
     [P + "test_td3bc_update_rows_are_recomputed_from_the_networks_before_it"]),
    ("GCIQL: the BC term subtracted in the step", "baselines/gciql.py",
     "optimizers_step([a.optimizer for a in algorithms], value_loss + critic_loss + q_loss + bc_loss)",
     "optimizers_step([a.optimizer for a in algorithms], value_loss + critic_loss + q_loss - bc_loss)",
     [P + "test_gciql_update_rows_are_recomputed_from_the_networks_before_it"]),
    ("Sequence models: the warm-up one step ahead", "frozen_dt/sequence_models.py",
     "return lambda step: min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0",
     "return lambda step: min((step + 2) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0",
     [P + "test_sequence_update_is_adamw_on_the_masked_mse_with_warmup_and_clipping"]),
    ("Frozen-DT: a random-init slice shared by every seed of a stack", "frozen_dt/frozen_lm_dt.py",
     'if config.init == "pretrained" and config.freeze == "all":',
     'if config.freeze == "all":',
     [P + "test_only_a_pretrained_wholly_frozen_slice_is_shared_between_seeds"]),
    ("Leaderboard: runs that differ only in a setting no column names (lr) merged into one row", "eval/leaderboard.py",
     'groups.setdefault((tuple(e["key"].items()), e["config"]), []).append(e)',
     'groups.setdefault((tuple(e["key"].items()), ()), []).append(e)',
     ["tests/test_evaluate.py::test_a_sweep_over_a_setting_the_columns_do_not_name_gives_one_row_per_value_saying_which"]),
    ("Leaderboard: the difference from the reference row taken the wrong way round (reference - row)",
     "eval/leaderboard.py", "w = welch_difference(means, ref_means)", "w = welch_difference(ref_means, means)",
     ["tests/test_evaluate.py::test_a_reference_row_gives_every_other_row_welchs_interval_on_its_difference"]),
    ("Leaderboard: a reference compared across data sources and checkpoint steps", "eval/leaderboard.py",
     'CONDITION = ("task", "target", "dataset_source", "steps")  # what rows compared with a reference share',
     'CONDITION = ("task", "target")',
     ["tests/test_evaluate.py::test_rows_that_differ_in_freeze_are_told_apart_and_a_reference_is_only_compared_"
      "within_its_condition"]),
    ("Stats: Welch's 'no spread' read from var() summing to exactly 0 (1e-32 for equal values)", "eval/stats.py",
     "if min(x.size, y.size) < 2 or (np.ptp(x) == 0 and np.ptp(y) == 0):  # equal values' var() can be 1e-32, not 0",
     "if min(x.size, y.size) < 2 or x.var() + y.var() == 0.0:",
     [PS + "test_welch_difference_is_the_welch_satterthwaite_t_test_and_interval"]),
    ("Science: Mann-Whitney with scipy's auto method (a normal approximation under ties)",
     "frozen_dt/science/analysis.py",
     "method = stats.PermutationMethod(n_resamples=np.inf) if exact else \\",
     'method = "auto" if exact else \\', ["tests/test_science.py::test_holm_and_tests"]),
    ("Science: analyze counts a leftover result file as one of the phase's runs", "frozen_dt/science/analysis.py",
     "return [read_json(f) for f in files if names is None or f.stem in names]",
     "return [read_json(f) for f in files]", ["tests/test_science.py::test_analyze_phase_end_to_end"]),
    ("Held-out error: a run trained on the whole file (held-out episodes included) accepted",
     "frozen_dt/science/heldout.py",
     'if path is None or not names_file(Path(path), heldout.parent / "train.pkl") \\',
     'if path is None and not names_file(Path(path), heldout.parent / "train.pkl") \\',
     ["tests/test_science.py::test_heldout_split_trains_and_measures_a_run_end_to_end"]),
    ("Held-out per-step error: the window a step is read from ends one step before it",
     "frozen_dt/data/views.py",
     "return self._batch(*self._left_padded(steps - lengths + 1, lengths))",
     "return self._batch(*self._left_padded(steps - lengths, lengths))",
     ["tests/test_science.py::test_heldout_per_step_error_reads_each_step_from_the_window_that_ends_at_it"]),
]


def run_tests(tests: list[str]) -> tuple[bool, str]:
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode == 0, lines[-1] if lines else proc.stderr.strip()[-200:]


def mutate(path: Path, original: str, mutated: str) -> str:
    """The source of ``path`` with its one line ``original`` (stripped) replaced by ``mutated``, indentation kept."""
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    hits = [i for i, line in enumerate(lines) if line.strip() == original]
    if len(hits) != 1:
        raise SystemExit(f"{path}: expected one line {original!r}, found {len(hits)}")
    line = lines[hits[0]]
    lines[hits[0]] = line[: len(line) - len(line.lstrip())] + mutated + "\n"
    return "".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args()
    files = sorted({m[1] for m in MUTATIONS})
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *files], cwd=REPO, capture_output=True,
                           text=True).stdout.strip()
    if dirty:
        raise SystemExit(f"refusing to mutate files with uncommitted changes:\n{dirty}")
    tests = sorted({t for m in MUTATIONS for t in m[4]})
    ok, summary = run_tests(tests)
    if not ok:
        raise SystemExit(f"the unmutated tests must pass first: {summary}")
    print(f"unmutated: {summary}")
    report = []
    for name, file, original, mutated, mutation_tests in MUTATIONS:
        path = REPO / file
        source = path.read_text()
        started = time.time()
        try:
            path.write_text(mutate(path, original, mutated))
            outcomes = {test: run_tests([test]) for test in mutation_tests}  # each test on its own must fail
        finally:
            path.write_text(source)
        caught = not any(passed for passed, _ in outcomes.values())
        report.append({"mutation": name, "file": file, "original": original, "mutated": mutated, "caught": caught,
                       "tests": {test.split("::")[-1]: summary for test, (_, summary) in outcomes.items()},
                       "seconds": round(time.time() - started, 1)})
        print(f"{'caught  ' if caught else 'SURVIVED'} {name}: " +
              "; ".join(f"{test.split('::')[-1]}: {summary}" for test, (_, summary) in outcomes.items()), flush=True)
    survived = [r["mutation"] for r in report if not r["caught"]]
    print(f"{len(report) - len(survived)} of {len(report)} mutations caught" +
          (f"; survived: {', '.join(survived)}" if survived else ""))
    if args.out:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
        record = {"commit": commit, "python": sys.version.split()[0], "command": "python tests/mutations.py",
                  "caught": len(report) - len(survived), "total": len(report), "mutations": report}
        Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
