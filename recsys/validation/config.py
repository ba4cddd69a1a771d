"""The validate stage's thresholds (:class:`ValidationConfig`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class ValidationConfig(BaseModel):
    """Thresholds of the validate stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_quarantine_share: float = Field(
        0.2, ge=0.0, le=1.0, description="fail the batch when more of its rows than this are quarantined"
    )
    min_rows: int = Field(1, ge=0, description="fail the batch when it has fewer rows than this")
    max_events_per_user_per_day: int = Field(
        500, ge=1, description="a user with more events than this on one UTC day is treated as a bot"
    )
    history_weeks: int = Field(
        4,
        ge=0,
        description="earlier weeks (with a passed validation) the history checks compare with; 0: off",
    )
    history_min_weeks: int = Field(
        2, ge=1, description="history checks are skipped (and say so) with fewer earlier weeks than this"
    )
    volume_ratio: float = Field(
        5.0,
        gt=1.0,
        description="rows of a batch must lie in [median / r, median * r] of the earlier weeks "
        "(snapshots of items and users: only the lower bound)",
    )
    distinct_users_ratio: float = Field(
        5.0, gt=1.0, description="distinct users of the valid events within [median / r, median * r]"
    )
    rating_share_tolerance: float = Field(
        0.25, ge=0.0, le=1.0, description="share of rating events within the median share +- this"
    )
    rating_share_min: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="absolute lower bound of the rating share (replaces the history one)",
    )
    rating_share_max: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="absolute upper bound of the rating share (replaces the history one)",
    )
    spark_min_rows: int = Field(
        5_000_000,
        ge=0,
        description="a kind with more staged rows than this is validated on Spark. On a local master Spark "
        "is the slower engine (a week of 2.28M events: 208 s on Spark local[2], 84 s and 3.0 GiB peak in "
        "pandas), so only weeks whose pandas batch would crowd one machine (about 1.1 GiB per million "
        "rows) go there",
    )

    @model_validator(mode="after")
    def _share_bounds_ordered(self) -> ValidationConfig:
        low, high = self.rating_share_min, self.rating_share_max
        if low is not None and high is not None and low > high:
            raise ValueError(f"rating_share_min {low} is above rating_share_max {high}")
        return self
