"""Run by test_node_loss.py in its own process: a two-node ray.cluster_utils.Cluster, the job in a
thread, the worker node running the scoring actor removed mid-run; the actor restarts on the other."""
from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _runs_scorer(node) -> bool:
    import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
    import psutil

    for info in node.all_processes.get("raylet", []):
        for child in psutil.Process(info.process.pid).children(recursive=True):
            try:
                if "ShardScorer" in " ".join(child.cmdline()):
                    return True
            except psutil.Error:
                pass
    return False


def main(shards: str, decoder: str, out: str, ref: str) -> dict:
    from ray.cluster_utils import Cluster

    from pipeline.job.config import JobConfig
    from pipeline.job.run import run_job

    cluster = Cluster(initialize_head=True, connect=True,
                      head_node_args={"num_cpus": 0, "include_dashboard": False})   # head runs no actors
    try:
        nodes = [cluster.add_node(num_cpus=1) for _ in range(2)]   # the actor lands on one of them
        cluster.wait_for_nodes()
        cfg = lambda o: JobConfig(inputs=[shards], out=o, decoder=decoder, batch_size=10, actors=1, progress=False)
        result, errors = {}, []

        def target():
            try:
                result["run"] = run_job(cfg(out), log=lambda *a: None)
            except BaseException as e:  # noqa: BLE001
                errors.append(repr(e))

        th = threading.Thread(target=target)
        th.start()
        scores = Path(out) / "scores"        # written by the scoring phase (the detectors' phase follows)
        deadline = time.monotonic() + 240
        while not (scores.exists() and any(scores.glob("*.parquet"))):
            if time.monotonic() > deadline or not th.is_alive():
                raise SystemExit(f"job did not start: {errors}")
            time.sleep(0.05)
        doomed = [n for n in nodes if _runs_scorer(n)]
        if len(doomed) != 1:
            raise SystemExit(f"expected the scoring actor on one worker node, found {len(doomed)}")
        cluster.remove_node(doomed[0], allow_graceful=False)   # the actor restarts on the other node
        removed_at = len(list(scores.glob("*.parquet")))
        th.join(timeout=300)
        res = {"errors": errors, "alive": th.is_alive(), "removed_at": removed_at,
               "totals": result.get("run", {}).get("totals"), "flag_by": result.get("run", {}).get("flag_by")}
        if not errors and not th.is_alive():
            run_job(cfg(ref), log=lambda *a: None)      # uninterrupted reference on the surviving node
        return res
    finally:
        import ray

        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(*sys.argv[1:5])), flush=True)
