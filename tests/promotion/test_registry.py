"""The registry lifecycle on a real MLflow store: gate outcomes, promotion modes, challenger, rollback."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.errors import RecsysError
from recsys.models.factors import FactorModel, seen_matrix
from recsys.models.serving import log_pyfunc
from recsys.promotion.gates import GateDecision
from recsys.promotion.registry import (
    aliases_of,
    champion_version,
    promote_version,
    register_candidate,
    rollback,
)

PASSED = GateDecision(passed=True, reasons=["PASS: t"], checks={"t": True}, metrics={})
REJECTED = GateDecision(passed=False, reasons=["FAIL: t"], checks={"t": False}, metrics={})


def tiny_model() -> FactorModel:
    users, items = np.array(["a"]), np.array([1, 2], dtype=np.int64)
    empty = pd.DataFrame({"user": pd.Series(dtype=str), "item_id": pd.Series(dtype=np.int64)})
    return FactorModel(
        users,
        items,
        np.ones((1, 1), np.float32),
        np.ones((2, 1), np.float32),
        seen_matrix(empty, users, items),
        popular=items,
    )


@pytest.fixture
def registry(settings, tmp_path):
    from recsys.io.tracking import configure

    client = configure(settings)
    counter = iter(range(100))

    def candidate(decision: GateDecision, promotion: str = "auto", challenger_on_reject: bool = False):
        with mlflow.start_run() as run:
            info = log_pyfunc(tiny_model().save(tmp_path / f"m{next(counter)}"), example_user="a")
        return register_candidate(
            client,
            settings.model_name,
            run.info.run_id,
            info.model_uri,
            decision,
            {"week": "2026-11-15"},
            promotion,
            challenger_on_reject,
        )

    return client, settings.model_name, candidate


def test_auto_mode_first_run_and_rejection(registry):
    client, name, candidate = registry
    first = candidate(PASSED)
    assert first.aliases == [CHAMPION] and first.previous_champion is None
    rejected = candidate(REJECTED)
    assert rejected.aliases == [] and str(champion_version(client, name).version) == first.version
    challenger = candidate(REJECTED, challenger_on_reject=True)
    assert challenger.aliases == [CHALLENGER]


def test_manual_mode_waits_as_challenger_until_approved(registry):
    client, name, candidate = registry
    first = candidate(PASSED)
    pending = candidate(PASSED, promotion="manual")
    assert pending.aliases == [CHALLENGER]
    assert str(champion_version(client, name).version) == first.version
    assert promote_version(client, name, pending.version, PASSED, approved_by="alice") is True
    assert aliases_of(client, name, pending.version) == [CHAMPION]  # challenger alias moved off
    assert client.get_model_version(name, pending.version).tags["review"] == "approved by alice"
    assert promote_version(client, name, pending.version, PASSED) is False  # idempotent
    never = candidate(PASSED, promotion="never")
    assert never.aliases == []


def test_rollback_restores_the_previous_champion_and_is_idempotent(registry):
    client, name, candidate = registry
    v1 = candidate(PASSED)
    v2 = candidate(PASSED)
    bad = candidate(REJECTED)
    assert str(champion_version(client, name).version) == v2.version
    result = rollback(client, name, reason="bad recs in prod", by="oncall")
    assert result == {
        "changed": True,
        "champion": v1.version,
        "from": v2.version,
        "by": "oncall",
        "reason": "bad recs in prod",
    }
    assert str(champion_version(client, name).version) == v1.version
    assert "oncall" in client.get_model_version(name, v1.version).tags["rolled_back_to"]
    assert "bad recs in prod" in client.get_model_version(name, v2.version).tags["rolled_back_from"]
    assert rollback(client, name, to_version=v1.version)["changed"] is False
    with pytest.raises(RecsysError, match="did not pass its gate"):
        rollback(client, name, to_version=bad.version)
    with pytest.raises(RecsysError, match="no version 999"):
        rollback(client, name, to_version="999")
    versions = client.search_model_versions(f"name = '{name}'")
    assert len(versions) == 3  # promotion and rollback never create versions


def test_rollback_without_history_says_so(registry):
    client, name, candidate = registry
    with pytest.raises(RecsysError, match="no champion"):
        rollback(client, name)
    candidate(PASSED)
    with pytest.raises(RecsysError, match="no previous champion"):
        rollback(client, name)


def test_ab_mode_first_model_is_champion_then_one_challenger_at_a_time(registry):
    from recsys.promotion.registry import TAG_AB, gate_decision_of, retire_challenger, serving_challenger

    client, name, candidate = registry
    first = candidate(PASSED, promotion="ab")
    assert first.aliases == [CHAMPION]  # nothing to test against yet
    assert serving_challenger(client, name) is None
    rejected = candidate(REJECTED, promotion="ab", challenger_on_reject=True)
    assert rejected.aliases == []  # a rejected model is never served to users, whatever the flag
    second = candidate(PASSED, promotion="ab")
    assert second.aliases == [CHALLENGER]
    assert client.get_model_version(name, second.version).tags[TAG_AB] == "under test"
    assert str(serving_challenger(client, name).version) == second.version
    third = candidate(PASSED, promotion="ab")  # a test is running: the next candidate waits
    assert third.aliases == []
    assert (
        client.get_model_version(name, third.version)
        .tags[TAG_AB]
        .startswith(f"queued: version {second.version}")
    )
    assert str(champion_version(client, name).version) == first.version
    # the registered gate decision is what promotion checks
    assert gate_decision_of(client.get_model_version(name, second.version)).passed is True
    assert gate_decision_of(client.get_model_version(name, rejected.version)).passed is False
    retire_challenger(client, name, second.version, "kept champion: test")
    assert serving_challenger(client, name) is None
    assert client.get_model_version(name, second.version).tags[TAG_AB] == "kept champion: test"
    fourth = candidate(PASSED, promotion="ab")  # the alias is free again
    assert fourth.aliases == [CHALLENGER]


def test_serving_challenger_ignores_a_rejected_challenger(registry):
    from recsys.promotion.registry import serving_challenger

    client, name, candidate = registry
    candidate(PASSED)
    flagged = candidate(REJECTED, challenger_on_reject=True)
    assert flagged.aliases == [CHALLENGER]
    assert serving_challenger(client, name) is None
