"""MLflow pyfunc flavour of a FactorModel: given user pseudonyms, return their top-N items.

Request: a DataFrame with a ``user`` column (pseudonyms) and optionally ``k``; or ``params={"k": N}``.
Response: a long DataFrame (user, rank, item_id, score, source), best first; users the model does not
know get the most popular items (``source`` = "popularity", score null).

``mlflow models serve -m models:/<name>@champion --env-manager local`` answers such requests.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from recsys.model import FactorModel

DEFAULT_K = 10


class FactorModelPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context: Any) -> None:
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
        return serving_frame(self.model.recommend(users, k=k))


def serving_frame(recs: pd.DataFrame) -> pd.DataFrame:
    """Add ``source`` (model / popularity) and make fallback scores null rather than NaN (strict JSON)."""
    out = recs.copy()
    fallback = out["score"].isna()
    out["source"] = np.where(fallback, "popularity", "model")
    out["score"] = out["score"].astype(object).where(~fallback, None)
    return out


def log_pyfunc(model_dir: Path, example_user: str, name: str = "model") -> Any:
    """Log ``model_dir`` as a pyfunc model of the active run; returns mlflow's ModelInfo."""
    example = pd.DataFrame({"user": [example_user]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # mlflow's hints on integer columns and cloudpickle
        return _log(model_dir, example, name)


def _log(model_dir: Path, example: pd.DataFrame, name: str) -> Any:
    # The pickled python_model refers to recsys.serving by name: serving needs this package
    # installed (`pip install -e .`, as `make run` does), e.g. `mlflow models serve --env-manager local`.
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=FactorModelPyfunc(),
        artifacts={"model_dir": str(model_dir)},
        input_example=(example, {"k": DEFAULT_K}),
        pip_requirements=["mlflow", "pandas", "numpy", "scipy", "pyarrow"],
    )
