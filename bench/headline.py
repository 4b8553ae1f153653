"""The seeds' headline experiment across device leases (docs/gpu.md, "The headline across leases").

walker2d-medium-v2; frozen gemma3-270m 0:5 pretrained, the same slice ``--init random``, and DT; 3 seeds each (one
stack per arm); 100k steps at batch 64; 100 evaluation episodes per return target. The protocol is
``<state>/headline.json`` (``results/headline/``, committed before any run); an arm is the stack dir
``<state>/<arm>/`` (its seeds' run dirs, each an ordinary run dir) with ``chunks.jsonl``, one line per chunk that
touched it: device, steps from and to, seconds, the dataset's SHA-256 and whether it changed since the chunk before.

    python3 bench/headline.py run --state DIR --out OUT --deadline-at EPOCH [--device cuda] [--arms a,b]
    python3 bench/headline.py unpack PACK_DIR --state DIR     # a returned pack into the state; the leaderboard when done
    python3 bench/headline.py plan --state DIR                # what is left, what the next lease carries, its size
    python3 bench/headline.py needs-slice --state DIR [--arms a,b]  # exit 0 when one still needs the slice

``run`` (on the device, from ``bench/headline.sh``, after the dataset is generated into ``$FROZEN_DT_DATA``): for
each arm in order that is not finished, train (new, or ``--resume`` of the packed checkpoints: the trainer's exact
resume) with ``--stop-after`` the time left before the deadline less the evaluation's reserve; evaluate each arm that
is finished and not yet evaluated (``frozen-dt eval``: the stack's seeds x targets in one vector env); then pack each
arm it touched into ``OUT/headline-<arm>.tgz`` (one file per seed when an arm would pass the 16 MiB a returned file
may hold) and write ``OUT/headline-summary.json``. A pack holds the run dirs' records, metrics and evaluations, and
``checkpoints/last.pt`` (trainable parameters, optimizer, RNGs) of every member not yet evaluated at its last step;
an evaluated member keeps no checkpoint (the travel limit of 64 MiB; its evaluation names the step).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from frozen_dt.paths import atomic_write_text
from frozen_dt.run_dir import read_jsonl

TASK = "walker2d-medium-v2"
PROTOCOL_FILE = "headline.json"
CHUNKS = "chunks.jsonl"
RETURN_LIMIT = 15 * 2**20  # a returned file may hold 16 MiB
TRAVEL_LIMIT = 64 * 2**20  # what travels to the device: tree + carried paths
SLICE = ".carry/gemma3-270m-0-5.gguf"
FROZEN = ("--algo", "frozen-dt", "--backbone", "gemma3-270m", "--layers", "0:5")
PROTOCOLS = {
    # the seeds' headline (results/headline/headline.json holds the committed copy)
    "full": {"task": TASK, "seeds": "0,1,2", "steps": 100_000, "batch_size": 64, "eval_episodes": 100,
             "eval_max_steps": None, "save_every": 1000, "log_every": 1000, "eval_reserve_s": 150,
             "pack_reserve_s": 20, "min_chunk_s": 30,
             "arms": {"pretrained": [*FROZEN, "--init", "pretrained"], "random": [*FROZEN, "--init", "random"],
                      "dt": ["--algo", "dt"]}},
    # the rehearsal's and the tests' (CPU): a few steps, a checkpoint every 2, 2 short episodes per target; a chunk
    # always trains to its first checkpoint at least (min_chunk_s None), however close its deadline
    "tiny": {"task": TASK, "seeds": "0,1,2", "steps": 6, "batch_size": 4, "eval_episodes": 2, "eval_max_steps": 10,
             "save_every": 2, "log_every": 2, "eval_reserve_s": 0, "pack_reserve_s": 0, "min_chunk_s": None,
             "arms": {"pretrained": [*FROZEN, "--init", "pretrained", "--context", "4"],
                      "random": [*FROZEN, "--init", "random", "--context", "4"],
                      "dt": ["--algo", "dt", "--context", "4", "--embed-dim", "16"]}},
}


def say(message: str) -> None:
    print(f"[headline {datetime.datetime.now().strftime('%H:%M:%S')}] {message}", flush=True)


def read_protocol(state: Path) -> dict:
    path = state / PROTOCOL_FILE
    try:
        protocol = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        sys.exit(f"headline: cannot read the protocol {path} ({error})")
    if protocol.get("scale") not in PROTOCOLS or set(protocol.get("arms", ())) != set(PROTOCOLS[protocol["scale"]]["arms"]):
        sys.exit(f"headline: {path} is not a headline protocol (scale full or tiny, arms pretrained, random, dt)")
    return protocol


def write_protocol(state: Path, scale: str) -> dict:
    """A new state dir's protocol (the full one is committed; the tiny one is written on first use)."""
    protocol = {"scale": scale, **PROTOCOLS[scale]}
    state.mkdir(parents=True, exist_ok=True)
    atomic_write_text(state / PROTOCOL_FILE, json.dumps(protocol, indent=2) + "\n")
    return protocol


