"""The event store's PostgreSQL roles (``roles.sql``): least privilege for the API and workers.

The API and the Airflow workers connect as their own roles and never create, alter or drop
anything: the owner migrates (``recsys store init``), once per release, before they start.
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

ROLES_SQL = Path(__file__).with_name("roles.sql")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_SECRET = re.compile(r"^[A-Za-z0-9_\-]{16,}$")  # hex or base64url: nothing to escape


def roles_sql(database: str, serving: str, serving_password: str, pipeline: str,
              pipeline_password: str, others: list[str] | tuple[str, ...] = ()) -> str:  # fmt: skip
    """``roles.sql`` for these names; ``others``: databases the roles must not connect to."""
    for name in (database, serving, pipeline, *others):
        if not _NAME.match(name):
            raise ValueError(f"not a plain PostgreSQL name: {name!r}")
    for secret in (serving_password, pipeline_password):
        if not _SECRET.match(secret):
            raise ValueError("role passwords must be 16+ characters of [A-Za-z0-9_-]")
    text = ROLES_SQL.read_text().format(
        database=database, serving=serving, serving_password=serving_password,
        pipeline=pipeline, pipeline_password=pipeline_password,
    )  # fmt: skip
    for other in others:
        text += f"REVOKE CONNECT ON DATABASE {other} FROM PUBLIC;\n"
    return text


def grant(url: str, **names: object) -> None:
    """Run ``roles_sql`` (keyword arguments as it takes them) on the database at ``url``."""
    engine = sa.create_engine(url)
    database = sa.make_url(url).database
    if engine.dialect.name != "postgresql" or not database:
        raise ValueError("roles are for a PostgreSQL event store")
    sql = roles_sql(database, **names)  # type: ignore[arg-type]
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()
