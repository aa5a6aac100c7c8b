"""MLflow users recsys manages on a basic-auth tracking server: the serving API's reader.

The serving API only reads the registry (the champion's version and its artifacts), so it logs in
as a user that is not an admin, created with no grant: on a server whose ``default_permission`` is
READ (docker/compose.yaml) it can read every model and change none.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException

# MLflow's basic-auth refuses shorter passwords; say so before the server does, in our words.
MIN_PASSWORD = 12


@dataclass(frozen=True)
class ReaderResult:
    username: str
    created: bool  # False: the user existed; its password was reset and admin rights dropped

    def line(self) -> str:
        what = "created" if self.created else "updated (password reset, not an admin)"
        return f"MLflow reader {self.username} {what}"


def ensure_reader(tracking_uri: str, username: str, password: str) -> ReaderResult:
    """Create ``username`` as a non-admin user, or bring an existing one back to that state.

    Runs as the admin of ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``; running it
    twice is harmless (deployments run it on every start).
    """
    from mlflow.server import get_app_client

    if not username:
        raise ValueError("the reader needs a username")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the reader's password must be at least {MIN_PASSWORD} characters")
    if not tracking_uri.startswith(("http://", "https://")):
        raise ValueError(f"MLflow users live on a tracking server, not at {tracking_uri}")
    client = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        user = client.get_user(username)
    except MlflowException as err:
        if err.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
        client.create_user(username, password)
        return ReaderResult(username, created=True)
    client.update_user_password(username, password)
    if user.is_admin:
        client.update_user_admin(username, False)
    return ReaderResult(username, created=False)
