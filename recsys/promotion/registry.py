"""The MLflow model registry, by aliases (stages are deprecated since MLflow 2.9).

* every candidate becomes a model version tagged with its evidence (week, run, metrics, gate
  decision: ``validation_status`` = passed / rejected, ``gate_reasons``);
* only a passed GateDecision can move the ``champion`` alias; the previous champion's version is
  recorded on the new one (``previous_champion``) for rollback;
* registration is idempotent: a run already registered is recognised by its run id.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recsys.core.aliases import CHALLENGER, CHAMPION
from recsys.core.errors import RecsysError
from recsys.models.factors import FactorModel
from recsys.promotion.gates import GateDecision, require_passed

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from recsys.models.hybrid import HybridModel

log = logging.getLogger(__name__)

PROMOTION_MODES = ("auto", "manual", "ab", "never")
TAG_AB = "ab_test"
TAG_STATUS = "validation_status"
TAG_REASONS = "gate_reasons"
TAG_WEEK = "week"
#: on a run that re-evaluates an already gated training run (a re-run of its week): that run's id
TAG_REEVALUATION_OF = "reevaluation_of"
#: on a version whose week was re-evaluated after its registration: the latest re-evaluation (JSON)
TAG_REEVALUATION = "reevaluation"


@dataclass(frozen=True)
class Registration:
    name: str
    version: str
    run_id: str
    status: str
    aliases: list[str]
    previous_champion: str | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def champion_version(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding the ``champion`` alias, or None when there is none (yet)."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def load_served_model(model_uri: str) -> FactorModel | HybridModel:
    """The model a logged or registered pyfunc serves (e.g. ``models:/recsys_als@champion``): a
    FactorModel, or a HybridModel when the version was trained with ``served_model`` hybrid."""
    import mlflow.pyfunc  # deferred: mlflow is heavy

    return mlflow.pyfunc.load_model(model_uri).unwrap_python_model().model


def load_factor_model(model_uri: str) -> FactorModel:
    """The ALS FactorModel of a logged or registered pyfunc (a hybrid's ALS part)."""
    model = load_served_model(model_uri)
    return model if isinstance(model, FactorModel) else model.als


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    try:
        client.get_registered_model(name)
    except MlflowException:
        client.create_registered_model(
            name, description="Weekly Spark ALS recommender (top-N items per user pseudonym)."
        )


def find_version_for_run(client: MlflowClient, name: str, run_id: str) -> ModelVersion | None:
    versions = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    return versions[0] if versions else None


def register_candidate(
    client: MlflowClient,
    name: str,
    run_id: str,
    model_uri: str,
    decision: GateDecision,
    tags: dict[str, str],
    promotion: str = "auto",
    challenger_on_reject: bool = False,
) -> Registration:
    """Register the run's model (once) with its evidence and apply the promotion mode.

    * ``auto``: a passed gate moves ``champion`` here;
    * ``manual``: a passed candidate gets ``challenger`` and waits for a person's approval
      (:func:`promote_version` is called after it);
    * ``ab``: a passed candidate becomes the A/B test's ``challenger`` when no passed challenger is
      under test (then it waits, tag ``ab_test`` = ``queued``); the first passed model, with no
      champion to test against, becomes ``champion``. Only a "ship" readout moves champion
      (:func:`recsys.pipeline.experiment.act_on_readout`);
    * ``never``: nothing moves.

    A rejected candidate never gets ``champion``; it gets ``challenger`` only when
    ``challenger_on_reject`` (and never in mode ``ab``, where the challenger is served to users).
    """
    if promotion not in PROMOTION_MODES:
        raise ValueError(f"promotion mode {promotion!r}: choose one of {', '.join(PROMOTION_MODES)}")
    ensure_registered_model(client, name)
    version = find_version_for_run(client, name, run_id)
    if version is None:
        import mlflow  # deferred: mlflow is heavy

        version = mlflow.register_model(model_uri, name, tags=tags)
    number = str(version.version)
    status = "passed" if decision.passed else "rejected"
    recorded = client.get_model_version(name, number).tags.get(TAG_STATUS)
    if recorded is None:
        client.set_model_version_tag(name, number, TAG_STATUS, status)
        client.set_model_version_tag(name, number, TAG_REASONS, json.dumps(decision.reasons))
        for key, value in tags.items():
            client.set_model_version_tag(name, number, key, value)
    elif status != recorded:
        # the evidence this version was registered (and perhaps promoted) on is immutable: a later
        # evaluation of the same run that disagrees is noted beside it (one that agrees adds nothing),
        # and moves an alias only as the mode says
        note = {"status": status, "reasons": decision.reasons, "trigger": tags.get("trigger", "")}
        client.set_model_version_tag(name, number, TAG_REEVALUATION, json.dumps(note)[:5000])
        log.warning(
            "version %s of %s keeps its gate decision %r; the re-evaluation of its run says %r",
            number,
            name,
            recorded,
            status,
        )
    previous = champion_version(client, name)
    previous_version = str(previous.version) if previous is not None else None
    if decision.passed and (promotion == "auto" or (promotion == "ab" and previous is None)):
        promote_version(client, name, number, decision)
    elif decision.passed and promotion == "ab":
        testing = serving_challenger(client, name)
        if testing is None or str(testing.version) == number:
            client.set_registered_model_alias(name, CHALLENGER, number)
            client.set_model_version_tag(name, number, TAG_AB, "under test")
        else:
            client.set_model_version_tag(
                name, number, TAG_AB, f"queued: version {testing.version} is under test"
            )
    elif (decision.passed and promotion == "manual") or (
        not decision.passed and challenger_on_reject and promotion != "ab"
    ):
        client.set_registered_model_alias(name, CHALLENGER, number)
        client.set_model_version_tag(
            name, number, "review", "pending" if decision.passed else "rejected_by_gate"
        )
    return Registration(
        name=name,
        version=number,
        run_id=run_id,
        status=status,
        aliases=aliases_of(client, name, number),
        previous_champion=previous_version if previous_version != number else None,
    )


def serving_challenger(client: MlflowClient, name: str) -> ModelVersion | None:
    """The version holding ``challenger`` when its gate passed (one users may be served), else None.

    A challenger given to a rejected candidate (``challenger_on_reject``) is for people to look at,
    never for users: it is not returned.
    """
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    try:
        version = client.get_model_version_by_alias(name, CHALLENGER)
    except MlflowException:
        return None
    return version if (version.tags or {}).get(TAG_STATUS) == "passed" else None


def gate_decision_of(version: ModelVersion) -> GateDecision:
    """The gate decision a registered version carries in its tags (status and reasons)."""
    tags = version.tags or {}
    passed = tags.get(TAG_STATUS) == "passed"
    try:
        reasons = list(json.loads(tags.get(TAG_REASONS, "[]")))
    except (TypeError, ValueError):
        reasons = []
    return GateDecision(passed=passed, reasons=reasons, checks={"registered_gate": passed}, metrics={})


def retire_challenger(client: MlflowClient, name: str, version: str, outcome: str) -> None:
    """End an A/B test without promotion: ``challenger`` leaves ``version``, which keeps the outcome
    in its ``ab_test`` tag."""
    model = client.get_registered_model(name)
    if str((model.aliases or {}).get(CHALLENGER, "")) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)
    client.set_model_version_tag(name, str(version), TAG_AB, outcome)
    log.info("%s version %s retired from its A/B test: %s", name, version, outcome)


