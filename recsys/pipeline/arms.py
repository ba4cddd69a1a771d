"""The A/B test's arms in the recommend stage: who is served which model, and what was shown.

Without an ``experiment`` configured everyone is on the champion. With one, each user's arm comes
from the salted hash of their pseudonym (:func:`recsys.experiments.ab_config.assign`): the challenger
arm is served the challenger under test (or the champion while there is none) and the holdout
popularity; the lists shown are logged as exposures for the ``ab_readout`` Dag.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date
from typing import Any

import pandas as pd

from recsys.core.aliases import CHALLENGER
from recsys.experiments.ab_config import HOLDOUT, assign
from recsys.models.factors import popularity_model
from recsys.pipeline.context import StageContext
from recsys.promotion.registry import load_served_model, serving_challenger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arm:
    """Who is served which model in the recommend stage; ``name`` None: no experiment configured."""

    name: str | None
    users: list[str]
    model: Any
    version: str
    popularity: bool = False


def serving_arms(
    ctx: StageContext,
    client: Any,
    users: list[str],
    champion: Any,
    champion_version: str,
    train: pd.DataFrame,
) -> list[Arm]:
    """The arms of this week's recommendations: everyone on the champion without an experiment;
    with one, each user's arm (salted hash), the challenger arm on the challenger under test (or
    on the champion while there is none) and the holdout on popularity."""
    experiment = ctx.config.experiment
    if experiment is None:
        return [Arm(None, users, champion, champion_version)]
    assigned = assign(users, experiment)
    challenger = serving_challenger(client, ctx.settings.model_name)
    arms = []
    for name in experiment.report_order:
        members = sorted(assigned.index[assigned == name])
        if name == HOLDOUT:
            arms.append(Arm(name, members, popularity_model(train), "popularity", popularity=True))
        elif name == CHALLENGER and challenger is not None:
            model = load_served_model(f"models:/{ctx.settings.model_name}/{challenger.version}")
            arms.append(Arm(name, members, model, str(challenger.version)))
        else:
            arms.append(Arm(name, members, champion, champion_version))
    log.info(
        "recommend: experiment %s, %s",
        experiment.experiment_id,
        ", ".join(f"{a.name} {len(a.users)} users on {a.version}" for a in arms),
    )
    return arms


def exposures_frame(recs: pd.DataFrame, experiment_id: str, week: date) -> pd.DataFrame:
    """What each user was shown in "Top picks for you": one row per (user, item) with its position."""
    return pd.DataFrame(
        {
            "user": recs["user"].astype(str).to_numpy(),
            "arm": recs["arm"].astype(str).to_numpy(),
            "experiment_id": experiment_id,
            "item_id": recs["item_id"].astype("int64").to_numpy(),
            "position": recs["rank"].astype("int64").to_numpy(),
            "week": week.isoformat(),
            "model_version": recs["model_version"].astype(str).to_numpy(),
        }
    )
