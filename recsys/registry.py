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
from typing import TYPE_CHECKING, Any

from recsys.gates import GateDecision, require_passed
from recsys.model import FactorModel

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TAG_STATUS = "validation_status"
TAG_REASONS = "gate_reasons"
TAG_WEEK = "week"


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
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        return None


def load_factor_model(model_uri: str) -> FactorModel:
    """Load a logged or registered pyfunc FactorModel (e.g. ``models:/recsys_als@champion``)."""
    import mlflow.pyfunc

    wrapper = mlflow.pyfunc.load_model(model_uri).unwrap_python_model()
    return wrapper.model


def ensure_registered_model(client: MlflowClient, name: str) -> None:
    from mlflow.exceptions import MlflowException

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
    promote: bool = True,
) -> Registration:
    """Register the run's model (once) with its evidence; move ``champion`` if the gate passed."""
    ensure_registered_model(client, name)
    version = find_version_for_run(client, name, run_id)
    if version is None:
        import mlflow

        version = mlflow.register_model(model_uri, name, tags=tags)
    status = "passed" if decision.passed else "rejected"
    client.set_model_version_tag(name, version.version, TAG_STATUS, status)
    client.set_model_version_tag(name, version.version, TAG_REASONS, json.dumps(decision.reasons))
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    previous = champion_version(client, name)
    previous_version = previous.version if previous is not None else None
    if decision.passed and promote:
        promote_version(client, name, version.version, decision)
    current = client.get_model_version(name, version.version)
    return Registration(
        name=name,
        version=str(version.version),
        run_id=run_id,
        status=status,
        aliases=list(current.aliases),
        previous_champion=previous_version if previous_version != str(version.version) else None,
    )


def promote_version(client: MlflowClient, name: str, version: str, decision: GateDecision) -> None:
    """Move ``champion`` to ``version``. Refuses a decision that did not pass."""
    require_passed(decision)
    previous = champion_version(client, name)
    if previous is not None and str(previous.version) == str(version):
        return  # already champion: idempotent
    if previous is not None:
        client.set_model_version_tag(name, version, "previous_champion", str(previous.version))
    client.set_registered_model_alias(name, CHAMPION, str(version))
    log.info("%s version %s is now %s", name, version, CHAMPION)


def registry_state(client: MlflowClient, name: str) -> list[dict[str, Any]]:
    """Every version with its aliases and key tags, newest first (for `recsys registry`)."""
    from mlflow.exceptions import MlflowException

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
                "ndcg@10": v.tags.get("ndcg_at_10", ""),
                "run_id": v.run_id,
            }
        )
    return rows
