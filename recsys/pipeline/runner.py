"""Running stages: one by name (:func:`run_stage`, what Airflow's tasks and ``recsys stage`` call) or the
whole automatic sequence of a week (:func:`run_all`, ``recsys pipeline``)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from recsys.io.spark import spark_app_name
from recsys.io.storage import attempt_scope
from recsys.pipeline import experiment
from recsys.pipeline.context import STAGES, StageContext
from recsys.pipeline.data_stages import anonymize, ingest, prepare, validate, window
from recsys.pipeline.leases import week_lease
from recsys.pipeline.model_stages import content, evaluate, train
from recsys.pipeline.release_stages import gate, privacy_scan, promote, recommend, register
from recsys.pipeline.results import StageResult

log = logging.getLogger(__name__)

STAGE_FUNCTIONS: dict[str, Callable[..., StageResult]] = {
    "window": window,
    "ingest": ingest,
    "validate": validate,
    "anonymize": anonymize,
    "prepare": prepare,
    "content": content,
    "train": train,
    "evaluate": evaluate,
    "gate": gate,
    "register": register,
    "recommend": recommend,
    "privacy_scan": privacy_scan,
    "promote": promote,  # only after a manual approval: not part of the automatic sequence
    # the A/B test's (ab_readout Dag; recsys/pipeline/experiment.py)
    "feedback": experiment.feedback,
    "ab_readout": experiment.ab_readout,
}


def run_stage(stage: str, ctx: StageContext, **kwargs: Any) -> StageResult:
    if stage not in STAGE_FUNCTIONS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGE_FUNCTIONS)}")
    # one run per week at a time (the lease); the stage's partitions and record carry one new attempt
    # id (recsys.io.storage)
    with (
        week_lease(ctx, stage),
        attempt_scope(),
        spark_app_name(f"recsys-retrain {stage} {ctx.week.isoformat()}"),
    ):
        started = time.perf_counter()
        result = STAGE_FUNCTIONS[stage](ctx, **kwargs)
        seconds = round(time.perf_counter() - started, 3)
        log.info("stage %s for week %s: %.2fs of compute", stage, ctx.week, seconds)
        if result.stage == stage:
            # the stage's own time, apart from the orchestration around it (bench/dag.py sums these)
            result = ctx.record(replace(result, compute_seconds=seconds))
        return result


def run_all(ctx: StageContext, progress: Callable[[str], None] | None = None) -> dict[str, StageResult]:
    results = {}
    with week_lease(ctx, STAGES[0]):  # the week is this run's from its first stage to its last
        for i, stage in enumerate(STAGES, 1):
            if progress:
                progress(f"[{i}/{len(STAGES)}] {stage} ...")
            results[stage] = run_stage(stage, ctx)
    return results
