"""Behaviour policies the way D4RL made them: SAC (stable-baselines3) on the gymnasium MuJoCo env, with actor
checkpoints saved along the run together with their evaluated returns.

D4RL's levels map onto one run, chosen by the statistic the generated dataset will have - the mean normalized return
of the checkpoint's own (stochastic) episodes - against the published D4RL dataset's (``D4RL_DATASET_STATS``):
``random`` = the untrained actor (step 0), ``medium`` = the checkpoint whose episodes come closest to D4RL's medium
mean among those reaching half of it, ``expert`` = the checkpoint closest to D4RL's expert mean if it is within
:data:`EXPERT_BAND` points of it (else the run has no expert yet: train further), ``medium-replay`` = what the agent
saw before ``medium`` (approximated by rolling out the checkpoints saved before it, each for the steps until the
next, from the first checkpoint that brings the data's predicted mean closest to D4RL's medium-replay mean),
``medium-expert`` = medium and expert data 50/50.

Only the actor is kept for shipping (``latent_pi``, ``mu``, ``log_std`` linear layers as safetensors, a few hundred
KB): no critic, no optimizer. The full SB3 model and replay buffer go to a work directory so a run can resume.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from frozen_dt.envs.registry import LOCOMOTION_ENVS, get_task
from frozen_dt.errors import FrozenDTError
from frozen_dt.paths import atomic_path, atomic_write_text
from frozen_dt.schema import (either, hex_hash, integer, list_of, mapping_of, number, plain_name, record,
                              relative_path, text)

POLICY_DIR = Path(__file__).parent / "policies"
# Targets where D4RL publishes no dataset statistics (ant here): D4RL stopped its "medium" SAC runs at roughly a third
# of expert performance, and expert is the D4RL expert reference (normalized 100).
MEDIUM_NORMALIZED = 100.0 / 3.0
EXPERT_NORMALIZED = 100.0
EXPERT_BAND = 5.0  # normalized points around D4RL's expert mean (frozen-dt data verify's tolerance)
MEDIUM_FLOOR = 0.5  # a medium checkpoint reaches at least half the medium target (a barely trained run has none)
EVAL_SEED = 10_000  # checkpoint at step S is evaluated on episodes seeded EVAL_SEED + S + i
ACTOR_PREFIXES = ("latent_pi.", "mu.", "log_std.")


def manifest_path(env: str, root: Path = POLICY_DIR) -> Path:
    return root / env / "manifest.json"


_EVALUATION = {"normalized_return": number(), "return_mean": number(), "return_std": number(),
               "length_mean": number(), "eval_episodes": integer(1), "eval_seed": integer(0), "seed": integer(0),
               "env_id": text(100)}
CHECKPOINT = record({"file": plain_name(), "steps": integer(0)}, _EVALUATION)
MANIFEST = record({"checkpoints": list_of(CHECKPOINT)}, {
    "env": text(100), "levels": mapping_of(either(plain_name(), list_of(plain_name()))),
    "pruned_checkpoints": record({}, {"records": list_of(record({"steps": integer(0)},
                                                                {"file": plain_name(), **_EVALUATION}))}),
    "resume_state": record({"commit": hex_hash(40), "path": relative_path(), "sha256": hex_hash(64)}),
    "training_seconds": number()})


def read_manifest(env: str, root: Path = POLICY_DIR) -> dict:
    """``env``'s manifest, validated (:data:`MANIFEST`: every file it names is a plain name inside the env's folder,
    the resume state's commit a full hash); an absent one is empty."""
    from frozen_dt.run_dir import read_json

    path = manifest_path(env, root)
    if not path.is_file():
        return {"env": env, "checkpoints": [], "levels": {}}
    return read_json(path, MANIFEST)


def write_manifest(env: str, manifest: dict, root: Path = POLICY_DIR) -> None:
    atomic_write_text(manifest_path(env, root), json.dumps(manifest, indent=2) + "\n")


