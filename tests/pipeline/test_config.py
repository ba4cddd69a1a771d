"""Configuration is strict: every config model refuses a key it does not know, and the one JSON
file ``RECSYS_CONFIG`` names is refused in one line that names the mistyped field."""

from __future__ import annotations

import importlib
import inspect
import json
import pkgutil

import pytest
from pydantic import BaseModel, ValidationError

import recsys
from recsys.core.errors import ConfigError
from recsys.pipeline.config import PipelineConfig

UNKNOWN = "no_such_setting"


def recsys_models() -> list[type[BaseModel]]:
    """Every pydantic model class defined in the package (each module imported, so none is missed)."""
    found: dict[str, type[BaseModel]] = {}
    for info in pkgutil.walk_packages(recsys.__path__, prefix="recsys."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseModel) and cls.__module__.startswith("recsys."):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


MODELS = recsys_models()


def test_the_walk_finds_the_config_models():
    names = {cls.__name__ for cls in MODELS}
    assert {"PipelineConfig", "ALSConfig", "PrepareConfig", "AnonymizeConfig", "GateThresholds"} <= names


@pytest.mark.parametrize("model", MODELS, ids=lambda cls: f"{cls.__module__}.{cls.__qualname__}")
def test_every_model_refuses_an_unknown_key(model: type[BaseModel]):
    with pytest.raises(ValidationError) as caught:
        model.model_validate({UNKNOWN: 1})
    # refused for the unknown key itself, not only for a required field left out
    assert any(e["type"] == "extra_forbidden" and e["loc"] == (UNKNOWN,) for e in caught.value.errors()), (
        caught.value.errors()
    )


@pytest.mark.parametrize(
    ("typo", "field"),
    [
        ({"als": {"rnak": 64}}, "als.rnak"),
        ({"prepare": {"window_weks": 2}}, "prepare.window_weks"),
        ({"anonymize": {"kk": 50}}, "anonymize.kk"),
    ],
)
def test_a_typo_in_the_config_file_is_refused_naming_the_field(tmp_path, typo, field):
    path = tmp_path / "recsys.json"
    path.write_text(json.dumps(typo), encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        PipelineConfig.load(path)
    message = str(caught.value)
    assert "\n" not in message
    assert f"{path}: {field}: " in message
    assert "not permitted" in message
