"""Run jobs/score_corpus.py in its own Ray job whose workers die (os._exit, as an OOM kill does) as
soon as they start scoring one given shard. Test-only: the patch lives in this job's
`worker_process_setup_hook`, nothing in the product knows about it.

    python tests/job/dying_actor_script.py RAY_ADDRESS STEM -- score_corpus args...
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def dying_hook(stem: str):
    """A setup hook that makes `score_shard` kill its process on `stem`."""
    def install() -> None:
        import pipeline.job.actors as actors

        real = actors.score_shard

        def score_or_die(scorer, task, *args, **kwargs):
            if task.stem == stem:
                os._exit(137)
            return real(scorer, task, *args, **kwargs)

        actors.score_shard = score_or_die

    return install


if __name__ == "__main__":
    import ray

    address, stem, sep, *argv = sys.argv[1:]
    ray.init(address=address, runtime_env={"worker_process_setup_hook": dying_hook(stem)},
             log_to_driver=False, logging_level="ERROR")
    from jobs.score_corpus import main

    sys.exit(main(argv))