def data_sha256(path: Path) -> str:
    """SHA-256 of the dataset's arrays (each key, dtype, shape and bytes, keys sorted): the file's own bytes also
    hold its creation time, so two generations of the same data differ as files but not here."""
    import h5py
    import numpy as np

    digest = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for key in sorted(k for k in f.keys() if isinstance(f[k], h5py.Dataset)):
            array = np.ascontiguousarray(f[key][()])
            digest.update(f"{key}:{array.dtype.str}:{array.shape};".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


# --- the state of an arm ------------------------------------------------------------------------------------------

def members(arm_dir: Path, protocol: dict) -> list[Path]:
    return [arm_dir / f"seed{s}" for s in protocol["seeds"].split(",")]


def member_state(member: Path, protocol: dict) -> dict:
    """A member's step (its checkpoint, else its evaluation) and whether its evaluation at the last step is done."""
    step = None
    evaluation = member / "eval-last.json"
    evaluated = False
    if evaluation.is_file():
        record = json.loads(evaluation.read_text())
        evaluated = record.get("checkpoint_step") == protocol["steps"] and \
            record.get("episodes") == protocol["eval_episodes"] and record.get("max_steps") == protocol["eval_max_steps"]
        step = record.get("checkpoint_step")
    checkpoint = member / "checkpoints" / "last.pt"
    if checkpoint.is_file():
        import torch

        step = int(torch.load(checkpoint, map_location="cpu", weights_only=True)["step"])
    return {"step": step or 0, "finished": (step or 0) >= protocol["steps"], "evaluated": evaluated}


def arm_state(arm_dir: Path, protocol: dict) -> dict:
    found = [member_state(m, protocol) for m in members(arm_dir, protocol)] if (arm_dir / "stack.json").is_file() \
        else []
    steps = sorted({m["step"] for m in found}) or [0]
    return {"started": bool(found), "steps": steps, "finished": bool(found) and all(m["finished"] for m in found),
            "evaluated": bool(found) and all(m["evaluated"] for m in found)}


def read_chunks(arm_dir: Path) -> list[dict]:
    return read_jsonl(arm_dir / CHUNKS)


def add_chunk(arm_dir: Path, chunk: dict) -> None:
    with open(arm_dir / CHUNKS, "a") as handle:
        handle.write(json.dumps(chunk) + "\n")


# --- run: one lease's chunk ---------------------------------------------------------------------------------------

def frozen_dt(*args: str, budget: float) -> tuple[int, str]:
    """``python3 -P -m frozen_dt ARGS`` (the repository root never on sys.path), its output echoed; SIGINT at
    ``budget`` seconds (the trainer keeps its last checkpoint), killed 30 s later. Training gets 60 s past its
    ``--stop-after``: the soft stop comes at the next checkpoint, every 1000 steps."""
    command = [sys.executable, "-P", "-m", "frozen_dt", *args]
    say("+ frozen-dt " + " ".join(args))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True)
    started = time.time()
    try:
        out, _ = process.communicate(timeout=max(budget, 1))
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGINT)
        try:
            out, _ = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            out, _ = process.communicate()
    lines = [line for line in out.splitlines() if line.strip()]
    for line in lines[-12:]:
        print(f"    {line[:300]}", flush=True)
    say(f"  exit {process.returncode} in {time.time() - started:.0f} s")
    return process.returncode, out


