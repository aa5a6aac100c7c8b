from pathlib import Path

import pytest

from recsys.config import PipelineConfig, ServingConfig, Settings, to_dict


def test_all_state_lives_under_recsys_home(tmp_path):
    s = Settings.from_env({"RECSYS_HOME": str(tmp_path / "h")})
    home = (tmp_path / "h").resolve()
    assert s.home == home
    assert s.event_store_url == f"sqlite:///{home / 'events.db'}"
    assert s.tracking_uri == f"sqlite:///{home / 'mlflow.db'}"  # absolute, never cwd-relative
    assert s.lake_root == home / "lake"
    assert s.artifact_root == (home / "mlartifacts").as_uri()


def test_every_location_can_be_pointed_elsewhere(tmp_path):
    s = Settings.from_env(
        {
            "RECSYS_HOME": str(tmp_path),
            "RECSYS_EVENT_STORE_URL": "postgresql+psycopg://db/events",
            "RECSYS_LAKE_ROOT": str(tmp_path / "lake2"),
            "MLFLOW_TRACKING_URI": "http://mlflow:5000",
            "RECSYS_ARTIFACT_ROOT": "s3://bucket/mlflow",
            "RECSYS_REGISTERED_MODEL": "shop",
        }
    )
    assert (s.event_store_url, s.tracking_uri, s.artifact_root, s.registered_model) == (
        "postgresql+psycopg://db/events",
        "http://mlflow:5000",
        "s3://bucket/mlflow",
        "shop",
    )
    assert s.lake_root == Path(tmp_path / "lake2").resolve()
    assert Settings.from_env(s.as_env()) == s  # what a child process is given


def test_a_tracking_server_keeps_its_own_artifact_store_unless_one_is_named(tmp_path):
    remote = {"RECSYS_HOME": str(tmp_path), "MLFLOW_TRACKING_URI": "http://mlflow:5000"}
    assert Settings.from_env(remote).artifact_root is None
    named = {**remote, "RECSYS_ARTIFACT_ROOT": "s3://bucket/mlflow"}
    assert Settings.from_env(named).artifact_root == "s3://bucket/mlflow"


@pytest.mark.parametrize("mode,field", [("full", "train"), ("incremental", "finetune")])
def test_epochs_override_the_preset_of_that_mode_only(mode, field):
    base = PipelineConfig()
    cfg = base.with_epochs(mode, 7)
    assert cfg.training(mode).epochs == 7
    other = "finetune" if field == "train" else "train"
    assert getattr(cfg, other) == getattr(base, other)
    assert cfg.training("incremental").mode == "incremental"


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="'full' or 'incremental'"):
        PipelineConfig().training("partial")


def test_an_unknown_event_loop_is_refused():
    with pytest.raises(ValueError, match="event_loop must be 'asyncio' or 'uvloop'"):
        ServingConfig(event_loop="trio")  # type: ignore[arg-type]


def test_config_flattens_for_mlflow_params():
    flat = to_dict(PipelineConfig())
    assert flat["model.max_len"] == 200 and flat["finetune.mode"] == "incremental"


def test_the_training_device_is_read_checked_and_passed_on(tmp_path):
    home = {"RECSYS_HOME": str(tmp_path)}
    assert Settings.from_env(home).train_device == "cpu"
    for name in ("auto", "cuda", "cuda:1", "cpu"):
        s = Settings.from_env({**home, "RECSYS_TRAIN_DEVICE": name})
        assert s.train_device == name
        assert Settings.from_env(s.as_env()) == s
    for bad in ("gpu", "cuda:", "CUDA", "cuda:x", "mps"):
        with pytest.raises(ValueError, match=f"RECSYS_TRAIN_DEVICE='{bad}'"):
            Settings.from_env({**home, "RECSYS_TRAIN_DEVICE": bad})
