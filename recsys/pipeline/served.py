"""The model as the evaluate and recommend stages score and serve it: through the configured
re-ranking, with the content model it explains its picks by."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from recsys.io.lakefs import lake_location
from recsys.io.storage import fetch
from recsys.models.content import ContentModel
from recsys.models.hybrid import HybridModel
from recsys.models.rerank import Reranked
from recsys.pipeline.context import StageContext
from recsys.pipeline.results import ContentResult


def content_model_of(served: Any, week_content: Callable[[], Any]) -> Any:
    """The served hybrid's content model, or (ALS served alone) the one the content stage fitted,
    from ``week_content()`` (:func:`week_content`), called only then."""
    return served.content if isinstance(served, HybridModel) else week_content()


def week_content(ctx: StageContext) -> Any:
    """The content model the week's content stage fitted (read from the lake)."""
    location = lake_location(ctx.result(ContentResult).path)
    with tempfile.TemporaryDirectory(prefix="recsys-content-") as tmp:
        return ContentModel.load(fetch(location, Path(tmp) / "content"))


def reranked(ctx: StageContext, model: Any, history: pd.DataFrame, genres: dict[int, set[str]]) -> Any:
    """``model`` as served: through the configured re-ranking (MMR / genre caps / exploration), if any."""
    rerank = ctx.config.rerank
    if rerank.method == "none" and rerank.exploration_share == 0:
        return model
    return Reranked(model, genres, history, rerank)