def device_name(device: str) -> str:
    import platform

    import torch

    if device == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu: {platform.processor() or platform.machine()}"


def eval_reserve(chunks: list[dict], before: dict, protocol: dict, left: float) -> float:
    """Seconds kept for the arm's evaluation after its training in this chunk: when the chunk may finish the arm
    (no earlier chunk's rate to judge by, or that rate finishes it with the reserve to spare), else none: an arm
    that cannot finish trains to the deadline and is evaluated in a later chunk."""
    reserve = protocol["eval_reserve_s"]
    rates = [(max(c["to_step"]) - max(c["from_step"])) / c["seconds"] for c in chunks if c["seconds"] > 0]
    if not rates or rates[-1] <= 0:
        return reserve
    needed = (protocol["steps"] - max(before["steps"])) / rates[-1]
    return reserve if needed <= left - reserve else 0.0


def train_arm(arm: str, arm_dir: Path, protocol: dict, device: str, budget: float, extra: list[str]) -> tuple[int, str]:
    common = ["--stop-after", f"{budget:.3f}", "--device", device]
    if arm_state(arm_dir, protocol)["started"]:
        return frozen_dt("train", protocol["task"], "--resume", str(arm_dir), *common, budget=budget + 60)
    if arm_dir.exists():
        shutil.rmtree(arm_dir)  # a chunk that stopped before the stack's first checkpoint left nothing to resume
    return frozen_dt("train", protocol["task"], *protocol["arms"][arm], "--seeds", protocol["seeds"],
                     "--steps", str(protocol["steps"]), "--batch-size", str(protocol["batch_size"]),
                     "--eval-episodes", "0", "--save-every", str(protocol["save_every"]),
                     "--log-every", str(protocol["log_every"]), *extra, "--run-dir", str(arm_dir), *common,
                     budget=budget + 60)


def evaluate_arm(arm_dir: Path, protocol: dict, device: str, budget: float) -> int:
    cut = ["--max-steps", str(protocol["eval_max_steps"])] if protocol["eval_max_steps"] else []
    return frozen_dt("eval", str(arm_dir), "--episodes", str(protocol["eval_episodes"]), "--device", device, *cut,
                     budget=budget)[0]