def resume_path(env: str, root: Path = POLICY_DIR) -> Path:
    """Where a run's SB3 state is committed between sessions (``resume/sac_model.zip`` beside the checkpoints)."""
    return root / env / "resume" / "sac_model.zip"


def restore_resume_state(env: str, target: Path, root: Path = POLICY_DIR) -> Path:
    """Put the run's committed SB3 state (actor, critics, optimizers; no replay buffer) at ``target``.

    From the checkout when present; else from git history. The state is ~3 MB per env, and the working tree is
    what travels to a device machine (64 MiB in all), so it is committed and then removed from the tree, and the
    manifest's ``resume_state`` names the commit holding it (``git show COMMIT:PATH``) and its SHA-256."""
    import hashlib
    import shutil
    import subprocess

    committed = resume_path(env, root)
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    if committed.is_file():
        shutil.copyfile(committed, target)
        return target
    record = read_manifest(env, root).get("resume_state")  # validated: a 40-hex commit, a relative path of names
    if record is None:
        raise FrozenDTError(f"nothing to resume for {env}: no {target}, no {committed}, and the manifest names no "
                            "committed resume state")
    show = f"git show {record['commit']}:{record['path']}"
    # The commit is in the checkout the manifest came from: the policy dir's own, else (a copied --policy-dir
    # outside any checkout) the package's.
    for where in dict.fromkeys([Path(root), POLICY_DIR]):
        try:
            # --end-of-options: nothing after it is read as an option, whatever the manifest holds
            done = subprocess.run(["git", "show", "--end-of-options", f"{record['commit']}:{record['path']}"],
                                  cwd=where, capture_output=True, check=False)
        except OSError as e:
            raise FrozenDTError(f"cannot run git to restore {env}'s resume state ({show}): {e}") from None
        if done.returncode == 0:
            break
    if done.returncode != 0:
        raise FrozenDTError(f"cannot restore {env}'s resume state with `{show}`: "
                            f"{done.stderr.decode(errors='replace').strip() or 'git failed'}")
    digest = hashlib.sha256(done.stdout).hexdigest()
    if digest != record["sha256"]:
        raise FrozenDTError(f"{env}'s resume state from `{show}` has SHA-256 {digest[:12]}..., the manifest says "
                            f"{record['sha256'][:12]}...: not restored")
    with atomic_path(target) as tmp:
        Path(tmp).write_bytes(done.stdout)
    return target


