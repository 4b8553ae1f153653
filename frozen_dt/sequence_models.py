"""What the DT baseline and the frozen-LM DT share: the DT-style model around a causal body, its training by action
regression, its rollout agent and its hyperparameters.

Model (:class:`ReturnConditionedTransformer`). A K-step window is read as the Decision Transformer reads it: three
tokens per step, interleaved as ``(R_1, s_1, a_1, R_2, s_2, a_2, ...)`` (3K tokens), each the sum of a linear
embedding of its modality and an embedding of the step's timestep; then an input LayerNorm, dropout, a causal
transformer body, an output LayerNorm, and a ``tanh`` action head read from the *state* tokens (the action of step
t is predicted from ``R_1..s_t``). The models differ in their body and timestep embedding only:
:class:`frozen_dt.baselines.dt.DecisionTransformer` (a small GPT trained from scratch, DT's learned timestep
table) and :class:`frozen_dt.frozen_lm_dt.FrozenLMDecisionTransformer` (a frozen LM slice, sinusoidal timestep
features). With a goal dimension the first token of each step embeds the goal instead of the return-to-go.

Batches are dicts of tensors as :class:`~frozen_dt.data.views.SequenceView` samples them: ``observations``
(B, K, obs), ``actions`` (B, K, act), ``returns_to_go`` (B, K, 1), ``timesteps`` (B, K) int, ``mask`` (B, K) bool
(left padding = False). Observations are expected normalized and returns-to-go scaled.

Training (:class:`SequenceModelAlgorithm`), as kzl/decision-transformer's ``SequenceTrainer``: MSE between
predicted and dataset actions over the real (unpadded) steps, AdamW over the parameters that require grad, a linear
warm-up ``lr * min((step + 1) / warmup_steps, 1)``, gradient-norm clipping. With ``precision="bf16"`` the forward pass
runs under bf16 autocast (the loss in float32), on CPU and CUDA alike; fp32 is honoured on both.

Acting (:class:`ReturnConditionedAgent`): one context window per env, as DT's ``evaluate_episode_rtg`` for one env.

:class:`SequenceConfig` holds the hyperparameters both models read, with the DT paper's values as defaults
(kzl/decision-transformer gym/experiment.py, transcribed in shared/ANCHORS.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from frozen_dt.algorithms import run_precision
from frozen_dt.data.dataset import ObsStats
from frozen_dt.data.views import SequenceView, sampled_on
from frozen_dt.parameters import load_trainable_state_dict, trainable_state_dict
from frozen_dt.settings import arg
from frozen_dt.training.graphed import GraphedStep
from frozen_dt.training.stack import stacked_call, stacked_frozen
from frozen_dt.training.trainer import metrics


@dataclass
class SequenceConfig:
    """Hyperparameters of DT-style training (the DT paper's defaults)."""

    context: int = arg(20, "context length K (steps per window)", check="positive")
    batch_size: int = arg(64, "batch size (windows)", check="positive")
    lr: float = arg(1e-4, "AdamW learning rate", check="positive")
    weight_decay: float = arg(1e-4, "AdamW weight decay", check="non_negative")
    warmup_steps: int = arg(10_000, "linear learning-rate warm-up steps (0: none)", check="non_negative")
    grad_clip: float = arg(0.25, "gradient-norm clipping threshold", check="positive")
    dropout: float = arg(0.1, "dropout (DT: embeddings, attention, residuals; frozen-dt: its input embeddings)",
                         check="fraction")


def autocast(device: torch.device, precision: str = "fp32", cache: bool = True):
    """bf16 autocast on ``device`` with ``precision="bf16"``; otherwise (fp32) a no-op context. ``cache=False`` for
    a step captured as a CUDA graph (autocast's cache of cast weights must not outlive the capture)."""
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision {precision!r} (resolve 'auto' with AlgorithmSpec.precision first)")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16",
                          cache_enabled=cache)


