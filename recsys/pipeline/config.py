"""Typed stage configuration with documented defaults (one pydantic model per stage).

Defaults live in the models. A JSON file named by ``RECSYS_CONFIG`` may override any of them, e.g.::

    {"als": {"rank": 64}, "gate": {"baseline_margin": 0.1}, "prepare": {"window_weeks": 8}}

Unknown keys and bad values are refused with a message naming the field.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from recsys.core.errors import ConfigError
from recsys.data.prepare import PrepareConfig
from recsys.evaluation.drift import DriftConfig
from recsys.experiments.ab_config import ExperimentConfig
from recsys.io.spark import EngineConfig
from recsys.models.content import ContentConfig
from recsys.models.hybrid import HybridConfig
from recsys.models.rerank import RerankConfig
from recsys.models.rows import RowsConfig
from recsys.privacy.anonymize import AnonymizeConfig
from recsys.promotion.gates import GateThresholds
from recsys.training.als import ALSConfig
from recsys.training.tuning import TuningConfig
from recsys.validation.config import ValidationConfig


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    anonymize: AnonymizeConfig = Field(default_factory=AnonymizeConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    als: ALSConfig = Field(default_factory=ALSConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)
    content: ContentConfig = Field(default_factory=ContentConfig)
    hybrid: HybridConfig = Field(default_factory=HybridConfig)
    served_model: str = Field(
        "hybrid",
        pattern="^(als|hybrid)$",
        description="what is registered, gated and served: hybrid (ALS + content + popularity) or als alone",
    )
    rows: RowsConfig = Field(default_factory=RowsConfig)
    rerank: RerankConfig = Field(default_factory=RerankConfig)
    gate: GateThresholds = Field(default_factory=GateThresholds)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    top_k: int = Field(10, ge=1, le=1000, description="length of each user's recommendation list")
    promotion: str = Field(
        "auto",
        pattern="^(auto|manual|ab|never)$",
        description="auto: a passed gate moves champion; manual: a person approves in the Airflow UI; "
        "ab: a passed candidate becomes the challenger of the A/B test (`experiment`) and only a ship "
        "readout moves champion; never",
    )
    experiment: ExperimentConfig | None = Field(
        None,
        description="champion-vs-challenger A/B test: users are split between the arms' models by a "
        "salted hash, exposures are logged, the ab_readout Dag reads the test out",
    )
    challenger_on_reject: bool = Field(False, description="give a rejected candidate the challenger alias")
    backfill_promotion: str = Field(
        "never",
        pattern="^(auto|never)$",
        description="promotion mode of backfill runs: never (default: a backfill never moves champion) or auto",
    )

    @model_validator(mode="after")
    def _ab_needs_experiment(self) -> PipelineConfig:
        if self.promotion == "ab" and self.experiment is None:
            raise ValueError("promotion 'ab' needs an `experiment` (experiment_id, salt, arms)")
        return self

    @model_validator(mode="after")
    def _gate_metric_matches_k(self) -> PipelineConfig:
        metric = self.gate.primary_metric
        if not metric.endswith(f"@{self.top_k}"):
            raise ValueError(f"gate.primary_metric {metric!r} must be measured at top_k={self.top_k}")
        if not self.tuning.metric.endswith(f"@{self.top_k}"):
            raise ValueError(f"tuning.metric {self.tuning.metric!r} must be measured at top_k={self.top_k}")
        return self

    @classmethod
    def load(cls, path: Path | None) -> PipelineConfig:
        if path is None:
            return cls()
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc}") from None
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(f"config file {path}: {where}: {first['msg']}") from None
