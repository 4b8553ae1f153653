"""``frozen-dt export RUN``: a trained policy as one file that runs with torch alone (TorchScript) or onnxruntime
alone (ONNX), observation normalisation and every weight inside (a frozen-dt run's frozen slice included).

Two kinds of policy, by the algorithm's conditioning:

* observation policies (bc, iql, cql, td3bc; gciql with a goal): ``action = policy(observation[, goal])``, each
  ``(B, obs_dim)`` float32 in the env's units, ``action`` ``(B, act_dim)``.
* sequence models (dt, frozen-dt): ``action = policy(observations, actions, returns_to_go, timesteps, mask[,
  goals])`` over a window of the last K steps (K: the run's ``context``), left-padded, the current step last:
  ``observations`` (B, K, obs_dim) float32 raw; ``actions`` (B, K, act_dim) float32, the actions the policy returned
  at the previous steps and a zero row for the current step; ``returns_to_go`` (B, K, 1) float32, in reward units:
  the target return minus the rewards received before each step; ``timesteps`` (B, K) int64, the step's index in
  its episode; ``mask`` (B, K) bool, True on real steps (False on padding, whose values are ignored); ``goals``
  (B, K, obs_dim) on goal-conditioned tasks (the episode's goal at every real step). ``action`` (B, act_dim).

The file's metadata (``policy.json`` next to a TorchScript file's tensors, the ONNX model's ``metadata_props``)
records these inputs, K, the return targets, the run and its checkpoint.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

from frozen_dt.errors import FrozenDTError

FORMATS = ("torchscript", "onnx")
SEQUENCE_INPUTS = ("observations", "actions", "returns_to_go", "timesteps", "mask")


class ObservationPolicy(nn.Module):
    """An observation policy with its observation normalisation (identity for raw-observation algorithms)."""

    def __init__(self, model: nn.Module, mean, std):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, observation: torch.Tensor, goal: torch.Tensor | None = None) -> torch.Tensor:
        observation = (observation - self.mean) / self.std
        if goal is None:
            return self.model(observation)
        return self.model(observation, (goal - self.mean) / self.std)


class SequencePolicy(nn.Module):
    """A DT-style model over one window: normalisation, return-to-go scaling and timestep capping inside, the last
    step's action out (the rollout agent's computation, :class:`frozen_dt.sequence_models.ReturnConditionedAgent`)."""

    def __init__(self, model: nn.Module, mean, std, rtg_scale: float, max_timestep: int):
        super().__init__()
        self.model, self.rtg_scale, self.max_timestep = model, float(rtg_scale), int(max_timestep)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def normalize(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.where(mask.unsqueeze(-1), (values - self.mean) / self.std, torch.zeros_like(values))

    def forward(self, observations, actions, returns_to_go, timesteps, mask, goals: torch.Tensor | None = None):
        mask = mask.to(torch.bool)
        real = mask.unsqueeze(-1).to(observations.dtype)
        batch = {"observations": self.normalize(observations, mask), "actions": actions * real,
                 "returns_to_go": returns_to_go / self.rtg_scale * real,
                 "timesteps": timesteps.clamp(0, self.max_timestep - 1) * mask.to(timesteps.dtype), "mask": mask}
        if goals is not None:
            batch["goals"] = self.normalize(goals, mask)
        return self.model(batch, last_step=True)[:, -1].float()


def exportable(loaded) -> tuple[nn.Module, dict, tuple]:
    """A loaded run (:func:`frozen_dt.eval.runs.load_run`) as an fp32 CPU module, its metadata and example inputs."""
    spec, problem = loaded.settings.spec, loaded.problem
    model = loaded.model.float().cpu().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    obs_dim, act_dim = problem.obs_dim, problem.act_dim
    if loaded.obs_stats is None:
        mean, std = torch.zeros(obs_dim), torch.ones(obs_dim)
    else:
        mean, std = torch.as_tensor(loaded.obs_stats.mean), torch.as_tensor(loaded.obs_stats.std)
    goal = problem.goal_dim is not None
    meta = {"algo": spec.name, "task": loaded.task.name, "run_dir": str(loaded.run_dir), "checkpoint": loaded.checkpoint,
            "step": loaded.step, "obs_dim": obs_dim, "act_dim": act_dim, "goal_conditioned": goal,
            "precision": "fp32"}
    if spec.return_conditioned:
        k = int(model.context)
        module = SequencePolicy(model, mean, std, problem.rtg_scale, problem.max_timestep)
        names = SEQUENCE_INPUTS + (("goals",) if goal else ())
        example = (torch.zeros(1, k, obs_dim), torch.zeros(1, k, act_dim), torch.zeros(1, k, 1),
                   torch.zeros(1, k, dtype=torch.int64), torch.ones(1, k, dtype=torch.bool))
        example += (torch.zeros(1, k, obs_dim),) if goal else ()
        meta.update(kind="sequence", context=k, inputs=list(names), rtg_scale=problem.rtg_scale,
                    max_timestep=problem.max_timestep,
                    return_targets=[] if goal else list(loaded.config.get("eval_targets") or loaded.task.rtg_targets))
    else:
        module = ObservationPolicy(model, mean, std)
        names = ("observation",) + (("goal",) if goal else ())
        example = (torch.zeros(1, obs_dim),) + ((torch.zeros(1, obs_dim),) if goal else ())
        meta.update(kind="observation", inputs=list(names))
    return module.eval(), meta, example


def default_out(loaded, fmt: str) -> Path:
    return loaded.run_dir / f"policy-{loaded.checkpoint}.{'pt' if fmt == 'torchscript' else 'onnx'}"


def export_run(run_dir, *, fmt: str = "torchscript", out=None, checkpoint: str = "last") -> tuple[Path, dict]:
    """Write the run's policy in ``fmt`` to ``out`` (default: ``<run dir>/policy-<checkpoint>.pt|.onnx``)."""
    from frozen_dt.eval.runs import load_run
    from frozen_dt.paths import atomic_path

    if fmt not in FORMATS:
        raise FrozenDTError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    loaded = load_run(Path(run_dir), checkpoint, "cpu")
    module, meta, example = exportable(loaded)
    out = Path(out).expanduser() if out else default_out(loaded, fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta["format"] = fmt
    with atomic_path(out) as tmp:
        if fmt == "torchscript":
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the models' shape checks are traced as constants (batches of any size run)
                traced = torch.jit.trace(module, example, check_trace=False, strict=False)
            torch.jit.save(traced, str(tmp), _extra_files={"policy.json": json.dumps(meta)})
        else:
            write_onnx(module, example, meta, tmp)
    return out, meta


def write_onnx(module: nn.Module, example: tuple, meta: dict, path: Path) -> None:
    try:
        import onnx
    except ImportError:
        raise FrozenDTError("--format onnx needs onnx (pip install 'frozen-dt[export]')") from None
    names = meta["inputs"]
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = tuple(torch.cat([x, x]) for x in example)  # batch 2: a size-1 dim would be specialised
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, example, str(path), input_names=list(names), output_names=["action"],
                          dynamic_shapes=tuple({0: batch} for _ in example), dynamo=True, opset_version=18,
                          verbose=False)
    model = onnx.load(str(path))
    for key, value in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, json.dumps(value)
    onnx.save(model, str(path))


def read_metadata(path) -> dict:
    """The metadata an exported file carries."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        return {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
    files = {"policy.json": ""}
    torch.jit.load(str(path), _extra_files=files)
    return json.loads(files["policy.json"])