def saved_steps(model_zip: bytes, manifest: dict) -> int:
    """The environment steps an SB3 model zip was saved at (its ``data`` record's ``num_timesteps``); for bytes that
    are no SB3 zip, the last evaluated checkpoint's, kept or pruned."""
    import io
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(model_zip)) as saved:
            return int(json.loads(saved.read("data"))["num_timesteps"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError):
        return max((c["steps"] for c in manifest["checkpoints"] + pruned_records(manifest)), default=0)


def pruned_records(manifest: dict) -> list[dict]:
    """The evaluation records of checkpoints whose files were not kept (``pruned_checkpoints``), oldest first."""
    return manifest.get("pruned_checkpoints", {}).get("records", [])


def archive_resume_state(env: str, root: Path = POLICY_DIR) -> dict:
    """Record the committed ``resume/sac_model.zip`` of ``env`` in its manifest (``resume_state``: the commit that
    last wrote it, its path and SHA-256) and remove it from the working tree; commit the result. The zip must be
    committed unchanged first (``git add`` + ``git commit``), so the named commit holds exactly these bytes."""
    import hashlib
    import subprocess

    committed = resume_path(env, root)
    if not committed.is_file():
        raise FrozenDTError(f"no {committed} to archive")

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=root, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise FrozenDTError(f"git {' '.join(argv)}: {done.stderr.strip()}")
        return done.stdout.strip()

    path = git("ls-files", "--full-name", "--", str(committed))
    if not path or git("status", "--porcelain", "--", str(committed)):
        raise FrozenDTError(f"{committed} is not committed as it is: commit it first")
    commit = git("log", "-1", "--format=%H", "--", str(committed))
    data = committed.read_bytes()
    manifest = read_manifest(env, root)
    manifest["resume_state"] = {
        "commit": commit, "path": path, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
        "steps": saved_steps(data, manifest),
        "what": "SB3 SAC model (actor, critics, optimizers) without replay buffer; restored by "
                "`frozen-dt data train-behavior ENV --resume` (git show COMMIT:PATH); not installed"}
    manifest.pop("resume", None)
    write_manifest(env, manifest, root)
    committed.unlink()
    return manifest["resume_state"]


KEEP_EVERY = 100_000  # checkpoints kept in the shipped policy dir: every 100k steps, and every file a level names
PRUNED_WHY = ("evaluated and considered by level selection, then their files were not kept (no level uses them; "
              "what travels to a device machine is limited to 64 MiB); kept: the levels' checkpoints and every "
              "100k steps (every 50k until 2026-12-02; records with file_in_git_history were committed, then removed)")


def sync_checkpoints(env: str, source: Path, root: Path = POLICY_DIR, *, keep_every: int = KEEP_EVERY,
                     model: Path | None = None, prune_held: bool = False) -> dict:
    """Bring a run's checkpoints from another policy dir (``train-behavior --policy-dir SOURCE``) into ``root``.

    Levels are selected over every evaluated checkpoint of both manifests (the source's record wins for a step both
    hold). Of the source's new checkpoints, those at multiples of ``keep_every`` and those a level names are copied
    with their records; the others' records move to ``pruned_checkpoints`` (evaluated, considered, file not kept).
    ``prune_held`` applies the same rule to the checkpoints ``root`` already holds: their files leave the tree (they
    stay in git history; the record keeps ``file`` and says so), e.g. with a larger ``keep_every`` when what travels
    to a device machine nears its limit.
    ``model`` (the run's ``sac_model.zip``) is copied to the resume path, to be committed and then archived
    (:func:`archive_resume_state`). Returns ``{"copied", "pruned", "levels_before", "levels"}`` (steps copied,
    steps newly pruned, the levels before and after)."""
    import shutil

    source = Path(source)
    if not manifest_path(env, source).is_file():
        raise FrozenDTError(f"no {manifest_path(env, source)}: nothing to sync")
    if keep_every <= 0:
        raise FrozenDTError(f"--keep-every must be positive, got {keep_every}")
    theirs, ours = read_manifest(env, source), read_manifest(env, root)
    held = {c["steps"]: c for c in ours["checkpoints"]}
    new = {c["steps"]: c for c in theirs["checkpoints"] if c["steps"] not in held}
    for record in new.values():
        if not (source / env / record["file"]).is_file():
            raise FrozenDTError(f"{source / env / record['file']} is in {manifest_path(env, source)} but missing")
    levels = select_levels(list({**held, **new}.values()), env)
    named = {f for entry in levels.values() for f in level_files(entry)}
    was_pruned = {r["steps"] for r in pruned_records(ours)}
    # a step pruned before comes back only if a level names it
    keep = {s: c for s, c in new.items() if (s % keep_every == 0 and s not in was_pruned) or c["file"] in named}
    pruned = [{k: v for k, v in c.items() if k != "file"} for s, c in sorted(new.items())
              if s not in keep and s not in was_pruned]
    dropped = {s: c for s, c in held.items() if prune_held and s % keep_every and c["file"] not in named}
    pruned += [{**c, "file_in_git_history": True} for s, c in sorted(dropped.items())]
    arriving = {c["file"] for c in keep.values()}
    unkept = sorted(f for f in named if f not in arriving and not (root / env / f).is_file())
    if unkept:  # a level names a file pruned before this sync: refuse rather than write a manifest it cannot use
        raise FrozenDTError(f"the levels name checkpoints that are not kept in {root / env}: {', '.join(unkept)}")
    for record in keep.values():
        with atomic_path(root / env / record["file"]) as tmp:
            shutil.copyfile(source / env / record["file"], tmp)
    before = ours.get("levels", {})
    ours["checkpoints"] = sorted([c for s, c in held.items() if s not in dropped] + list(keep.values()),
                                 key=lambda c: c["steps"])
    ours["levels"], ours["level_selection"] = levels, selection_record(env)
    if pruned or keep.keys() & was_pruned:
        done = ours.setdefault("pruned_checkpoints", {"records": []})
        done["why"] = PRUNED_WHY
        steps = {r["steps"] for r in pruned} | keep.keys()  # replaced, or kept again
        done["records"] = sorted([r for r in done["records"] if r["steps"] not in steps] + pruned,
                                 key=lambda r: r["steps"])
    if "training_seconds" in theirs:
        ours["training_seconds"] = theirs["training_seconds"]
    if model is not None:
        if not Path(model).is_file():
            raise FrozenDTError(f"no SB3 model at {model}")
        with atomic_path(resume_path(env, root)) as tmp:
            shutil.copyfile(model, tmp)
    write_manifest(env, ours, root)
    for record in dropped.values():  # after the manifest no longer names them
        (root / env / record["file"]).unlink(missing_ok=True)
    return {"copied": sorted(keep), "pruned": [r["steps"] for r in pruned],
            "levels_before": before,
            "levels": levels}


def level_files(entry: str | list[str]) -> list[str]:
    """The checkpoint files of one ``levels`` entry (a file, or a list of them: medium-replay, medium-expert)."""
    return [entry] if isinstance(entry, str) else list(entry)


def level_targets(env: str) -> dict:
    """The mean normalized episode return each level's data should have: D4RL's datasets' where published."""
    from frozen_dt.eval.scores import normalized_score

    targets = {"medium": MEDIUM_NORMALIZED, "expert": EXPERT_NORMALIZED, "medium-replay": None}
    for level in targets:
        task = get_task(f"{env}-{level}-v2")
        if task.d4rl is not None:
            targets[level] = float(normalized_score(task, task.d4rl.return_mean))
    return targets


def select_levels(checkpoints: list[dict], env: str) -> dict:
    """D4RL levels from a run's checkpoints by their evaluated mean normalized return (see the module doc): medium
    the closest to :func:`level_targets`' medium, expert the closest to its expert if within EXPERT_BAND. Levels
    the run has not reached are absent."""
    checkpoints = sorted(checkpoints, key=lambda c: c["steps"])
    targets = level_targets(env)
    levels = {}
    if checkpoints and checkpoints[0]["steps"] == 0:
        levels["random"] = checkpoints[0]["file"]
    trained = [i for i, c in enumerate(checkpoints) if c["steps"] > 0]
    candidates = [i for i in trained if checkpoints[i]["normalized_return"] >= MEDIUM_FLOOR * targets["medium"]]
    if candidates:
        medium = min(candidates, key=lambda i: abs(checkpoints[i]["normalized_return"] - targets["medium"]))
        levels["medium"] = checkpoints[medium]["file"]
        before = checkpoints[:medium]
        if targets.get("medium-replay") is not None:  # the run's tail whose data will average closest to D4RL's
            start = min(range(len(before)), key=lambda s: abs(replay_mean(before[s:], checkpoints[medium]["steps"])
                                                             - targets["medium-replay"]))
            before = before[start:]
        levels["medium-replay"] = [c["file"] for c in before]
    expert = min(trained, key=lambda i: abs(checkpoints[i]["normalized_return"] - targets["expert"]), default=None)
    if expert is not None and abs(checkpoints[expert]["normalized_return"] - targets["expert"]) <= EXPERT_BAND:
        levels["expert"] = checkpoints[expert]["file"]
        if "medium" in levels:
            levels["medium-expert"] = [levels["medium"], levels["expert"]]
    return levels


def replay_mean(checkpoints: list[dict], until: int) -> float:
    """The mean normalized episode return a medium-replay dataset rolled out from ``checkpoints`` will have: each
    checkpoint holds the steps until the next (the last until ``until``), so it contributes steps / its mean episode
    length episodes (its evaluation's ``length_mean``; a full 1000 where unrecorded)."""
    steps = [c["steps"] for c in checkpoints] + [until]
    episodes = np.array([(b - a) / c.get("length_mean", 1000.0) for a, b, c in zip(steps, steps[1:], checkpoints)])
    returns = np.array([c["normalized_return"] for c in checkpoints])
    return float((episodes * returns).sum() / episodes.sum())


def selection_record(env: str) -> dict:
    """How the manifest's levels were chosen (written beside them)."""
    return {"rule": "medium: the checkpoint whose mean normalized episode return is closest to the target among "
                    f"those reaching {MEDIUM_FLOOR:g} of it; medium-replay: the checkpoints before medium from the "
                    "start whose predicted data mean (replay_mean) is closest to the target; expert: "
                    f"the closest to its target if within {EXPERT_BAND:g} points; random: step 0",
            "targets": level_targets(env),
            "targets_from": "D4RL's published datasets (frozen_dt.envs.registry.D4RL_DATASET_STATS) where known"}


def actor_state(model) -> dict:
    """The actor's weights only (no critic, no optimizer), as contiguous CPU float32 tensors."""
    state = model.actor.state_dict()
    return {k: v.detach().cpu().float().contiguous() for k, v in state.items() if k.startswith(ACTOR_PREFIXES)}


def save_actor(model, path: Path) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(actor_state(model), str(tmp))


def evaluate_checkpoint(env: str, file: str, *, episodes: int, seed: int, policy_root: Path = POLICY_DIR,
                        num_envs: int = 16, progress: bool = False) -> dict:
    """A shipped actor's stochastic returns (the policy that generates data) over ``episodes`` episodes, seeded
    ``seed + i``, through the evaluation harness; the manifest fields ``return_mean``/``return_std``/
    ``normalized_return``/``eval_episodes``/``eval_seed``."""
    from frozen_dt.envs.actors import ActorAgent, ActorPolicy
    from frozen_dt.eval.rollout import rollout
    from frozen_dt.eval.scores import normalized_score

    task = get_task(f"{env}-medium-v2")
    agent = ActorAgent.for_task(task, ActorPolicy.load(policy_root / env / file), seed=seed)
    runs = rollout(task, agent, episodes, seed=seed, num_envs=num_envs, env_version="v5", progress=progress,
                   desc=f"{file}")
    returns = np.array([r["return"] for r in runs])
    return {"return_mean": float(returns.mean()), "return_std": float(returns.std()),
            "normalized_return": float(normalized_score(task, returns.mean())),
            "length_mean": float(np.mean([r["length"] for r in runs])), "eval_episodes": int(episodes),
            "eval_seed": int(seed)}


def reevaluate_checkpoints(env: str, *, episodes: int = 20, policy_root: Path = POLICY_DIR, num_envs: int = 16,
                           progress: bool = True) -> dict:
    """Evaluate every checkpoint of ``env``'s manifest again with ``episodes`` episodes, then re-select the levels.

    Level selection reads single evaluations; a few episodes of a noisy policy can put a checkpoint over the medium
    threshold by luck, so the recorded evaluations should use enough episodes (20 by default).
    """
    from frozen_dt.progress import progress_bar

    manifest = read_manifest(env, policy_root)
    if not manifest.get("checkpoints"):
        raise FrozenDTError(f"no checkpoints recorded for {env} under {policy_root}")
    for record in progress_bar(manifest["checkpoints"], desc=f"{env} checkpoints", unit="ckpt", enabled=progress):
        record.update(evaluate_checkpoint(env, record["file"], episodes=episodes, seed=EVAL_SEED + record["steps"],
                                          policy_root=policy_root, num_envs=num_envs))
    manifest["levels"] = select_levels(manifest["checkpoints"], env)
    manifest["level_selection"] = selection_record(env)
    write_manifest(env, manifest, policy_root)
    return manifest


def refill_replay_buffer(model, steps: int) -> None:
    """Fill a resumed SAC model's empty replay buffer with ``steps`` transitions of its own stochastic policy.

    The buffer is not committed (hundreds of MB), and SB3 resumed past ``learning_starts`` updates at once on a
    buffer of a few transitions: walker2d fell from 70.6 at 550k to 6.2 at 575k that way, hopper from 67.5 to 35.6.
    These steps refill it first; they do not count as training steps (``num_timesteps`` is unchanged), and training
    continues the episode the refill was in. Each step is SB3's own collection step (``_sample_action`` past the
    warm-up, ``_store_transition``: the buffer's action scale, the terminal observation at a time limit).
    """
    model._last_obs = model.env.reset()
    for _ in range(steps):
        action, buffer_action = model._sample_action(learning_starts=0)
        new_obs, rewards, dones, infos = model.env.step(action)
        model._store_transition(model.replay_buffer, buffer_action, new_obs, rewards, dones, infos)


def save_training_state(model, model_path: Path, buffer_path: Path) -> None:
    """The SB3 model and its replay buffer, each written atomically, at every checkpoint: a run stopped later
    resumes from its last checkpoint with the buffer it had, not a refilled one (SB3 stores a step's transition
    after the callback sees the step, so the buffer holds one step fewer than the model counts)."""
    with atomic_path(model_path, ".zip") as tmp:
        model.save(tmp)
    with atomic_path(buffer_path, ".pkl") as tmp:
        model.save_replay_buffer(tmp)


def train_behavior(env: str, *, steps: int, seed: int = 0, save_every: int = 10_000, eval_episodes: int = 20,
                   learning_starts: int = 10_000, env_version: str = "v5", policy_root: Path = POLICY_DIR,
                   work_dir: Path | None = None, resume: bool = False, progress: bool = True) -> dict:
    """Train SAC on ``env`` for ``steps`` environment steps, saving actor checkpoints every ``save_every`` steps."""
    import torch
    from stable_baselines3 import SAC
    from stable_baselines3.common.callbacks import BaseCallback

    if env not in LOCOMOTION_ENVS:
        raise FrozenDTError(f"unknown locomotion env {env!r}; choose one of {', '.join(LOCOMOTION_ENVS)}")
    task = get_task(f"{env}-medium-v2")
    env_id = task.env_id(env_version)
    manifest = read_manifest(env, policy_root)  # validated before anything is written or removed
    work_dir = Path(work_dir or Path("runs") / "behavior" / env)
    work_dir.mkdir(parents=True, exist_ok=True)
    if not resume:
        for old in manifest["checkpoints"]:  # a fresh run replaces the previous run's checkpoints
            (policy_root / env / old["file"]).unlink(missing_ok=True)
        manifest = {"env": env, "checkpoints": [], "levels": {}}
        manifest.update(env_id=env_id, seed=seed, algorithm="SAC, stable-baselines3 defaults except learning_starts",
                        learning_starts=learning_starts)
    model_path, buffer_path = work_dir / "sac_model.zip", work_dir / "replay_buffer.pkl"
    train_env = task.make_env(env_version)

    if resume:
        if not model_path.is_file():
            restore_resume_state(env, model_path, policy_root)
        model = SAC.load(model_path, env=train_env, device="cpu")
        if buffer_path.is_file():
            model.load_replay_buffer(buffer_path)
        else:
            refill_replay_buffer(model, learning_starts)
    else:
        torch.manual_seed(seed)
        model = SAC("MlpPolicy", train_env, seed=seed, device="cpu", verbose=0, learning_starts=learning_starts)

    trained_before, start = manifest.get("training_seconds", 0.0), time.time()

    def record_time() -> None:  # at every checkpoint, so a run stopped later still says how long it ran
        manifest["training_seconds"] = trained_before + time.time() - start

    def checkpoint(step: int) -> None:
        name = f"{env}-sac-seed{seed}-step{step:07d}.safetensors"
        save_actor(model, policy_root / env / name)
        record = {"file": name, "env_id": env_id, "steps": step, "seed": seed,
                  **evaluate_checkpoint(env, name, episodes=eval_episodes, seed=EVAL_SEED + step,
                                        policy_root=policy_root)}
        manifest["checkpoints"] = [c for c in manifest["checkpoints"] if c["steps"] != step] + [record]
        manifest["levels"] = select_levels(manifest["checkpoints"], env)
        manifest["level_selection"] = selection_record(env)
        record_time()
        write_manifest(env, manifest, policy_root)
        save_training_state(model, model_path, buffer_path)
        print(f"[{env}] step {step}: return {record['return_mean']:.1f} +- {record['return_std']:.1f} "
              f"(normalized {record['normalized_return']:.1f}, {eval_episodes} episodes)", flush=True)

    class Checkpoints(BaseCallback):
        def _on_step(self) -> bool:
            if self.num_timesteps % save_every == 0:
                checkpoint(self.num_timesteps)
            return True

    if not resume:
        checkpoint(0)  # the untrained actor: D4RL's "random" level
    remaining = steps - model.num_timesteps
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=Checkpoints(), reset_num_timesteps=False, progress_bar=progress)
    save_training_state(model, model_path, buffer_path)
    record_time()
    write_manifest(env, manifest, policy_root)
    train_env.close()
    return manifest


