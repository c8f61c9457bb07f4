"""Feature services, one per model version: what each model was trained on and scores with.

A new model version that needs other features gets a new service (``churn_model_v2`` ...);
a service, once a model is registered against it, never changes.
"""

from __future__ import annotations

from feast import FeatureService, FeatureView

from feature_repo.feature_views import VIEWS

#: The models and the families their first version reads (all of them).
MODELS = {
    "churn_model_v1": "Churn: P(no order in the next 90 days).",
    "next_purchase_model_v1": "Next purchase: P(order within 30 days) and expected date.",
    "value_model_v1": "Value: expected net spend in the next 180 days.",
}


def model_services(views: dict[str, FeatureView]) -> dict[str, FeatureService]:
    """The feature services of all model versions over ``views``, by name."""
    return {
        name: FeatureService(name=name, features=list(views.values()), description=description)
        for name, description in MODELS.items()
    }


SERVICES = model_services(VIEWS)
churn_model_v1 = SERVICES["churn_model_v1"]
next_purchase_model_v1 = SERVICES["next_purchase_model_v1"]
value_model_v1 = SERVICES["value_model_v1"]