def run(args) -> int:
    state, out = Path(args.state), Path(args.out)
    protocol = read_protocol(state)
    arms = args.arms.split(",") if args.arms else list(protocol["arms"])
    unknown = sorted(set(arms) - set(protocol["arms"]))
    if unknown:
        sys.exit(f"headline: unknown arm(s) {', '.join(unknown)}; arms: {', '.join(protocol['arms'])}")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="headline-"))
    data = Path(os.environ.get("FROZEN_DT_DATA", "")) / f"{protocol['task']}.hdf5"
    if not data.is_file():
        sys.exit(f"headline: no dataset at {data} (bench/headline.sh generates it into $FROZEN_DT_DATA first)")
    sha = data_sha256(data)
    device = device_name(args.device)
    say(f"{protocol['scale']} protocol, state {state}, device {device}, dataset {data} sha256 {sha[:16]}..., "
        f"{args.deadline_at - time.time():.0f} s to the deadline")
    summary = {"device": device, "scale": protocol["scale"], "data_sha256": sha, "arms": {},
               "started_at": datetime.datetime.now().isoformat(timespec="seconds")}
    touched, failed = [], []
    for arm in arms:
        arm_dir = work / arm
        if (state / arm).exists():
            shutil.copytree(state / arm, arm_dir)
        before = arm_state(arm_dir, protocol)
        note = {"before": before}
        if not before["finished"]:
            left = args.deadline_at - time.time() - protocol["pack_reserve_s"]
            budget = left - eval_reserve(read_chunks(arm_dir), before, protocol, left)
            if protocol["min_chunk_s"] is not None and budget < protocol["min_chunk_s"]:
                say(f"{arm}: not started in this chunk ({budget:.0f} s left for training)")
                summary["arms"][arm] = {**note, "trained": False}
                continue
            previous = read_chunks(arm_dir)
            changed = bool(previous) and previous[-1]["data_sha256"] != sha
            if changed:
                say(f"{arm}: THE DATASET CHANGED: this chunk's data (sha256 {sha[:16]}...) has other bits than the "
                    f"chunk before ({previous[-1]['data_sha256'][:16]}...); the trainer resumes only if the "
                    "observation statistics are the same")
            started = time.time()
            code, output = train_arm(arm, arm_dir, protocol, args.device, max(budget, 0.001), args.train_flag)
            after = arm_state(arm_dir, protocol)
            chunk = {"device": device, "at": datetime.datetime.now().isoformat(timespec="seconds"),
                     "from_step": before["steps"], "to_step": after["steps"], "exit": code,
                     "stopped_at_deadline": "(--stop-after)" in output, "seconds": round(time.time() - started, 1),
                     "data_sha256": sha, "data_changed": changed}
            if after["started"]:
                add_chunk(arm_dir, chunk)
                touched.append(arm)
            say(f"{arm}: steps {before['steps']} -> {after['steps']} (exit {code})")
            if code != 0:
                failed.append(f"{arm} train")
            note.update(trained=True, chunk=chunk)
        if arm_state(arm_dir, protocol)["finished"] and not arm_state(arm_dir, protocol)["evaluated"]:
            budget = args.deadline_at - time.time() - protocol["pack_reserve_s"]
            if budget > 0:
                note["eval_exit"] = evaluate_arm(arm_dir, protocol, args.device, budget)
                if note["eval_exit"] != 0:
                    failed.append(f"{arm} eval")
                if arm not in touched:
                    touched.append(arm)
        note["after"] = arm_state(arm_dir, protocol)
        summary["arms"][arm] = note
    summary["packs"] = pack(work, touched, protocol, out)
    summary["finished_at"] = datetime.datetime.now().isoformat(timespec="seconds")
    summary["failed"] = failed
    atomic_write_text(out / "headline-summary.json", json.dumps(summary, indent=2) + "\n")
    after = {a: summary["arms"].get(a, {}).get("after") or arm_state(state / a, protocol) for a in protocol["arms"]}
    left = [a for a, s in after.items() if not s["evaluated"]]
    say(f"packed {', '.join(summary['packs']) or 'nothing'} into {out}; arms still to finish: {', '.join(left) or 'none'}")
    if failed:
        say(f"FAILED: {', '.join(failed)} (their output is above)")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


def pack_files(arm_dir: Path, protocol: dict, member: Path | None = None) -> list[Path]:
    """What of an arm travels back: its records, metrics and evaluations; ``checkpoints/last.pt`` of the members not
    yet evaluated at the last step (nothing hidden: no locks)."""
    chosen = []
    roots = [member] if member else [arm_dir]
    for root in roots:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(arm_dir)
            if not path.is_file() or any(part.startswith(".") for part in rel.parts):
                continue
            if "checkpoints" in rel.parts:
                owner = arm_dir / rel.parts[0]
                if rel.name != "last.pt" or member_state(owner, protocol)["evaluated"]:
                    continue
            chosen.append(path)
    return chosen


