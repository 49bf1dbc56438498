"""How run_probes splits a block's probes into tasks for its workers."""

from __future__ import annotations

import probes
from recommender import analysis


def _per_block() -> list[str]:
    return [p.name for p in probes.list_probes() if set(analysis.BLOCK_INPUTS) & set(p.needs)]


def test_probes_that_share_memoised_work_run_in_one_task():
    """The gain re-uses the linear probe's fit only on the same rows (the twin saw every
    image); the shrinkage H-score always re-uses the H-score's spectrum. The fits first,
    every probe in exactly one task."""
    names = _per_block()
    for subset in (False, True):
        tasks = analysis._tasks(names, subset)
        assert sorted(name for task in tasks for name in task) == sorted(names)
        assert ("h_score", "shrinkage_h_score") in tasks
        fits = ([("linear_probe_accuracy",), ("pretraining_gain",)] if subset
                else [("linear_probe_accuracy", "pretraining_gain")])
        assert tasks[: len(fits)] == fits


def test_no_per_block_probe_still_gives_each_block_its_tick():
    assert analysis._tasks([], subset=False) == [()]
