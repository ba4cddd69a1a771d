"""Model versions registered before the package was layered name old module paths in their pickle."""

from __future__ import annotations

import importlib
import pickle

import pytest

from recsys import LEGACY_MODULES
from recsys.models.content import ContentModel
from recsys.models.factors import FactorModel
from recsys.models.hybrid import HybridModel
from recsys.models.serving import FactorModelPyfunc


@pytest.mark.parametrize(
    ("old", "cls"),
    [
        ("recsys.serving", FactorModelPyfunc),
        ("recsys.model", FactorModel),
        ("recsys.content", ContentModel),
        ("recsys.hybrid", HybridModel),
    ],
)
def test_a_pickle_naming_the_old_path_loads_todays_class(old, cls):
    today = pickle.dumps(cls, protocol=0)  # text protocol: b"c<module>\n<name>\n..."
    assert cls.__module__.encode() in today
    legacy = today.replace(cls.__module__.encode() + b"\n", old.encode() + b"\n")
    assert legacy != today
    assert pickle.loads(legacy) is cls
    assert importlib.import_module(old) is importlib.import_module(LEGACY_MODULES[old])


def test_unknown_old_paths_still_fail():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("recsys.no_such_module")
