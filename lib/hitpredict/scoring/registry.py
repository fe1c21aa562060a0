"""From a model reference in the config to a local bundle folder and its identity.

A reference (:class:`hitpredict.config.ModelRef`, which parses and writes its text form) is a
registered model (name plus version or alias, default the latest version) or a bundle folder on
disk. The identity (name, version) is what the ``scores`` table records, so a track is scored
once per model version.
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hitpredict.config import MlflowConfig, ModelRef
from hitpredict.train.bundle import BUNDLE_FILE, WEIGHTS_FILE, BundleError, ModelBundle
from hitpredict.train.tracking import configure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResolvedModel:
    """One model to score with: its identity in the scores table and its local bundle folder."""

    name: str
    version: str
    bundle_dir: str
    target: str
    family: str
    audio: dict[str, Any] = field(default_factory=dict, compare=False)
    #: The bundle as loaded (and checked) on the driver; executors load their own.
    bundle: Any = field(default=None, compare=False, repr=False)

    @property
    def label(self) -> str:
        """``NAME vVERSION``: how reports and the scoring summary name this model."""
        return f"{self.name} v{self.version}"


def _bundle_fingerprint(directory: Path) -> str:
    """First 12 hex digits of the sha256 of a bundle folder's ``bundle.json`` and weights: a bundle path's version."""
    digest = hashlib.sha256()
    for name in (BUNDLE_FILE, WEIGHTS_FILE):
        digest.update((directory / name).read_bytes())
    return digest.hexdigest()[:12]


def _registry_version(ref: ModelRef, mlflow_config: MlflowConfig) -> str:
    """The version number ``ref`` names in the registry (its alias resolved, the latest if none);
    ``BundleError`` (one line, listing the versions) if there is none."""
    assert ref.name is not None   # a registry reference: ModelRef holds a name or a path
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    where = configure(mlflow_config)
    client = MlflowClient()
    try:
        versions = sorted((int(v.version) for v in client.search_model_versions(f"name='{ref.name}'")))
    except MlflowException as exc:
        raise BundleError(f"model registry at {where}: cannot list versions of {ref.name}: {exc.message}") from None
    if not versions:
        raise BundleError(f"no registered model {ref.name!r} with any version in the registry at {where}; "
                          f"train one with train_model, or give a bundle path")
    if ref.version is None:
        return str(versions[-1])
    if ref.version.isdigit():
        if int(ref.version) not in versions:
            raise BundleError(f"registered model {ref.name!r} has no version {ref.version} "
                              f"(versions: {', '.join(map(str, versions))})")
        return ref.version
    try:
        return str(client.get_model_version_by_alias(ref.name, ref.version).version)
    except MlflowException:
        raise BundleError(f"registered model {ref.name!r} has no alias {ref.version!r} "
                          f"(versions: {', '.join(map(str, versions))})") from None


def resolve_model(ref: ModelRef, mlflow_config: MlflowConfig) -> ResolvedModel:
    """Find ``ref`` and bring its bundle to a local folder; ``BundleError`` (one line) if it
    does not exist or is not a readable hitpredict model."""
    if ref.path is not None:
        directory = Path(ref.path).expanduser().resolve()
        if not directory.is_dir():
            raise BundleError(f"model path {ref.path}: no such folder")
        bundle = ModelBundle.load(directory)
        name, version = f"file:{directory}", _bundle_fingerprint(directory)
    else:
        import mlflow

        assert ref.name is not None   # a registry reference: ModelRef holds a name or a path
        version = _registry_version(ref, mlflow_config)
        try:
            folder = Path(mlflow.artifacts.download_artifacts(f"models:/{ref.name}/{version}"))
        except Exception as exc:  # noqa: BLE001 - MLflow raises many kinds for a broken artifact store
            raise BundleError(f"cannot download {ref.name} v{version}: {type(exc).__name__}: {exc}") from None
        found = sorted(folder.rglob(BUNDLE_FILE))
        if not found:
            raise BundleError(f"{ref.name} v{version} is not a hitpredict model: no {BUNDLE_FILE} in {folder}")
        directory = found[0].parent
        bundle = ModelBundle.load(directory)
        name = ref.name
    log.info("model %s v%s: %s %s trained on %s", name, version, bundle.family, bundle.target, bundle.dataset_id)
    return ResolvedModel(name=name, version=version, bundle_dir=str(directory), target=bundle.target,
                         family=bundle.family, audio=bundle.audio, bundle=bundle)
