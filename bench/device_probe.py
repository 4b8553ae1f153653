"""The device check's own measurements (bench/device_check.sh runs each as one step; each writes one JSON file):

    python3 -P bench/device_probe.py versions OUT.json             # python, torch, CUDA, cuDNN, transformers, numpy, GPU
    python3 -P bench/device_probe.py peak OUT.json --device cuda   # measured matmul peak (bf16 on cuda), median of reps
    python3 -P bench/device_probe.py attention OUT.json --device cuda --layers 0:5
        # a left-padded batch through the frozen gemma3-270m slice, forward and backward, with torch's default
        # attention backend and with the math backend: finite?, relative error, which kernels ran (profiler)

    python3 -P bench/device_probe.py rates OUT.json --runs HEADLINE_DIR   # steps/s per headline arm, to 100k
    python3 -P bench/device_probe.py summary OUT.json --results DIR --status STATUS.jsonl ...  # the run's digest

It imports torch and frozen_dt only (no file of bench/), so it runs under ``python3 -P`` from the repository root;
``rates`` and ``summary`` use the standard library alone.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path


def write_json(path: str, payload: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(args) -> dict:
    import torch

    out = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
           "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available()
           else None, "cuda_available": torch.cuda.is_available(), "cpus": os.cpu_count(),
           "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    for name in ("transformers", "numpy", "safetensors", "tokenizers", "huggingface-hub", "h5py", "scipy",
                 "triton", "gymnasium", "mujoco", "gguf"):
        out[name] = package_version(name)
    smi = shutil.which("nvidia-smi")
    if smi:
        query = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                                "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        out["nvidia_smi"] = (query.stdout or query.stderr).strip()
    return out


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def peak(args) -> dict:
    """Median FLOP/s of a square matmul on random data (bf16 8192^3 on cuda; fp32 on cpu at ``--size``)."""
    import torch

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = args.size or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    return {"device": args.device, "dtype": str(dtype).replace("torch.", ""), "n": n, "reps": args.reps,
            "median_s": median, "tflops": 2 * n**3 / median / 1e12, "best_tflops": 2 * n**3 / times[0] / 1e12}


def attention(args) -> dict:
    """Outputs and input gradients of the frozen slice on a left-padded batch, default backend against math."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    from frozen_dt.backbones.slice import load_backbone

    device = torch.device(args.device)
    body = load_backbone(args.backbone, args.layers).to(device)
    gen = torch.Generator().manual_seed(0)
    batch, tokens = args.batch, args.tokens
    embeds = torch.randn(batch, tokens, body.width, generator=gen).to(device)
    mask = torch.ones(batch, tokens, dtype=torch.bool)
    pad = torch.randint(0, tokens - 1, (batch,), generator=gen)
    pad[0] = tokens - 1  # one row with a single real token: every earlier query row is fully masked
    for row, k in enumerate(pad.tolist()):
        mask[row, :k] = False
    mask = mask.to(device)
    weight = torch.randn(batch, tokens, body.width, generator=gen).to(device)

    def run(backend):
        x = embeds.clone().requires_grad_(True)
        context = sdpa_kernel([backend]) if backend is not None else nullcontext()
        autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            with context, autocast:
                out = body(x, mask)
                (out.float() * weight).sum().backward()
            sync(device)
        names = sorted({e.key for e in prof.key_averages()
                        if any(k in e.key.lower() for k in ("attention", "flash", "fmha", "cudnn", "sdpa", "efficient"))})
        return out.detach().float(), x.grad.detach().float(), names

    out_default, grad_default, kernels_default = run(None)
    out_math, grad_math, kernels_math = run(SDPBackend.MATH)
    real = mask  # rows whose query is a real token

    def rel(a, b, where):
        a, b = a[where], b[where]
        return float((a - b).norm() / b.norm().clamp_min(1e-30))

    return {"device": args.device, "backbone": args.backbone, "layers": args.layers, "batch": batch,
            "tokens": tokens, "bf16": args.bf16, "padded_rows": int((pad > 0).sum()),
            "fully_masked_query_rows": int((~mask).sum()),
            "default": {"output_finite": bool(out_default.isfinite().all()),
                        "output_finite_real_rows": bool(out_default[real].isfinite().all()),
                        "grad_finite": bool(grad_default.isfinite().all()), "kernels": kernels_default},
            "math": {"output_finite": bool(out_math.isfinite().all()),
                     "grad_finite": bool(grad_math.isfinite().all()), "kernels": kernels_math},
            "rel_err_output_real_rows": rel(out_default, out_math, real),
            "rel_err_grad_real_rows": rel(grad_default, grad_math, real)}


