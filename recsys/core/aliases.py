"""The two roles a model version plays, by name: registry aliases and A/B test arms alike.

``champion`` is the served model; ``challenger`` waits for review or is tested against it. The
registry (:mod:`recsys.promotion.registry`) moves MLflow aliases of these names, the A/B test
(:mod:`recsys.experiments.abtest`) names its arms after them, and the model-history page
(:mod:`recsys.reporting.ui_pages`) shows them.
"""

from __future__ import annotations

CHAMPION = "champion"
CHALLENGER = "challenger"