def aliases_of(client: MlflowClient, name: str, version: str) -> list[str]:
    model = client.get_registered_model(name)
    return sorted(alias for alias, v in (model.aliases or {}).items() if str(v) == str(version))


def promote_version(
    client: MlflowClient, name: str, version: str, decision: GateDecision, approved_by: str | None = None
) -> bool:
    """Move ``champion`` to ``version``; returns False when it already was (idempotent).

    Refuses a decision that did not pass. Records the previous champion on the new one (for
    rollback) and, for a manual review, who approved it.
    """
    require_passed(decision)
    version = str(version)
    previous = champion_version(client, name)
    if previous is not None and str(previous.version) == version:
        return False
    if previous is not None:
        client.set_model_version_tag(name, version, "previous_champion", str(previous.version))
    if approved_by:
        client.set_model_version_tag(name, version, "review", f"approved by {approved_by}")
    client.set_registered_model_alias(name, CHAMPION, version)
    model = client.get_registered_model(name)
    if str((model.aliases or {}).get(CHALLENGER, "")) == version:
        client.delete_registered_model_alias(name, CHALLENGER)
    log.info("%s version %s is now %s", name, version, CHAMPION)
    return True


def rollback(
    client: MlflowClient, name: str, to_version: str | None = None, reason: str = "", by: str = "unknown"
) -> dict[str, Any]:
    """Move ``champion`` back to ``to_version`` or, by default, to the current champion's predecessor.

    Records who and why on both versions. Idempotent: when ``to_version`` already is the champion,
    nothing changes. Only versions that passed their gate can become champion again.
    """
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    current = champion_version(client, name)
    if to_version is None:
        if current is None:
            raise RecsysError(f"{name} has no champion to roll back from")
        to_version = current.tags.get("previous_champion")
        if not to_version:
            raise RecsysError(
                f"{name} version {current.version} has no previous champion recorded; name a version"
            )
    to_version = str(to_version)
    try:
        target = client.get_model_version(name, to_version)
    except MlflowException:
        raise RecsysError(f"{name} has no version {to_version}") from None
    if target.tags.get(TAG_STATUS) != "passed":
        raise RecsysError(
            f"{name} version {to_version} did not pass its gate ({target.tags.get(TAG_STATUS) or 'no status'}): "
            "it cannot become champion"
        )
    if current is not None and str(current.version) == to_version:
        return {"changed": False, "champion": to_version, "from": to_version}
    stamp = datetime.now(tz=UTC).isoformat(timespec="seconds")
    note = f"{stamp} by {by}: {reason or 'no reason given'}"
    client.set_registered_model_alias(name, CHAMPION, to_version)
    client.set_model_version_tag(name, to_version, "rolled_back_to", note)
    if current is not None:
        client.set_model_version_tag(name, str(current.version), "rolled_back_from", note)
    log.info(
        "%s champion rolled back from %s to %s (%s)",
        name,
        current.version if current else None,
        to_version,
        note,
    )
    return {
        "changed": True,
        "champion": to_version,
        "from": str(current.version) if current else None,
        "by": by,
        "reason": reason,
    }


def registry_state(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version with its aliases and key tags, newest first (for `recsys registry`)."""
    from mlflow.exceptions import MlflowException  # deferred: mlflow is heavy

    try:
        model = client.get_registered_model(name)
        versions = client.search_model_versions(f"name = '{name}'")
    except MlflowException:
        return []
    aliases_of: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        aliases_of.setdefault(str(version), []).append(alias)
    rows = []
    for v in sorted(versions, key=lambda mv: int(mv.version), reverse=True):
        rows.append(
            {
                "version": str(v.version),
                "aliases": sorted(aliases_of.get(str(v.version), [])),
                "status": v.tags.get(TAG_STATUS, ""),
                "week": v.tags.get(TAG_WEEK, ""),
                "trigger": v.tags.get("trigger", ""),
                "ndcg@10": v.tags.get("ndcg_at_10", ""),
                "run_id": v.run_id,
            }
        )
    return rows