def compiled(module: nn.Module, device: torch.device):
    """``torch.compile(module)``: on cuda with CUDA graphs (mode reduce-overhead: the fixed-shape training step is
    launch-bound at these sizes), elsewhere inductor's default. Parameters and state dicts stay the module's own."""
    return torch.compile(module, mode="reduce-overhead" if device.type == "cuda" else None)


def linear_warmup(warmup_steps: int):
    return lambda step: min((step + 1) / warmup_steps, 1.0) if warmup_steps > 0 else 1.0


def interleave(returns: torch.Tensor, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """(B, K, d) x 3 -> (B, 3K, d) ordered R_1, s_1, a_1, R_2, ... (works for (B, K) masks too)."""
    stacked = torch.stack((returns, states, actions), dim=2)  # (B, K, 3, ...)
    return stacked.reshape(stacked.shape[0], -1, *stacked.shape[3:])


class ReturnConditionedTransformer(nn.Module):
    """DT-style embeddings, a causal ``body(x (B, T, d), attention_mask (B, T) bool, last_only=False) -> (B, T, d)``
    (with ``last_only``, the last token's (B, 1, d)), tanh head.

    With ``goal_dim`` the model is goal-conditioned: each step's first token embeds the goal (``batch["goals"]``,
    (B, K, goal_dim)) instead of the return-to-go.
    """

    frozen_modules: tuple[str, ...] = ()  # submodules whose tensors checkpoints leave out (trainable params excepted)
    vmappable: bool = False  # its training forward runs under torch.func.vmap (seeds stacked as one batched call)

    def __init__(self, obs_dim: int, act_dim: int, width: int, *, body: nn.Module, timestep_embedding: nn.Module,
                 context: int, dropout: float, input_ln: bool = True, output_ln: bool = True,
                 goal_dim: int | None = None):
        super().__init__()
        self.obs_dim, self.act_dim, self.width, self.context = int(obs_dim), int(act_dim), int(width), int(context)
        self.goal_dim = goal_dim
        self.embed_timestep = timestep_embedding
        if goal_dim is None:
            self.embed_return = nn.Linear(1, width)
        else:  # goal-conditioned (OGBench): the goal token takes the return token's place
            self.embed_goal = nn.Linear(goal_dim, width)
        self.embed_state = nn.Linear(obs_dim, width)
        self.embed_action = nn.Linear(act_dim, width)
        self.input_ln = nn.LayerNorm(width) if input_ln else nn.Identity()
        self.drop = nn.Dropout(dropout)
        self.body = body
        self.output_ln = nn.LayerNorm(width) if output_ln else nn.Identity()
        self.predict_action = nn.Sequential(nn.Linear(width, act_dim), nn.Tanh())

    def dropout_shapes(self, batch_size: int) -> dict[str, tuple[int, ...]]:
        """The model's dropout masks for a training batch of ``batch_size`` windows, in the order they are drawn:
        here the input embeddings' (B, 3K, d); a body with dropout of its own adds its masks."""
        return {"embed": (batch_size, 3 * self.context, self.width)}

    def draw_dropout(self, batch_size: int) -> dict[str, torch.Tensor]:
        """Dropout masks for one training forward, drawn from the torch RNG: 0 where dropped, ``1 / (1 - p)`` where
        kept. Drawn up front (not inside the layers) so that seeds trained as one batched call (vmap) each use the
        masks of their own RNG, exactly as that seed alone draws them. Each mask is drawn as torch's CPU dropout
        (``nn.Dropout``, and SDPA's ``dropout_p``) draws its own: ``bernoulli_(1 - p)`` then ``/ (1 - p)``, in the
        order those layers ran, so runs written before the masks were drawn here resume on the same masks."""
        p, device = self.drop.p, self.embed_state.weight.device
        return {name: torch.empty(shape, device=device).bernoulli_(1.0 - p).div_(1.0 - p)
                for name, shape in self.dropout_shapes(batch_size).items()}

    def dropout_masks(self, batch: dict) -> dict[str, torch.Tensor] | None:
        """The masks a training forward applies: the batch's own (``batch["dropout"]``, drawn by the caller), else
        drawn now; None in eval mode or without dropout."""
        if "dropout" in batch:
            return batch["dropout"]
        if not self.training or self.drop.p == 0.0:
            return None
        return self.draw_dropout(batch["mask"].shape[0])

    def forward(self, batch: dict, last_step: bool = False) -> torch.Tensor:
        """Predicted actions (B, K, act_dim), one per step, each from that step's state token.

        With ``last_step`` only the last step's action (B, 1, act_dim), which is all acting needs: the window's
        final action token (after the last state token, so unseen by it) is left out, and the body returns the
        last token alone (``last_only``; DT's GPT runs its last layer for that one query, a frozen slice runs in
        full and is sliced). The result equals ``forward(batch)[:, -1:]`` up to float rounding.
        """
        noise = None if last_step else self.dropout_masks(batch)  # acting (last_step) runs in eval mode
        x, mask = self.tokens(batch, noise)
        if last_step:
            x, mask = x[:, :-1], mask[:, :-1]  # ends on the last state token
            return self.predict_action(self.output_ln(self.run_body(x, mask, noise, last_only=True)))
        return self.readout(self.run_body(x, mask, noise))

    def run_body(self, x: torch.Tensor, mask: torch.Tensor, noise: dict | None, last_only: bool = False):
        """The body on the tokens (a body with dropout of its own takes its masks from ``noise``)."""
        return self.body(x, mask, last_only=last_only)

    def tokens(self, batch: dict, noise: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The body's input: embedded, interleaved tokens after the input LayerNorm and dropout (B, 3K, d), and
        their mask (B, 3K). ``noise``: the dropout masks (:meth:`dropout_masks`), None for no dropout."""
        time = self.embed_timestep(batch["timesteps"])
        condition = self.embed_return(batch["returns_to_go"]) if self.goal_dim is None else \
            self.embed_goal(batch["goals"])
        tokens = interleave(condition + time,
                            self.embed_state(batch["observations"]) + time,
                            self.embed_action(batch["actions"]) + time)
        mask = batch["mask"].to(torch.bool)
        x = self.input_ln(tokens)
        return (x if noise is None else x * noise["embed"].to(x.dtype)), interleave(mask, mask, mask)

    def readout(self, hidden: torch.Tensor) -> torch.Tensor:
        """Predicted actions (B, K, act_dim) from the body's output (B, 3K, d): the head on the state tokens."""
        x = self.output_ln(hidden)
        state_tokens = x.reshape(x.shape[0], x.shape[1] // 3, 3, self.width)[:, :, 1]
        return self.predict_action(state_tokens)

    @torch.no_grad()
    def act(self, observations: torch.Tensor, actions: torch.Tensor, returns_to_go: torch.Tensor,
            timesteps: torch.Tensor) -> torch.Tensor:
        """The next action (act_dim,) from an episode's history, as DT's ``get_action``.

        ``observations`` (T, obs) normalized, ``returns_to_go`` (T,) or (T, 1) scaled, ``timesteps`` (T,): the
        current step last. ``actions``: the T - 1 actions taken so far (a T-th row, a placeholder for the current
        action, is accepted and ignored: the state token precedes it). Only the last ``context`` steps are read;
        shorter histories are left-padded like the training windows.
        """
        t = observations.shape[0]
        if actions.shape[0] == t - 1:
            actions = torch.cat([actions, actions.new_zeros(1, self.act_dim)])
        k = min(t, self.context)
        pad = self.context - k
        device = self.embed_state.weight.device

        def window(x: torch.Tensor, dtype) -> torch.Tensor:
            x = x[-k:].to(device=device, dtype=dtype)
            return torch.cat([x.new_zeros((pad, *x.shape[1:])), x])[None]

        batch = {
            "observations": window(observations, torch.float32),
            "actions": window(actions, torch.float32),
            "returns_to_go": window(returns_to_go.reshape(-1, 1), torch.float32),
            "timesteps": window(timesteps.reshape(-1), torch.long),
            "mask": window(torch.ones(t, dtype=torch.bool), torch.bool),
        }
        return self(batch)[0, -1]


class SequenceModelAlgorithm:
    """A :class:`ReturnConditionedTransformer` trained on :class:`SequenceView` windows by action regression."""

    def __init__(self, model: ReturnConditionedTransformer, view: SequenceView, config: SequenceConfig, *,
                 device: str | torch.device = "cpu", precision: str = "fp32", compile: bool = False,
                 cuda_graph: bool = False):
        self.device = torch.device(device)
        self.precision = precision
        self.model = model.to(self.device)
        self.compile = compile
        self.forward = compiled(self.model, self.device) if compile else self.model
        self.view = view
        self.obs_stats = view.obs_stats
        self.batch_size = config.batch_size
        self.grad_clip = config.grad_clip
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.base_lr, self.schedule = config.lr, linear_warmup(config.warmup_steps)
        self.graphed = self.graph_ready(config) if cuda_graph else None
        if self.graphed is None:
            self.optimizer = torch.optim.AdamW(self.params, lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self.schedule)

    def graph_ready(self, config: SequenceConfig) -> GraphedStep:
        """``--cuda-graph``: the whole step as one function of static device tensors (:meth:`graph_step`), captured
        as a CUDA graph on cuda (:class:`~frozen_dt.training.graphed.GraphedStep`), run eagerly elsewhere. Its AdamW
        is fused (capturable on cuda) and reads its learning rate from a device tensor the schedule fills."""
        from frozen_dt.data.views import DeviceSampler
        from frozen_dt.errors import FrozenDTError

        if self.compile:
            raise FrozenDTError("--cuda-graph and --compile both make CUDA graphs: choose one")
        if not isinstance(self.view, DeviceSampler):
            raise FrozenDTError("--cuda-graph draws its batches on the device: use --device-sampling on (or auto on "
                                "cuda); goal-conditioned windows are sampled on the host")
        lr = torch.tensor(float(config.lr), device=self.device)
        self.optimizer = torch.optim.AdamW(self.params, lr=lr, weight_decay=config.weight_decay, fused=True,
                                           capturable=self.device.type == "cuda")
        draw = lambda out: torch.randint(0, len(self.view), out.shape, device=self.device,  # noqa: E731
                                         generator=self.view.generator, out=out)
        return GraphedStep(self.graph_step, draw, self.batch_size, self.device, enabled=True)

    def graph_step(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The training step on the windows starting at ``indices`` (a device tensor): gather, forward, loss,
        backward, clipping, optimizer step; (loss, grad_norm) as device tensors. Static shapes, no host work."""
        self.model.train()
        loss = self.loss(self.view.batch_at(indices))
        self.optimizer.zero_grad(set_to_none=False)  # the gradients stay where a captured graph wrote them
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.optimizer.step()
        return loss.detach(), grad_norm.detach()

    def sample_batch(self, rng: np.random.Generator) -> dict | None:
        """The next batch; None with ``--cuda-graph``, whose step draws its batch on the device itself."""
        if self.graphed is not None:
            return None
        return self.view.sample(self.batch_size, rng)

    def tensors(self, batch: dict) -> dict:
        return {k: torch.as_tensor(v, device=self.device) for k, v in batch.items()}

    def action_loss(self, predicted: torch.Tensor, tensors: dict) -> torch.Tensor:
        """MSE of the predicted actions over the real (unpadded) steps: a masked sum over the count of real entries
        (selecting the real steps by boolean indexing would wait for the device to learn how many there are)."""
        return masked_mean((predicted.float() - tensors["actions"]) ** 2, tensors["mask"])

    def loss(self, batch: dict) -> torch.Tensor:
        tensors = self.tensors(batch)
        with autocast(self.device, self.precision, cache=self.graphed is None):
            predicted = self.forward(tensors)
        return self.action_loss(predicted, tensors)

    def update(self, batch: dict) -> dict:
        return metrics(self.train_step(batch))

    def train_step(self, batch: dict | None) -> dict:
        """One update; its metrics as tensors on the device. Nothing in it waits for the device (no host
        synchronisation: tests/test_sync_free.py runs it under a mode that fails on one). With ``--cuda-graph``
        (``batch`` None) the graph-ready step draws its own batch."""
        if self.graphed is not None:
            lr = self.base_lr * self.schedule(self.scheduler.last_epoch)  # the rate this step uses, as a number
            loss, grad_norm = self.graphed()
            self.scheduler.step()  # fills the optimizer's device-tensor rate for the next step
            return {"loss": loss, "grad_norm": grad_norm, "lr": lr}
        self.model.train()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return self.apply_gradients(loss)

    def apply_gradients(self, loss: torch.Tensor) -> dict:
        """Clip the gradients ``loss.backward()`` left, step the optimizer and the schedule; the update's metrics
        (device tensors, and the learning rate used)."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": loss.detach(), "grad_norm": grad_norm.detach(), "lr": float(lr)}

    @staticmethod
    def update_stack(algorithms: list, batches: list, rngs: list) -> list[dict]:
        """:meth:`train_stack`, its metrics read as the trainer reads them (:func:`metrics`)."""
        return [metrics(m) for m in SequenceModelAlgorithm.train_stack(algorithms, batches, rngs)]

    @staticmethod
    def train_stack(algorithms: list, batches: list, rngs: list) -> list[dict]:
        """One update of each seed's instance (``--seeds``); each seed's dropout masks are drawn from its own RNG
        (``rngs[i]``), its loss, clipping, optimizer and schedule stay its own.

        * Instances around one shared, fully frozen body (a pretrained frozen-dt slice) send their tokens through
          it as one batch - the seeds' windows concatenated along the batch - and back-propagate once.
        * Models whose forward vmaps (DT, whose transformer trains) run as one vmapped call over their stacked parameters
          (:func:`~frozen_dt.training.stack.stacked_call`), their masks passed in with the batches.
        * So do instances around per-seed, wholly frozen bodies (random-init slices): their frozen weights are
          stacked once (:meth:`stacked_bodies`) and each seed's slice runs on its own windows in the same call.
        * Otherwise (slices that train) each instance updates in turn.
        """
        if any(a.graphed is not None for a in algorithms):  # each seed replays its own graph
            steps = []
            for algorithm, batch, rng in zip(algorithms, batches, rngs):
                with rng():
                    steps.append(algorithm.train_step(batch))
            return steps
        models = [a.model for a in algorithms]
        body = models[0].body
        frozen = [not any(p.requires_grad for p in m.body.parameters()) for m in models]
        tensors = []
        for algorithm, batch, rng in zip(algorithms, batches, rngs):
            algorithm.model.train()
            algorithm.optimizer.zero_grad(set_to_none=True)
            tensors.append(algorithm.tensors(batch))
        first = algorithms[0]
        if all(m.body is body for m in models) and all(frozen):
            inputs, masks = [], []
            for algorithm, t, rng in zip(algorithms, tensors, rngs):
                with rng(), autocast(algorithm.device, algorithm.precision):
                    x, mask = algorithm.model.tokens(t, algorithm.model.dropout_masks(t))
                inputs.append(x)
                masks.append(mask)
            if first.compile and not hasattr(first, "compiled_body"):
                first.compiled_body = compiled(body, first.device)
            with autocast(first.device, first.precision):
                hidden = getattr(first, "compiled_body", body)(torch.cat(inputs), torch.cat(masks))
            predicted = []
            for algorithm, h in zip(algorithms, hidden.split([x.shape[0] for x in inputs])):
                with autocast(algorithm.device, algorithm.precision):
                    predicted.append(algorithm.model.readout(h))
        elif all(m.vmappable for m in models) or per_seed_frozen_bodies(models):
            fixed = None if all(m.vmappable for m in models) else first.stacked_bodies(models)
            for model, t, rng in zip(models, tensors, rngs):
                with rng():  # the seed's masks, from its own RNG as it draws them alone
                    noise = model.dropout_masks(t)
                if noise is not None:
                    t["dropout"] = noise
            stacked = {key: torch.stack([t[key] for t in tensors]) for key in tensors[0] if key != "dropout"}
            if "dropout" in tensors[0]:
                stacked["dropout"] = {k: torch.stack([t["dropout"][k] for t in tensors]) for k in tensors[0]["dropout"]}
            with autocast(first.device, first.precision):
                predicted = list(stacked_call(models, stacked, fixed=fixed))
        else:
            steps = []
            for algorithm, batch, rng in zip(algorithms, batches, rngs):
                with rng():
                    steps.append(algorithm.train_step(batch))
            return steps
        losses = [a.action_loss(p, t) for a, p, t in zip(algorithms, predicted, tensors)]
        torch.stack(losses).sum().backward()  # each seed's parameters get exactly its own loss's gradient
        return [algorithm.apply_gradients(loss) for algorithm, loss in zip(algorithms, losses)]

    def stacked_bodies(self, models: list) -> dict[str, torch.Tensor]:
        """The frozen weights of ``models`` (this instance's first) stacked for :func:`stacked_call`, made once per
        set of models and kept: in bf16 when the bodies would run a bf16 copy of their weights (bf16 autocast on a
        device in their ``hold_bf16_on``), else as they are."""
        held = self.precision == "bf16" and self.device.type in getattr(models[0].body, "hold_bf16_on", ())
        key = (tuple(id(m) for m in models), held)
        if getattr(self, "_stacked_bodies", (None,))[0] != key:
            self._stacked_bodies = (key, stacked_frozen(models, torch.bfloat16 if held else None))
        return self._stacked_bodies[1]

    def state_dict(self) -> dict:
        state = {"model": trainable_state_dict(self.model), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        if hasattr(self.view, "state_dict"):  # a device sampler's generator
            state["sampler"] = self.view.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        load_trainable_state_dict(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.graphed is not None:  # the graph-ready AdamW reads its rate from a device tensor
            for group in self.optimizer.param_groups:
                group["lr"] = torch.tensor(float(group["lr"]), device=self.device)
        self.scheduler.load_state_dict(state["scheduler"])
        if hasattr(self.view, "load_state_dict"):
            self.view.load_state_dict(state["sampler"])


def per_seed_frozen_bodies(models: list) -> bool:
    """Whether ``models`` (several) have wholly frozen bodies of one architecture, each its own (random-init
    slices): they run as one batched call over stacked weights."""
    if len(models) < 2 or len({id(m.body) for m in models}) != len(models):
        return False
    if not all(getattr(m.body, "freeze", None) == "all" for m in models):
        return False
    shapes = [[(n, p.shape, p.requires_grad) for n, p in m.named_parameters()] for m in models]
    return all(s == shapes[0] for s in shapes)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` (B, K, ...) over the steps where ``mask`` (B, K) is true, as a masked sum divided by
    the count of counted entries: no boolean indexing, whose result's size only the device knows."""
    weights = mask.to(values.dtype).reshape(*mask.shape, *([1] * (values.dim() - mask.dim())))
    per_step = values.numel() // mask.numel()
    return (values * weights).sum() / (weights.sum() * per_step)


def build_sequence_algorithm(config: SequenceConfig, model, dataset, problem, run) -> SequenceModelAlgorithm:
    """The spec's ``build_algorithm`` of both sequence models: windows of ``dataset`` (hindsight goals on
    goal-conditioned tasks) and the DT update."""
    view = SequenceView(dataset, config.context, rtg_scale=problem.rtg_scale, max_timestep=problem.max_timestep,
                        goal_conditioned=problem.goal_dim is not None)
    return SequenceModelAlgorithm(model, sampled_on(view, run), config, device=run.device, precision=run_precision(run),
                                  compile=getattr(run, "compile", False), cuda_graph=getattr(run, "cuda_graph", False))


def make_sequence_agent(config, model, obs_stats, problem, target, precision: str = "fp32"):
    """The spec's ``make_agent`` of both sequence models."""
    return ReturnConditionedAgent(model, obs_stats, problem.rtg_scale, target, max_timestep=problem.max_timestep,
                                  precision=precision)


class ReturnConditionedAgent:
    """A return-conditioned sequence model as a batched rollout agent (:class:`frozen_dt.eval.rollout.Agent`).

    Each env slot keeps its own window of the last ``context`` steps (observations normalized with the training
    statistics, actions, scaled returns-to-go starting at ``target_return / rtg_scale`` and decreasing by each
    reward / ``rtg_scale``, timesteps capped as in training), left-padded with zeros and masked like the training
    windows, as DT's ``evaluate_episode_rtg``. All running slots are predicted in one forward pass, in fixed-shape
    blocks (a slot's action does not depend on how many slots ran with it).

    Goal-conditioned models (OGBench) get each episode's goal (normalized like the observations) in every step's
    goal token instead of a return-to-go.

    No key/value cache: a cached token's keys and values at layer >= 2 were computed while it attended to steps that
    have since left the window, so once the window slides a cache would no longer give the trained model's
    prediction. Every step therefore recomputes its window (60 tokens for K=20), batched over the envs.
    """

    def __init__(self, model: ReturnConditionedTransformer, obs_stats: ObsStats, rtg_scale: float,
                 target_return: float | None, *, max_timestep: int = 1000, precision: str = "fp32"):
        from frozen_dt.eval.rollout import BLOCK

        self.model, self.obs_stats, self.rtg_scale = model, obs_stats, rtg_scale
        self.goal_conditioned = model.goal_dim is not None  # goal tokens (from each reset's goal), no returns
        self.target = 0.0 if self.goal_conditioned else float(target_return) / rtg_scale
        self.max_timestep = max_timestep
        self.device = next(model.parameters()).device
        self.autocast = autocast(self.device, precision)
        self.block = BLOCK
        self.k, self.obs_dim, self.act_dim = model.context, model.obs_dim, model.act_dim
        self.windows: dict[int, dict] = {}

    def start(self, slot: int, episode: int, goal=None) -> None:
        self.model.eval()
        k = self.k
        self.windows[slot] = {"observations": np.zeros((k, self.obs_dim), np.float32),
                              "actions": np.zeros((k, self.act_dim), np.float32),
                              "returns_to_go": np.zeros((k, 1), np.float32), "timesteps": np.zeros(k, np.int64),
                              "mask": np.zeros(k, bool), "rtg": self.target, "t": 0}
        if self.goal_conditioned:
            if goal is None:
                raise ValueError("a goal-conditioned model needs each episode's goal")
            self.windows[slot].update(goals=np.zeros((k, self.obs_dim), np.float32),
                                      goal=self.obs_stats.normalize(np.asarray(goal, dtype=np.float32)))

    def act(self, observations: np.ndarray, slots: np.ndarray) -> np.ndarray:
        from frozen_dt.eval.rollout import in_blocks

        keys = ("observations", "actions", "returns_to_go", "timesteps", "mask") + (("goals",) if self.goal_conditioned
                                                                                      else ())
        normalized = self.obs_stats.normalize(np.asarray(observations, dtype=np.float32))
        for row, slot in enumerate(slots):
            w = self.windows[slot]
            for key in keys:  # slide by one step; the new step goes last
                w[key][:-1] = w[key][1:]
            w["observations"][-1] = normalized[row]
            w["actions"][-1] = 0.0  # the current action's placeholder (its token follows the state token)
            w["returns_to_go"][-1] = w["rtg"]
            w["timesteps"][-1] = min(w["t"], self.max_timestep - 1)
            w["mask"][-1] = True
            if self.goal_conditioned:
                w["goals"][-1] = w["goal"]
        batch = [torch.as_tensor(np.stack([self.windows[s][key] for s in slots])).to(self.device) for key in keys]

        def predict(*tensors):
            with self.autocast:
                return self.model(dict(zip(keys, tensors)), last_step=True)[:, -1].float()

        with torch.no_grad():
            actions = in_blocks(predict, *batch, block=self.block).cpu().numpy()
        for row, slot in enumerate(slots):
            self.windows[slot]["actions"][-1] = actions[row]
        return actions

    def observe(self, slots: np.ndarray, rewards: np.ndarray) -> None:
        for slot, reward in zip(slots, rewards):
            w = self.windows[slot]
            w["rtg"] -= float(reward) / self.rtg_scale
            w["t"] += 1
