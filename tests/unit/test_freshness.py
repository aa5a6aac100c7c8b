"""Freshness: the live model's data watermark against the newest validated data's."""

import pytest

from recsys.release.freshness import Freshness, FreshnessConfig


def test_lag_is_the_gap_between_the_watermarks_and_the_objective_bounds_it():
    fresh = Freshness.of("3", "2024-01-02 23:00:00", "2024-01-04T23:30:00", 48.0)
    assert fresh.lag_hours == pytest.approx(48.5)
    assert not fresh.ok
    assert "48.5 h behind (objective 48 h: BROKEN)" in fresh.line()
    assert fresh.as_dict() == {
        "version": "3",
        "model_data_end": "2024-01-02T23:00:00+00:00",
        "newest_data": "2024-01-04T23:30:00+00:00",
        "lag_hours": 48.5,
        "max_lag_hours": 48.0,
        "ok": False,
    }
    assert Freshness.of("3", "2024-01-02 23:00:00", "2024-01-04T22:59:00", 48.0).ok


def test_aware_and_naive_times_compare_in_utc_and_a_model_ahead_has_no_lag():
    aware = Freshness.of("1", "2024-01-01T02:00:00+02:00", "2024-01-01T01:00:00", 1.0)
    assert aware.lag_hours == pytest.approx(1.0)  # 02:00+02:00 is 00:00 UTC
    ahead = Freshness.of("1", "2024-01-02T00:00:00", "2024-01-01T00:00:00", 1.0)
    assert ahead.lag_hours == 0.0 and ahead.ok


def test_no_model_or_no_data_is_not_a_broken_objective():
    assert Freshness.of(None, None, "2024-01-01T00:00:00", 48.0).ok
    assert "no champion yet" in Freshness.of(None, None, None, 48.0).line()
    no_data = Freshness.of("2", "2024-01-01T00:00:00", None, 48.0)
    assert no_data.lag_hours is None and no_data.ok and "no validated data" in no_data.line()


def test_config_loads_the_shipped_objective_and_refuses_unknown_or_invalid_keys(tmp_path):
    assert FreshnessConfig.load() == FreshnessConfig()
    bad = tmp_path / "p.toml"
    bad.write_text("[freshness]\nmax_lag_hour = 3\n")
    with pytest.raises(ValueError, match="max_lag_hour"):
        FreshnessConfig.load(bad)
    bad.write_text("[freshness]\nmax_lag_hours = 0\n")
    with pytest.raises(ValueError, match="> 0"):
        FreshnessConfig.load(bad)
