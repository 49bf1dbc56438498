"""One search worker for tests/test_search_workers.py, run as its own process:

    python tests/_search_worker.py STORAGE STUDY N LOG GO [--hang]

It works on the study with a stub trial (a fixed score from the parameters, a short sleep)
instead of fine-tuning: the point is the engine. Each trial it starts and finishes is a line
in LOG (``start|done PID PARAMS``). It starts when the file GO appears, so that the test's
workers start together. ``--hang``: its first trial after trial 0 never ends (the
test kills the process there).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from recommender.finetune.search import run_search  # noqa: E402

SPACE = {"reinit_top_blocks": ("int", (0, 2)), "base_lr": ("log", (1e-3, 1e-1))}
START = {"reinit_top_blocks": 0, "base_lr": 0.01}
HEARTBEAT = (1, 3)  # seconds: a beat every second, lost after 3 silent ones


def main(argv: list[str]) -> int:
    storage, study, n, log, go = argv[0], argv[1], int(argv[2]), Path(argv[3]), Path(argv[4])
    hang = "--hang" in argv
    started = []

    def note(kind: str, overrides) -> None:
        with log.open("a", encoding="utf-8") as fh:
            fh.write(f"{kind} {os.getpid()} {json.dumps(overrides, sort_keys=True)}\n")

    def evaluate(overrides):
        note("start", overrides)
        started.append(overrides)
        if hang and overrides != START:
            time.sleep(3600)  # killed here by the test
        time.sleep(0.3)
        note("done", overrides)
        return round(overrides["base_lr"], 6) + overrides["reinit_top_blocks"] / 10, 0.5

    while not go.exists():
        time.sleep(0.05)
    trials = run_search(n, space_=SPACE, start=START, evaluate=evaluate, storage=storage,
                        study_name=study, seed=0, heartbeat=HEARTBEAT)
    print(json.dumps({"pid": os.getpid(), "trials": len(trials)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
