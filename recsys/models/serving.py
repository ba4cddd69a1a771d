"""MLflow pyfunc flavour of the served model (ALS alone, or the ALS + content hybrid): given user
pseudonyms, return their top-N items and why.

Request: a DataFrame with a ``user`` column (pseudonyms) and optionally ``k``; or ``params={"k": N}``.
Response: a long DataFrame (user, rank, item_id, score, source, reason_item_id, reason), best first.
``source`` is "model" (ALS), "als+content" / "content" (the hybrid's signals) or "popularity": users
the model does not know get the most popular items, with a null score. ``reason`` is "Because you
watched <title>" naming the user's watched item most similar to the recommendation (ALS item
factors, and content features for a hybrid), or "popular with everyone".

``mlflow models serve -m models:/<name>@champion --env-manager local`` answers such requests.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recsys.models.factors import FactorModel
from recsys.models.hybrid import HybridModel
from recsys.models.rows import explain, model_history, model_similarity, model_titles

DEFAULT_K = 10


class FactorModelPyfunc(mlflow.pyfunc.PythonModel):
    """The served model: a FactorModel (artifact ``model_dir``), or a HybridModel (``hybrid_dir``)."""

    def __getstate__(self) -> dict[str, Any]:
        # MLflow loads the model to check the input example before it pickles this object: the loaded
        # model stays out of the pickle (it is in the artifacts, which load_context reads). With it,
        # python_model.pkl held every user's factors and history a second time (217 MB at 3M pairs),
        # which the train stage wrote, every load unpickled and the privacy scan read as text.
        return {name: value for name, value in self.__dict__.items() if name != "model"}

    def load_context(self, context: Any) -> None:
        if "hybrid_dir" in context.artifacts:
            self.model: FactorModel | HybridModel = HybridModel.load(Path(context.artifacts["hybrid_dir"]))
        else:
            self.model = FactorModel.load(Path(context.artifacts["model_dir"]))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if "user" not in model_input.columns:
            raise ValueError("input must have a 'user' column of user pseudonyms")
        k = int(
            (params or {}).get("k") or (model_input["k"].iloc[0] if "k" in model_input.columns else DEFAULT_K)
        )
        users = [str(u) for u in model_input["user"].tolist()]
        return explained(self.model, self.model.recommend(users, k=k))


def explained(
    model: FactorModel | HybridModel, recs: pd.DataFrame, titles: Mapping[int, str] | None = None
) -> pd.DataFrame:
    """``recs`` of ``model`` (a FactorModel or HybridModel) as served: ``source`` and the reason,
    naming titles from ``titles`` (default: the model's own catalogue, a hybrid's content model)."""
    out = serving_frame(recs)
    names = titles if titles is not None else model_titles(model)
    return explain(out, model_history(model), model_similarity(model), names)


def serving_frame(recs: pd.DataFrame) -> pd.DataFrame:
    """Name each item's ``source`` (a FactorModel's are "model"; a fallback is "popularity") and make
    fallback scores null rather than NaN (strict JSON)."""
    out = recs.copy()
    fallback = out["score"].isna() | (out["source"] == "popular" if "source" in out.columns else False)
    given = out["source"] if "source" in out.columns else pd.Series("model", index=out.index)
    out["source"] = np.where(fallback, "popularity", given)
    out["score"] = out["score"].astype(object).where(~fallback, None)
    return out


def log_pyfunc(
    model_dir: Path | None = None, example_user: str = "", name: str = "model", hybrid_dir: Path | None = None
) -> Any:
    """Log a pyfunc model of the active run serving ``model_dir`` (a saved FactorModel) or the
    hybrid saved at ``hybrid_dir`` (which holds its own ALS factors); returns mlflow's ModelInfo."""
    if (model_dir is None) == (hybrid_dir is None):
        raise ValueError("log_pyfunc needs exactly one of model_dir (ALS) and hybrid_dir (hybrid)")
    example = pd.DataFrame({"user": [example_user]})
    artifacts = {"hybrid_dir": str(hybrid_dir)} if hybrid_dir is not None else {"model_dir": str(model_dir)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's hints on integer columns and cloudpickle
        return _log(artifacts, example, name)


def _log(artifacts: dict[str, str], example: pd.DataFrame, name: str) -> Any:
    # The pickled python_model refers to recsys.models.serving by name: serving needs this package
    # installed (`pip install -e .`, as `make run` does), e.g. `mlflow models serve --env-manager local`.
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=FactorModelPyfunc(),
        artifacts=artifacts,
        input_example=(example, {"k": DEFAULT_K}),
        pip_requirements=["mlflow", "pandas", "numpy", "scipy", "pyarrow", "scikit-learn"],
    )