def main(argv: list[str] | None = None) -> int:
    """``python -m frozen_dt.envs.behavior archive-resume ENV...`` | ``sync ENV --from DIR [--model ZIP]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m frozen_dt.envs.behavior",
                                     description="keep a behaviour-policy run's shipped files")
    sub = parser.add_subparsers(dest="command", required=True)
    archive = sub.add_parser("archive-resume", help=archive_resume_state.__doc__.splitlines()[0])
    archive.add_argument("envs", nargs="+", choices=LOCOMOTION_ENVS)
    sync = sub.add_parser("sync", help="bring a --policy-dir run's checkpoints into the package's policy dir")
    sync.add_argument("env", choices=LOCOMOTION_ENVS)
    sync.add_argument("--from", dest="source", required=True, type=Path, help="the run's --policy-dir")
    sync.add_argument("--keep-every", type=int, default=KEEP_EVERY, help="steps between kept checkpoints")
    sync.add_argument("--model", type=Path, help="the run's sac_model.zip, copied to the resume path")
    sync.add_argument("--prune-held", action="store_true",
                      help="apply --keep-every to the checkpoints already kept too (their files stay in git history)")
    sync.add_argument("--policy-dir", type=Path, default=POLICY_DIR, help="where to bring them")
    args = parser.parse_args(argv)
    try:
        if args.command == "archive-resume":
            for name in args.envs:
                print(name, json.dumps(archive_resume_state(name)))
            return 0
        done = sync_checkpoints(args.env, args.source, args.policy_dir, keep_every=args.keep_every, model=args.model,
                                prune_held=args.prune_held)
    except FrozenDTError as e:
        print(f"error: {e}")
        return 2
    print(f"{args.env}: copied {len(done['copied'])} checkpoints ({', '.join(map(str, done['copied'])) or '-'}), "
          f"pruned {len(done['pruned'])}")
    for level in sorted(set(done["levels"]) | set(done["levels_before"])):
        was, now = done["levels_before"].get(level), done["levels"].get(level)
        print(f"  {level}: " + ("unchanged" if was == now else f"CHANGED (regenerate its data): {was} -> {now}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