def rates(args) -> dict:
    """The last logged steps/s of each headline arm's stack (3 seeds per step), extrapolated to 100k steps."""
    arms = {}
    for arm_dir in sorted(p for p in Path(args.runs).glob("*") if p.is_dir()):
        metrics = arm_dir / "seed0" / "metrics.jsonl"
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()] if metrics.exists() else []
        rows = [r for r in rows if r.get("steps_per_s")]
        if rows:
            rate = rows[-1]["steps_per_s"]
            arms[arm_dir.name] = {"stack_steps_per_s": rate, "measured_steps": max(r["step"] for r in rows),
                                  "extrapolated_minutes_for_100k": 100_000 / rate / 60}
    return {"note": "steps/s of each stack (3 seeds per step) at its last log; 100k-step times extrapolated",
            "arms": arms}


SUMMARY_INLINE_BYTES = 65_536
# what the CPU rehearsal (bench/device_check.sh --rehearse) cannot match of the lent machine (KINDS.md, 2026-11)
REHEARSAL_DIFFERENCES = {
    "python": "3.12.3 on the device; 3.11 here, so the carried wheels are the cp311 builds of the same pins",
    "torch": "2.11.0+cu130 on the device; this machine's 2.13.0+cpu here (2.11 has no CPU build here)",
    "numpy": "2.5.2 on the device; 2.4.6 here (the newest PyPI serves for CPython 3.11)",
    "device": "cuda under bf16 autocast on the device; cpu in fp32 here, at tiny sizes",
}


def summary(args) -> dict:
    """status.jsonl's steps, the versions and every small JSON the steps wrote, in one file."""
    steps = []
    if Path(args.status).exists():
        for line in Path(args.status).read_text().splitlines():
            try:
                steps.append(json.loads(line))
            except json.JSONDecodeError:
                steps.append({"unreadable": line[:200]})
    results = {}
    for path in sorted(Path(args.results).glob("*.json")):
        if path.stat().st_size <= SUMMARY_INLINE_BYTES:
            try:
                results[path.stem] = json.loads(path.read_text())
            except json.JSONDecodeError:
                results[path.stem] = {"unreadable": path.name}
    versions = results.pop("versions", None)
    return {"mode": args.mode, "device": args.device, "deadline_s": args.deadline, "versions": versions,
            "steps": steps, "failed": [s.get("step") for s in steps if s.get("rc") not in (0, None)],
            "skipped": [s.get("step") for s in steps if s.get("skipped")],
            "timed_out": [s.get("step") for s in steps if s.get("timed_out")], "results": results,
            **({"differences_from_device": REHEARSAL_DIFFERENCES} if args.mode == "rehearse" else {})}


def one_line(what: str, r: dict) -> str:
    if what == "versions":
        return (f"python {r['python']}, torch {r['torch']}, CUDA {r['cuda']}, cuDNN {r['cudnn']}, "
                f"transformers {r['transformers']}, numpy {r['numpy']}; {r['gpu'] or 'no GPU'}")
    if what == "peak":
        return f"{r['dtype']} {r['n']}^3 matmul: {r['tflops']:.3g} TFLOP/s (median of {r['reps']})"
    if what == "attention":
        d = r["default"]
        return (f"default backend: output finite {d['output_finite_real_rows']} (real rows), {d['output_finite']} "
                f"(all), grad finite {d['grad_finite']}; rel. err. vs math: output {r['rel_err_output_real_rows']:.2e}, "
                f"grad {r['rel_err_grad_real_rows']:.2e}; kernels {d['kernels']}")
    return "; ".join(f"{arm} {a['stack_steps_per_s']:.2f} stack steps/s" for arm, a in r["arms"].items()) or "no arms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("versions", "peak", "attention", "rates", "summary"))
    parser.add_argument("out", help="JSON file to write")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--size", type=int, help="peak: matrix size (default 8192 on cuda, 1024 on cpu)")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--backbone", default="gemma3-270m")
    parser.add_argument("--layers", default="0:5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=60)
    parser.add_argument("--bf16", action="store_true", help="attention: under bf16 autocast (as training on cuda)")
    parser.add_argument("--runs", help="rates: the headline's run directory")
    parser.add_argument("--results", help="summary: the folder of the steps' JSON files")
    parser.add_argument("--status", help="summary: status.jsonl")
    parser.add_argument("--mode", help="summary: device, rehearse or dry-run")
    parser.add_argument("--deadline", type=int, help="summary: the global deadline in seconds")
    args = parser.parse_args(argv)
    what = {"versions": versions, "peak": peak, "attention": attention, "rates": rates, "summary": summary}
    result = what[args.what](args)
    write_json(args.out, result)
    if args.what != "summary":  # the step's log; its last line is the device check's one line for this step
        print(json.dumps(result, indent=1), flush=True)
        print(one_line(args.what, result), flush=True)
    if args.what == "attention":  # non-finite values with the default backend fail the step
        return 0 if result["default"]["output_finite_real_rows"] and result["default"]["grad_finite"] else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