def pack(work: Path, arms: list[str], protocol: dict, out: Path) -> list[str]:
    """Each touched arm as ``headline-<arm>.tgz`` (or one file per seed, the first with the arm's own files, when the
    arm passes what one returned file may hold)."""
    written = []
    for arm in arms:
        arm_dir = work / arm
        files = pack_files(arm_dir, protocol)
        if sum(f.stat().st_size for f in files) < RETURN_LIMIT:
            groups = {f"headline-{arm}.tgz": files}
        else:
            top = [f for f in files if f.parent == arm_dir]
            groups = {f"headline-{arm}-{m.name}.tgz": (top if i == 0 else []) + pack_files(arm_dir, protocol, m)
                      for i, m in enumerate(members(arm_dir, protocol))}
        for name, group in groups.items():
            tmp = out / f".{name}.tmp"
            with tarfile.open(tmp, "w:gz") as tar:
                for path in group:
                    tar.add(path, arcname=str(Path(arm) / path.relative_to(arm_dir)), recursive=False)
            os.replace(tmp, out / name)
            written.append(name)
    return written


# --- unpack: a returned pack into the state -------------------------------------------------------------------------

def safe_members(tar: tarfile.TarFile, arms: set[str], source: Path) -> list[tarfile.TarInfo]:
    """The archive's entries, each a plain file or folder inside one of ``arms`` (no links, no absolute paths, no
    '..'), or the unpack stops with one message."""
    entries = []
    for entry in tar.getmembers():
        parts = Path(entry.name).parts
        if (not (entry.isfile() or entry.isdir()) or entry.name.startswith("/") or ".." in parts or len(parts) > 4
                or not parts or parts[0] not in arms):
            sys.exit(f"headline: {source}: unexpected entry {entry.name[:100]!r} (only files inside the arms' dirs)")
        entries.append(entry)
    return entries


def unpack(args) -> int:
    """Every ``headline-*.tgz`` of PACK_DIR into the state: each arm it holds replaces that arm's dir whole (all of
    an arm's packs are read first); then the leaderboard if every arm is finished and evaluated."""
    source, state = Path(args.pack_dir), Path(args.state)
    protocol = read_protocol(state)
    packs = sorted(source.glob("headline-*.tgz"))
    if not packs:
        sys.exit(f"headline: no headline-*.tgz in {source}")
    staging = Path(tempfile.mkdtemp(prefix=".unpack-", dir=state))
    try:
        for path in packs:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(staging, members=safe_members(tar, set(protocol["arms"]), path), filter="data")
            except (tarfile.TarError, OSError, EOFError) as error:
                sys.exit(f"headline: {path} is not a readable pack ({error})")
        for arm_dir in sorted(p for p in staging.iterdir() if p.is_dir()):
            if not (arm_dir / "stack.json").is_file():
                sys.exit(f"headline: the pack of {arm_dir.name} has no stack.json: not an arm's pack")
            target = state / arm_dir.name
            old = state / f".{arm_dir.name}.old"
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(arm_dir, target)
            shutil.rmtree(old, ignore_errors=True)
            chunks = read_chunks(target)
            last = chunks[-1] if chunks else {}
            changed = " (THE DATASET CHANGED in that chunk)" if last.get("data_changed") else ""
            say(f"{arm_dir.name}: {arm_state(target, protocol)} after the chunk on {last.get('device', '?')}{changed}")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return write_results(state, protocol)


def write_results(state: Path, protocol: dict) -> int:
    """The leaderboard rows once all nine members reached the last step and were evaluated."""
    states = {arm: arm_state(state / arm, protocol) for arm in protocol["arms"]}
    if not all(s["evaluated"] for s in states.values()):
        say("not every arm is finished and evaluated yet: " +
            ", ".join(f"{a} at {s['steps']}{' (evaluated)' if s['evaluated'] else ''}" for a, s in states.items()))
        return 0
    runs = [str(m) for arm in protocol["arms"] for m in members(state / arm, protocol)]
    code = subprocess.call([sys.executable, "-P", "-m", "frozen_dt", "leaderboard", *runs,
                            "--out", str(state / "leaderboard.csv"), "--reference", "dt"])
    if code != 0:
        return code
    devices = sorted({json.loads((Path(r) / "eval-last.json").read_text()).get("device", "?") for r in runs})
    trained = sorted({c["device"] for arm in protocol["arms"] for c in read_chunks(state / arm)})
    atomic_write_text(state / "results.md", f"# The seeds' headline ({protocol['scale']} protocol: {PROTOCOL_FILE})\n\n"
                 f"Trained on {', '.join(trained)}; evaluated on {', '.join(devices)}; every arm's chunks in its "
                 f"{CHUNKS}.\n\n" + (state / "leaderboard.md").read_text())
    say(f"every arm finished: {state / 'results.md'} and leaderboard.csv/.md written, labelled with "
        f"{', '.join(devices)}")
    return 0


