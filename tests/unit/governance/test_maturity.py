"""The pure rules: promotion readiness, tier order, feedback scores, policy parsing."""

from __future__ import annotations

import pytest

from warden.errors import ValidationFailed
from warden.governance.feedback import score_of
from warden.governance.maturity import Counts, MaturityConfig, next_tier, previous_tier, readiness
from warden.agents.policy import decide
from warden.governance.policy_store import parse_policy

CFG = MaturityConfig()


def test_config_from_settings_strings() -> None:
    cfg = MaturityConfig.from_settings("1,2,3", "0.4,0.3,0.2", 2, 5)
    assert cfg.min_runs == {"student": 1, "intern": 2, "supervised": 3}
    assert cfg.max_intervention == {"student": 0.4, "intern": 0.3, "supervised": 0.2}
    assert (cfg.min_feedback, cfg.demotion_streak) == (2, 5)


def test_tier_order() -> None:
    assert [next_tier(t) for t in ("student", "intern", "supervised", "autonomous")] == [
        "intern", "supervised", "autonomous", None]
    assert [previous_tier(t) for t in ("student", "intern", "autonomous")] == [None, "student", "supervised"]


def test_ready_with_enough_clean_runs_and_positive_feedback() -> None:
    r = readiness("student", Counts(runs=10, successes=10, feedback_sum=1, feedback_count=1), CFG)
    assert (r.ready, r.next_tier, r.needs) == (True, "intern", [])


@pytest.mark.parametrize("runs", [10, 100, 10_000])
def test_volume_alone_never_promotes(runs: int) -> None:
    r = readiness("student", Counts(runs=runs, successes=runs), CFG)
    assert r.ready is False and r.needs == ["1 more feedback rating(s)"]


def test_failed_runs_do_not_count_toward_the_minimum() -> None:
    r = readiness("intern", Counts(runs=40, successes=20, failures=20, feedback_sum=2, feedback_count=2), CFG)
    assert r.ready is False and r.needs == ["5 more successful run(s) at intern (20 of 25)"]


def test_intervention_rate_at_the_threshold_blocks() -> None:
    c = Counts(runs=50, successes=50, approvals_rejected=2, corrections=1, feedback_sum=3, feedback_count=3)
    assert c.intervention_rate == pytest.approx(0.06)
    r = readiness("supervised", c, CFG)
    assert r.ready is False and r.needs == [
        "intervention rate 6% must fall below 5% (rejected actions and corrections per run)"]
    assert Counts().intervention_rate == 0.0


def test_negative_feedback_blocks_and_autonomous_is_the_top() -> None:
    r = readiness("student", Counts(runs=10, successes=10, feedback_sum=-0.5, feedback_count=3), CFG)
    assert r.needs == ["feedback is negative on balance"]
    top = readiness("autonomous", Counts(runs=999, successes=999, feedback_sum=9, feedback_count=9), CFG)
    assert (top.ready, top.next_tier) == (False, None)


def test_feedback_scores() -> None:
    assert [score_of(r) for r in ("up", "down", 1, 2, 3, 4, 5)] == [1.0, -1.0, -1.0, -0.5, 0.0, 0.5, 1.0]


def test_policy_round_trip_feeds_decide() -> None:
    body = parse_policy({"levels": {"4": "approve"}, "tools": {"rm": "deny"}, "cells": {"intern:2": "approve"},
                         "agents": {"agt_1": {"1": "deny"}}, "auto_promote": True})
    policy = body.to_policy()
    assert decide("autonomous", 4, policy).rule == "policy:level:4"
    assert decide("intern", 2, policy).outcome == "approve"
    assert decide("autonomous", 1, policy, tool="rm").outcome == "deny"
    assert decide("autonomous", 1, policy, agent_id="agt_1").rule == "policy:agent:agt_1:1"
    assert parse_policy(body.overrides_json() | {"auto_promote": True}) == body
    assert parse_policy({}).to_policy() is None


@pytest.mark.parametrize(("data", "param"), [
    ({"levels": {"2": "allow"}}, "levels.2"), ({"levels": {"0": "deny"}}, "levels"),
    ({"cells": {"intern": "deny"}}, "cells"), ({"agents": {"a": {"5": "deny"}}}, "agents"),
    ({"nope": 1}, "nope"),
])
def test_policy_refusals_name_the_field(data: dict, param: str) -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_policy(data)
    assert info.value.param == param


@pytest.mark.parametrize(("field", "value", "message"), [
    ("promotion_min_runs", "10,25", "three positive whole numbers"),
    ("promotion_min_runs", "10,0,50", "three positive whole numbers"),
    ("promotion_max_intervention", "0.5,x,0.1", "three rates between 0 and 1"),
    ("promotion_max_intervention", "0.5,0.2,2", "three rates between 0 and 1"),
])
def test_maturity_settings_are_validated(field: str, value: str, message: str) -> None:
    from warden.config import load_settings
    from warden.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        load_settings(**{field: value})
    assert str(info.value).startswith(f"WARDEN_{field.upper()}:") and message in str(info.value)
