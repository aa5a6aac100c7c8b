"""Registry states built without training."""


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
