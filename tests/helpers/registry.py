"""Registry states built without training."""

import shutil
from pathlib import Path

# A model version as ``Registry.register`` stored it at commit 7b46c2f (items i1..i12).
STORED_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "model_7b46c2f" / "model"


def stored_champion(settings, tmp_path) -> str:
    """``STORED_MODEL`` registered as a new version and made champion: its version."""
    from recsys.config import CHAMPION
    from recsys.registry.client import Registry

    source = tmp_path / "stored-model"
    shutil.copytree(STORED_MODEL, source)
    reg = Registry(settings)
    reg.client.create_registered_model(reg.name)
    version = str(reg.client.create_model_version(reg.name, source=source.as_uri()).version)
    reg.set_alias(CHAMPION, version)
    return version


def tiny_versions(settings, tmp_path, n):
    """``n`` registered versions that share one placeholder artifact folder: no training."""
    from recsys.registry.client import Registry

    reg = Registry(settings)
    reg.client.create_registered_model(reg.name)
    run_id = reg.create_run("tiny", {})
    source = tmp_path / "model"
    source.mkdir()
    for _ in range(n):
        reg.client.create_model_version(reg.name, source=str(source), run_id=run_id)
    return reg
