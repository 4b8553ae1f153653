"""The d3rlpy side of the parity bench: train one d3rlpy 2.8.1 algorithm on a D4RL-layout hdf5 file, time its
updates, evaluate it on episodes seeded ``eval_seed + i``, and print one JSON record.

Runs in the parity venv (``bench/parity/requirements.txt``: d3rlpy pins gymnasium==1.0.0), never imports
frozen_dt. Settings are d3rlpy's published locomotion ones (``reproductions/offline/<algo>.py`` at takuseno/d3rlpy
38c34b6f) with the update count, batch size and network sizes the orchestrator passes (the ones both sides share):

* bc: ``BCConfig`` (d3rlpy has no BC reproduction): deterministic tanh policy, 2x256 encoder, standard observation
  scaler, Adam at ``--lr``;
* iql: reproductions/offline/iql.py: actor and critic lr 3e-4, actor lr cosine-annealed over the run (T_max =
  the update count, as the script's 500k over 500k), expectile 0.7, weight_temp 3, max_weight 100, rewards scaled
  by 1000 / (max - min episode return) (ReturnBasedRewardScaler), no observation scaler, 2x256 encoders;
* cql: reproductions/offline/cql.py: 3x256 encoders, actor lr 1e-4, critic lr 3e-4, temperature lr 1e-4, 10
  action samples, conservative weight 10 (medium data), fixed alpha;
* dt: reproductions/offline/decision_transformer.py: batch 64, lr 1e-4, AdamW (weight decay 1e-4, grad clip
  0.25, linear warm-up), 128-wide embedding, K 20, 1 head, 3 layers, standard observation scaler, rewards x
  0.001, simple position encoding, max timestep 1000.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def load_hdf5(path: str):
    import d3rlpy
    import h5py

    with h5py.File(path, "r") as f:
        arrays = {k: f[k][()] for k in ("observations", "actions", "rewards", "terminals", "timeouts")}
    timeouts = arrays["timeouts"].astype(bool) & ~arrays["terminals"].astype(bool)
    timeouts[-1] = timeouts[-1] or not arrays["terminals"][-1]  # the file's last step ends an episode
    return d3rlpy.dataset.MDPDataset(arrays["observations"].astype(np.float32), arrays["actions"].astype(np.float32),
                                     arrays["rewards"].astype(np.float32), arrays["terminals"].astype(np.float32),
                                     timeouts.astype(np.float32))


def make_algo(args):
    import d3rlpy

    enc = d3rlpy.models.VectorEncoderFactory
    if args.algo == "bc":
        return d3rlpy.algos.BCConfig(batch_size=args.batch_size, learning_rate=args.lr, policy_type="deterministic",
                                     encoder_factory=enc([args.hidden] * args.layers),
                                     observation_scaler=d3rlpy.preprocessing.StandardObservationScaler())
    if args.algo == "iql":
        return d3rlpy.algos.IQLConfig(
            actor_learning_rate=3e-4, critic_learning_rate=3e-4, batch_size=args.batch_size,
            actor_optim_factory=d3rlpy.optimizers.AdamFactory(
                lr_scheduler_factory=d3rlpy.optimizers.CosineAnnealingLRFactory(T_max=args.steps)),
            actor_encoder_factory=enc([args.hidden] * args.layers), critic_encoder_factory=enc([args.hidden] * args.layers),
            value_encoder_factory=enc([args.hidden] * args.layers), weight_temp=3.0, max_weight=100.0, expectile=0.7,
            reward_scaler=d3rlpy.preprocessing.ReturnBasedRewardScaler(multiplier=1000.0))
    if args.algo == "cql":
        return d3rlpy.algos.CQLConfig(
            actor_learning_rate=1e-4, critic_learning_rate=3e-4, temp_learning_rate=1e-4, alpha_learning_rate=0.0,
            actor_encoder_factory=enc([args.hidden] * args.layers), critic_encoder_factory=enc([args.hidden] * args.layers),
            batch_size=args.batch_size, n_action_samples=10, conservative_weight=10.0)
    if args.algo == "dt":
        return d3rlpy.algos.DecisionTransformerConfig(
            batch_size=args.batch_size, learning_rate=args.lr,
            optim_factory=d3rlpy.optimizers.AdamWFactory(
                weight_decay=1e-4, clip_grad_norm=0.25,
                lr_scheduler_factory=d3rlpy.optimizers.WarmupSchedulerFactory(warmup_steps=args.warmup_steps)),
            encoder_factory=enc([128], exclude_last_activation=True),
            observation_scaler=d3rlpy.preprocessing.StandardObservationScaler(),
            reward_scaler=d3rlpy.preprocessing.MultiplyRewardScaler(0.001),
            position_encoding_type=d3rlpy.PositionEncodingType.SIMPLE, context_size=20, num_heads=1, num_layers=3,
            max_timestep=1000)
    raise SystemExit(f"unknown algorithm {args.algo}")


def evaluate(algo, args) -> list[float]:
    import gymnasium as gym

    env = gym.make(args.env_id, max_episode_steps=1000)
    returns = []
    for i in range(args.episodes):
        obs, _ = env.reset(seed=args.eval_seed + i)
        policy = algo.as_stateful_wrapper(target_return=args.target_return) if args.algo == "dt" else None
        total, reward, done = 0.0, 0.0, False
        while not done:
            if policy is not None:
                action = policy.predict(obs.astype(np.float32), reward)
            else:
                action = algo.predict(obs[None].astype(np.float32))[0]
            obs, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return returns


class SavedPolicy:
    """A tanh MLP policy from ``save_policy``'s layout (or experiments/parity/cross_eval.py --export of ours), with
    d3rlpy's ``predict`` signature: ReLU hidden layers, tanh output, observations scaled as (x - mean) / (std + eps)."""

    def __init__(self, path: str):
        saved = np.load(path)
        n = len([k for k in saved.files if k.startswith("W")])
        self.layers = [(saved[f"W{i}"].astype(np.float64), saved[f"b{i}"].astype(np.float64)) for i in range(n)]
        self.mean, self.scale = saved["mean"], saved["std"] + saved["eps"]

    def predict(self, observations: np.ndarray) -> np.ndarray:
        h = (observations - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w.T + b
            h = np.tanh(h) if i == len(self.layers) - 1 else np.maximum(h, 0.0)
        return h.astype(np.float32)


def save_policy(algo, path: str) -> None:
    """The BC policy's linear layers in order (encoder hidden layers, then the output layer) and its observation
    scaler, as plain arrays: ``W<i>``, ``b<i>``, ``mean``, ``std``, ``eps``."""
    import torch

    imitator = algo.impl.modules.imitator
    linears = [m for m in imitator.modules() if isinstance(m, torch.nn.Linear)]
    arrays = {}
    for i, layer in enumerate(linears):
        arrays[f"W{i}"] = layer.weight.detach().cpu().numpy()
        arrays[f"b{i}"] = layer.bias.detach().cpu().numpy()
    scaler = algo.observation_scaler
    np.savez(path, mean=np.asarray(scaler.mean, np.float64), std=np.asarray(scaler.std, np.float64),
             eps=np.float64(scaler.eps), **arrays)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", required=True, choices=("bc", "iql", "cql", "dt"))
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--env-id", default="Hopper-v5")
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--warmup-steps", type=int, default=10_000)
    parser.add_argument("--target-return", type=float, default=3600.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--eval-seed", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--eval-policy", help="evaluate this saved MLP policy (npz, save_policy's layout) in this "
                                              "loop instead of training: the other direction of cross_eval.py")
    parser.add_argument("--save-policy", help="bc: also write the trained policy (weights, scaler) to this npz, for "
                                              "experiments/parity/cross_eval.py to roll out in frozen-dt's harness")
    args = parser.parse_args()

    import d3rlpy
    import torch

    torch.set_num_threads(args.threads)
    if args.eval_policy:
        args.algo = "bc"  # a stateless policy: evaluate's predict path
        returns = evaluate(SavedPolicy(args.eval_policy), args)
        print(json.dumps({"side": "d3rlpy-harness", "policy": args.eval_policy, "returns": returns,
                          "episodes": args.episodes, "eval_seed": args.eval_seed, "env_id": args.env_id,
                          "versions": {"gymnasium": __import__("gymnasium").__version__,
                                       "mujoco": __import__("mujoco").__version__}}))
        return
    d3rlpy.seed(args.seed)
    dataset = load_hdf5(args.dataset)
    algo = make_algo(args).create(device="cpu:0")
    algo.build_with_dataset(dataset)
    started = time.perf_counter()
    algo.fit(dataset, n_steps=args.steps, n_steps_per_epoch=args.steps, show_progress=False, save_interval=10**9,
             logger_adapter=d3rlpy.logging.NoopAdapterFactory())
    seconds = time.perf_counter() - started
    if args.save_policy and args.algo == "bc":
        save_policy(algo, args.save_policy)
    returns = evaluate(algo, args)
    print(json.dumps({"side": "d3rlpy", "algo": args.algo, "seed": args.seed, "steps": args.steps,
                      "train_seconds": seconds, "updates_per_s": args.steps / seconds, "returns": returns,
                      "episodes": args.episodes, "eval_seed": args.eval_seed, "env_id": args.env_id,
                      "versions": {"d3rlpy": d3rlpy.__version__, "torch": torch.__version__,
                                   "gymnasium": __import__("gymnasium").__version__,
                                   "mujoco": __import__("mujoco").__version__}}))


if __name__ == "__main__":
    main()
