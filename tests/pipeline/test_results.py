"""Typed stage results: a result's ``to_xcom()`` is exactly the record the stage writes, and a record
read back (``from_record``) gives the same dict again, whatever keys it holds."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date

import numpy as np
import pytest

from recsys.core.settings import Settings
from recsys.io.storage import attempt_scope
from recsys.pipeline.context import AB_STAGES, STAGES, StageContext
from recsys.pipeline.results import (
    RESULT_TYPES,
    AbReadoutResult,
    GateResult,
    PrepareResult,
    RecommendResult,
    TrainResult,
)

WEEK = "2026-11-08"
GATE = {
    "passed": True,
    "reasons": ["PASS: ndcg@10 0.1 >= baseline"],
    "checks": {"baseline": True},
    "metrics": {"ndcg@10": 0.1, "champion": None},
}
RECORDS = {
    "window": {"mode": "process", "processed": [], "failed": {}, "window": {"size": 12, "weeks": 1}},
    "ingest": {"kinds": {"events": {"rows_read": 3, "rows_staged": 3, "rows_malformed": 0}}},
    "validate": {
        "accounting": {"events": {"rows_read": 3}},
        "report_html": "/r.html",
        "report_json": "/r.json",
        "passed": True,
        "mlflow_run_id": "abc",
    },
    "anonymize": {
        "events": 3,
        "users": 2,
        "items": 2,
        "k_anonymity": {"k": 5},
        "events_of_erased_users_dropped": 0,
        "columns": {"events": ["user"], "users": ["user"]},
    },
    "prepare": {
        "events_in": 3,
        "duplicates_dropped": 0,
        "pairs": 3,
        "pairs_without_preference": 0,
        "train_pairs": 2,
        "holdout_pairs": 1,
        "users": 2,
        "items": 2,
        "holdout_users": 1,
        "train_digest": "d",
        "window_weeks": [WEEK],
        "window_size": 12,
        "window": "window: 1 of 12 weeks",
        "profile": "/p.html",
    },
    "content": {"run_id": "c", "path": "/m", "items": 2, "features": 5, "content_digest": "x"},
    "train": {
        "run_id": "t",
        "model_uri": "runs:/t/model",
        "fit_seconds": 1.5,
        "rank": 32,
        "users": 2,
        "items": 2,
        "als": {"rank": 32},
        "tuning": None,
        "served_model": "hybrid",
        "hybrid": {"warm": {"content": 0.1, "popularity": 0.0}},
        "reused": False,
    },
    "evaluate": {
        "k": 10,
        "served_model": "als",
        "candidate": {"ndcg@10": 0.1},
        "baseline": {"ndcg@10": 0.05},
        "champion": None,
        "champion_version": None,
        "models": {"als": {"all": {"ndcg@10": 0.1}}},
    },
    "gate": GATE,
    "register": {
        "name": "recsys_als",
        "version": "1",
        "run_id": "t",
        "status": "passed",
        "aliases": ["champion"],
        "previous_champion": None,
        "promotion": "auto",
        "review": "not needed",
        "note": None,
    },
    "promote": {"version": "1", "changed": True, "approved_by": "ana", "aliases": ["champion"]},
    "recommend": {"status": "skipped", "reason": "no model holds the champion alias yet"},
    "privacy_scan": {
        "clean": True,
        "files_scanned": 4,
        "findings": [],
        "unscanned": [],
        "checked": {"lake": 4},
        "identifiers": {"user_id": 2},
        "identifiers_not_in_text": 0,
    },
    "feedback": {"status": "skipped", "reason": "no experiment configured (config `experiment`)"},
    "ab_readout": {
        "experiment_id": "e",
        "promotion": "ab",
        "status": "skipped",
        "reason": "no champion yet",
    },
}


def test_every_stage_has_a_result_type():
    assert set(RESULT_TYPES) == {*STAGES, *AB_STAGES, "promote"} == set(RECORDS)


@pytest.mark.parametrize("stage", sorted(RECORDS))
def test_a_record_reads_back_to_the_same_dict(stage):
    record = {"stage": stage, "week": WEEK, **RECORDS[stage], "compute_seconds": 0.25}
    result = RESULT_TYPES[stage].from_record(record)
    assert result.stage == stage and result.week == WEEK and result.compute_seconds == 0.25
    assert result.to_xcom() == record
    assert list(result.to_xcom())[:2] == ["stage", "week"] and list(result.to_xcom())[-1] == "compute_seconds"
    without_time = {k: v for k, v in record.items() if k != "compute_seconds"}
    assert replace(result, compute_seconds=None).to_xcom() == without_time


def test_optional_keys_are_written_only_with_a_value_and_unknown_keys_are_kept():
    record = {"stage": "recommend", "week": WEEK, "status": "skipped", "reason": "r"}
    skipped = RecommendResult.from_record(record)
    assert skipped.path is None and skipped.experiment is None
    assert skipped.to_xcom() == record
    older = {"stage": "ab_readout", "week": WEEK, "status": "read out", "decision": "ship", "legacy": 1}
    result = AbReadoutResult.from_record(older)
    assert result.decision == "ship" and result.extra == {"legacy": 1}
    assert result.to_xcom() == older
    # keys a stage wrote only in later versions may be missing from an older prepare record
    old_prepare = {k: v for k, v in RECORDS["prepare"].items() if k not in ("window_size", "window")}
    assert PrepareResult.from_record({"week": WEEK, **old_prepare}).window_size is None


def test_a_record_of_another_stage_or_without_a_key_is_refused():
    with pytest.raises(ValueError, match="not a train result: the record is of stage 'gate'"):
        TrainResult.from_record({"stage": "gate", "week": WEEK, **GATE})
    with pytest.raises(ValueError, match="not a train result: missing model_uri, rank"):
        TrainResult.from_record({"week": WEEK, "run_id": "t", "fit_seconds": None})


def test_the_gate_result_gives_its_decision():
    decision = GateResult.from_record({"week": WEEK, **GATE}).decision()
    assert decision.passed and decision.reasons == GATE["reasons"]


def test_record_writes_what_it_returns_json_safe(tmp_path):
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path)})
    ctx = StageContext.create(date(2026, 11, 8), settings)
    with attempt_scope() as attempt:  # what run_stage does around a stage
        result = record_train(ctx)
    assert result.fit_seconds is None and type(result.rank) is int and type(result.als["alpha"]) is float
    assert result.to_xcom() == ctx.lake.read_stage_result(ctx.week, "train")
    # the file also names the attempt that wrote it (it commits the stage's partitions); XCom does not
    on_disk = json.loads(ctx.lake.stage_result_file(ctx.week, "train").read_text())
    assert on_disk.pop("attempt") == attempt and on_disk == result.to_xcom()
    assert ctx.result(TrainResult) == result and ctx.recorded(PrepareResult) is None
    # outside a stage's attempt (a stage function called on its own) the record names none
    record_train(ctx)
    assert "attempt" not in json.loads(ctx.lake.stage_result_file(ctx.week, "train").read_text())


def record_train(ctx: StageContext) -> TrainResult:
    return ctx.record(
        TrainResult(
            week=WEEK,
            run_id="t",
            model_uri="runs:/t/model",
            fit_seconds=float("nan"),
            rank=np.int64(32),
            users=2,
            items=2,
            als={"rank": 32, "alpha": np.float64(1.0)},
            tuning=None,
            served_model="als",
            hybrid=None,
            reused=False,
        )
    )
