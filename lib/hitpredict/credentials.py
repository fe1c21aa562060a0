"""Credentials from the environment (via the config) or, on Databricks, from a secret scope.

They are resolved once, on the driver, and travel to executors as masked ``SecretStr``
values inside the task closures; executors never need ``dbutils``.
"""
from __future__ import annotations

import logging
from typing import Any

from pydantic import SecretStr

from hitpredict.config import SecretsConfig
from hitpredict.ingest import SourceError

log = logging.getLogger(__name__)


def databricks_dbutils() -> Any | None:
    """The workspace's ``dbutils`` when running on Databricks, else ``None``."""
    try:
        from pyspark.dbutils import DBUtils  # only on Databricks runtimes
        from pyspark.sql import SparkSession

        session = SparkSession.getActiveSession()
        return DBUtils(session) if session is not None else None
    except ImportError:
        pass
    try:
        from IPython import get_ipython

        shell = get_ipython()
        return shell.user_ns.get("dbutils") if shell is not None else None
    except ImportError:
        return None


def spotify_credentials(secrets: SecretsConfig, dbutils: Any | None = None) -> SecretsConfig:
    """``secrets`` with the Spotify client id and secret filled in.

    Values given by environment (or the YAML) win; otherwise, with ``secrets.databricks_scope``
    set, they are read from that scope with ``dbutils.secrets.get``. Errors name the scope and
    key, never a value.
    """
    if (secrets.spotify_client_id and secrets.spotify_client_secret) or not secrets.databricks_scope:
        return secrets
    dbutils = dbutils if dbutils is not None else databricks_dbutils()
    scope = secrets.databricks_scope
    if dbutils is None:
        raise SourceError(f"secrets.databricks_scope is {scope!r} but dbutils is not available (not on Databricks); "
                          "set SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET instead")
    values = {}
    for field, key in (("spotify_client_id", secrets.spotify_client_id_key),
                       ("spotify_client_secret", secrets.spotify_client_secret_key)):
        try:
            values[field] = SecretStr(dbutils.secrets.get(scope=scope, key=key))
        except Exception as exc:  # the workspace's own error types
            raise SourceError(f"databricks secret scope {scope!r}: cannot read key {key!r} "
                              f"({type(exc).__name__})") from None
    log.info("spotify credentials read from databricks secret scope %r", scope)
    return secrets.model_copy(update=values)
