"""Two-node Ray check: a head and a worker node on this machine (Ray's ``ray.cluster_utils.Cluster``, one CPU each),
the tiny test sweep (bc and iql x 2 seeds) run against the cluster with ``--ray-address``, and where its jobs ran.

Run it as root in a network namespace that holds only loopback (Ray then binds 127.0.0.1):

    unshare -n bash -c 'ip link set lo up && python tests/ray_cluster_check.py --out results/sweeps/ray_two_nodes.json'
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from test_cli import write_d4rl_hdf5  # noqa: E402
from test_sweeps import TINY  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="write the report as JSON here")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "data").mkdir()
        write_d4rl_hdf5(tmp / "data" / "hopper-medium-v2.hdf5")
        os.environ["FROZEN_DT_DATA"] = str(tmp / "data")  # the nodes' workers inherit it
        spec = tmp / "tiny.json"
        spec.write_text(json.dumps({"out": str(tmp / "out"), **TINY}))
        started = time.time()
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        up, address = time.time() - started, cluster.address
        try:
            proc = subprocess.run([sys.executable, "-m", "frozen_dt.cli", "sweep", str(spec), "--backend", "ray",
                                   "--ray-address", address], capture_output=True, text=True, timeout=600)
        finally:
            cluster.shutdown()
        print(proc.stdout[-2000:], proc.stderr[-2000:] if proc.returncode else "", sep="\n")
        record = json.loads((tmp / "out" / "sweep.json").read_text()) if proc.returncode == 0 else {"runs": []}
    nodes = Counter(r["node"] for r in record["runs"])
    report = {"command": "python tests/ray_cluster_check.py (in unshare -n)", "cluster_address": address,
              "cluster_up_seconds": round(up, 1), "sweep_exit": proc.returncode,
              "runs": [{k: r[k] for k in ("config", "seed", "status", "node", "seconds")} for r in record["runs"]],
              "jobs_per_node": dict(nodes)}
    print(json.dumps(report["jobs_per_node"], indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if proc.returncode == 0 and len(nodes) == 2 else 1


if __name__ == "__main__":
    sys.exit(main())