# --- plan: before a lease ---------------------------------------------------------------------------------------

def travel_bytes(paths: list[str]) -> int:
    """What the device tool sends: tracked and untracked-not-ignored files, plus the carried paths."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], check=True,
                            capture_output=True).stdout.split(b"\0")
    total = sum(os.path.getsize(p) for p in (x.decode() for x in listed if x) if os.path.isfile(p))
    for carried in paths:
        for root, _, files in os.walk(carried):
            total += sum(os.path.getsize(os.path.join(root, f)) for f in files)
    return total


def needs_slice(state: Path, protocol: dict, arms: list[str] | None = None) -> bool:
    """Whether one of ``arms`` (default: all) with a frozen slice still trains or evaluates (the lease then carries
    .carry/ too)."""
    return any(not arm_state(state / arm, protocol)["evaluated"] and "frozen-dt" in protocol["arms"][arm]
               for arm in arms or protocol["arms"])


def plan(args) -> int:
    state = Path(args.state)
    protocol = read_protocol(state)
    for arm in protocol["arms"]:
        s = arm_state(state / arm, protocol)
        held = sum(c.stat().st_size for c in (state / arm).glob("seed*/checkpoints/last.pt"))
        print(f"{arm}: steps {s['steps']} of {protocol['steps']}, finished {s['finished']}, evaluated {s['evaluated']}"
              + (f"; its checkpoints: {held / 2**20:.1f} MiB (they travel until it is evaluated)" if held else ""))
    carry = [".whl"] + ([".carry"] if needs_slice(state, protocol) else [])
    total = travel_bytes(carry)
    print(f"next lease: carry {carry}; travels {total / 2**20:.1f} MiB of {TRAVEL_LIMIT / 2**20:.0f}")
    if total > TRAVEL_LIMIT:
        print("over the device tool's limit: the lease cannot start with this tree", file=sys.stderr)
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="one lease's chunk: train, evaluate, pack")
    r.add_argument("--state", required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--deadline-at", type=float, required=True, help="seconds since the epoch")
    r.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    r.add_argument("--arms", help="comma-separated arms (default: all, in order)")
    r.add_argument("--scale", choices=tuple(PROTOCOLS), help="write this protocol if the state has none (tiny only)")
    r.add_argument("--train-flag", action="append", default=[],
                   help="extra flag for a new arm's first chunk (e.g. --train-flag=--cuda-graph); kept on resume")
    u = sub.add_parser("unpack", help="a returned pack into the state")
    u.add_argument("pack_dir")
    u.add_argument("--state", required=True)
    sub.add_parser("plan").add_argument("--state", required=True)
    n = sub.add_parser("needs-slice", help="exit 0 when one of the arms still needs the frozen slice")
    n.add_argument("--state", required=True)
    n.add_argument("--arms", help="comma-separated arms (default: all)")
    args = parser.parse_args()
    state = Path(args.state)
    if args.command == "run" and args.scale == "tiny" and not (state / PROTOCOL_FILE).exists():
        write_protocol(state, "tiny")
    if args.command == "run":
        return run(args)
    if args.command == "unpack":
        return unpack(args)
    if args.command == "needs-slice":
        return 0 if needs_slice(state, read_protocol(state), args.arms.split(",") if args.arms else None) else 1
    return plan(args)


if __name__ == "__main__":
    sys.exit(main())
