"""Lineage: which data made a model version. One query: ``recsys lineage <version | alias>``.

Every training run logs ``lineage.json``: the features snapshot (interval, content hash) and each
validated raw partition in it (interval, row count, sha256, validation outcome); this module reads
it back through the registry.
"""

from __future__ import annotations

from typing import Any

from recsys.config import Settings


def of_version(settings: Settings, version_or_alias: str) -> dict[str, Any]:
    """The lineage of a model version (a number, or an alias such as ``champion``)."""
    import mlflow

    from recsys.pipeline import LINEAGE_FILE
    from recsys.registry import Registry

    reg = Registry(settings)
    if version_or_alias.isdigit():
        version = reg.version(version_or_alias)
    else:
        version = reg.alias(version_or_alias)
        if version is None:
            raise ValueError(f"no model version has alias {version_or_alias!r}")
    record = mlflow.artifacts.load_dict(f"runs:/{version.run_id}/{LINEAGE_FILE}")
    return {
        "model": reg.name,
        "version": str(version.version),
        "aliases": list(version.aliases),
        "run_id": version.run_id,
        **record,
    }


def format_lineage(info: dict[str, Any]) -> list[str]:
    feats = info["features"]
    aliases = f" ({', '.join(info['aliases'])})" if info["aliases"] else ""
    parent = (
        f", warm-started from version {info['parent_version']}" if info["parent_version"] else ""
    )
    lines = [
        f"{info['model']} version {info['version']}{aliases}: {info['mode']} model{parent}",
        f"  MLflow run {info['run_id']}",
        f"  trained on features snapshot {feats['interval']['id']} "
        f"(version {str(feats['version'])[:12]}, {feats['n_events']} events, "
        f"{feats['n_users']} users, {feats['n_items']} items)",
        f"  evaluated on {info['evaluated_on']}",
        f"  built from {len(info['partitions'])} validated raw partitions:",
        f"    {'interval':<34} {'rows':>7}  {'sha256':<12}  validation",
    ]
    for part in info["partitions"]:
        validation = part.get("validation") or {}
        verdict = "passed" if validation.get("success") else "NOT VALIDATED"
        lines.append(
            f"    {part['interval']:<34} {part['rows']:>7}  {str(part['sha256'])[:12]:<12}  "
            f"{verdict}"
        )
    return lines
