import pytest
from pydantic import ValidationError

from services.alerts.model import EngagementModel, Factor


def test_default_model_is_valid_and_segments_override_it():
    model = EngagementModel.model_validate(
        {
            "segments": {
                "tier:gold": {"thresholds": {"alert_below": 60}, "weights": {"sentiment": 0}},
                "lifecycle_stage:trial": {"params": {"activity_target": 3}},
            }
        }
    )
    assert model.segment_of({"tier": "gold"}) == "tier:gold"
    assert model.segment_of({"tier": "gold", "lifecycle_stage": "trial"}) == "lifecycle_stage:trial"
    assert model.segment_of({"tier": "silver"}) == "default"
    gold = model.for_segment("tier:gold")
    assert gold.thresholds.alert_below == 60
    assert gold.weights[Factor.sentiment] == 0
    assert gold.weights[Factor.activity] == 35
    assert model.for_segment("lifecycle_stage:trial").params.activity_target == 3


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"weights": {"activity": -1}}, "weights must be >= 0"),
        ({"weights": {"bogus": 1}}, "activity"),
        ({"weights": {"activity": 0}}, "at least one weight"),
        ({"thresholds": {"alert_below": 140}}, "less than or equal to 100"),
        ({"segments": {"plan:x": {}}}, "segment keys"),
        ({"segments": {"tier:x": {"thresholds": {"cooldown_hours": -1}}}}, "cooldown_hours"),
        ({"segments": {"tier:x": {"params": {"nonsense": 1}}}}, "nonsense"),
        ({"thresholds": {"rules": ["when_i_feel_like_it"]}}, "below_threshold"),
        ({"colour": "blue"}, "Extra inputs"),
    ],
)
def test_invalid_models_say_what_is_wrong(body, message):
    with pytest.raises(ValidationError, match=message):
        EngagementModel.model_validate(body)
