"""Lineage: which data made a model version. One query: ``recsys lineage <version | alias>``.

Every training run logs ``lineage.json``: the features snapshot (interval, content hash) and each
validated raw partition in it (interval, row count, sha256, validation outcome); this module reads
it back through the registry.
"""

from __future__ import annotations

from typing import Any

from recsys.config import Settings


def lineage_record(fs: Any, mode: str, parent: str | None) -> dict[str, Any]:
    """What a run was trained and evaluated on: the snapshot and every partition in it."""
    manifest = fs.manifest
    return {
        "mode": mode,
        "parent_version": parent,
        "features": {
            "interval": manifest["interval"],
            "version": manifest.get("version"),
            "path": manifest["path"],
            "n_events": manifest["n_events"],
            "n_users": manifest["n_users"],
            "n_items": manifest["n_items"],
        },
        "evaluated_on": "the same snapshot: leave-last-out test items (last event per user)",
        "partitions": manifest["partitions"],
        "writers": _writers(manifest["partitions"]),  # which clients wrote the data
    }


def _writers(partitions: list[dict[str, Any]]) -> dict[str, int]:
    total: dict[str, int] = {}
    for part in partitions:
        for key, n in (part.get("writers") or {}).items():
            total[key] = total.get(key, 0) + n
    return dict(sorted(total.items()))


def code_version(env: dict[str, str] | None = None) -> str:
    """The code a model was trained with: ``RECSYS_GIT_COMMIT`` (set it in images), else the
    git commit of this checkout (``-dirty`` with uncommitted changes), else the package version."""
    import os
    import subprocess
    from importlib.metadata import PackageNotFoundError, version
    from pathlib import Path

    env = dict(os.environ if env is None else env)
    if env.get("RECSYS_GIT_COMMIT"):
        return env["RECSYS_GIT_COMMIT"]
    root = Path(__file__).resolve().parents[2]
    try:
        git = ["git", "-C", str(root)]
        run = {"capture_output": True, "text": True, "timeout": 10, "check": True}
        commit = subprocess.run([*git, "rev-parse", "HEAD"], **run).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "recsys"], **run
        ).stdout.strip()
        return f"{commit}-dirty" if dirty else commit
    except (OSError, subprocess.SubprocessError):
        try:
            return f"recsys=={version('recsys')}"
        except PackageNotFoundError:
            return "unknown"


def of_version(settings: Settings, version_or_alias: str) -> dict[str, Any]:
    """The lineage of a model version (a number, or an alias such as ``champion``)."""
    import mlflow

    from recsys.registry.client import Registry
    from recsys.registry.tags import LINEAGE_FILE

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
    writers = _writers(info["partitions"])
    if writers:  # partitions collected before keys existed record none
        lines.append("  written by (API key: events): " + ", ".join(
            f"{key}: {n}" for key, n in sorted(writers.items())))  # fmt: skip
    return lines
