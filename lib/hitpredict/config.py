"""Typed, validated configuration loaded from YAML.

A config file is data: every key is declared here, with its type and its bounds.
Loading fails at start with one line that names the file, the key, the bad value
and what is allowed, so a typo never reaches a running job.

Sources, later ones win:

1. the YAML file (``conf/local.yaml`` and friends);
2. ``--set section.key=value`` overrides given on the command line;
3. environment variables ``HITPREDICT__SECTION__KEY=value`` (double underscores);
   secrets are normally given this way, or as ``${env:NAME}`` inside the YAML.
"""
from __future__ import annotations

import difflib
import importlib.util
import os
import re
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Sequence

import yaml
from pydantic import (
    BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator,
)

from hitpredict.audio_params import AudioParams
from hitpredict.errors import HitpredictError
from hitpredict.families import ModelFamily
from hitpredict.schemas import CATALOGUE_SOURCE_FIELDS
from hitpredict.targets import TARGETS

ENV_PREFIX = "HITPREDICT__"
_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class ConfigError(HitpredictError, ValueError):
    """A configuration file or override is invalid; the message is one line."""


def _choices(names: Sequence[str]) -> str:
    """``'a', 'b' or 'c'``: allowed values as a config error lists them."""
    quoted = [repr(n) for n in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _known_target(value: Any) -> Any:
    """``value`` if it names a row of :data:`hitpredict.targets.TARGETS`; ``ValueError`` listing them otherwise."""
    if not isinstance(value, str) or value not in TARGETS:
        raise ValueError(f"Input should be {_choices(list(TARGETS))}")
    return value


#: A target name (``dataset.target``, the keys of ``demo.models``): a key of ``targets.TARGETS``.
TargetName = Annotated[str, BeforeValidator(_known_target)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True)


class SparkConfig(_Section):
    """How to get a Spark session. ``master: null`` means: use the one provided
    (spark-submit, Databricks)."""

    master: str | None = "local[*]"
    app_name: str = "hitpredict"
    driver_memory: str = Field("4g", pattern=r"^\d+[kmgt]$")
    shuffle_partitions: int = Field(8, ge=1)
    arrow_batch_rows: int = Field(2000, ge=1)
    conf: dict[str, str] = Field(default_factory=dict)

    @field_validator("conf", mode="before")
    @classmethod
    def _conf_values_as_text(cls, value: Any) -> Any:
        # Spark settings are strings; YAML reads `8` or `false` as numbers and booleans.
        if isinstance(value, dict):
            return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}
        return value


class LakeConfig(_Section):
    """Where the Delta tables live and which engine writes them."""

    engine: Literal["delta-rs", "delta"] = "delta-rs"
    root: str = "./lakehouse"
    #: Databricks Unity Catalog: tables are ``catalog.schema.table`` when both are set.
    catalog: str | None = None
    schema_name: str | None = Field(None, alias="schema")
    #: A delta-rs data file is closed at this many rows or bytes, whichever comes first;
    #: the byte bound keeps a writer's memory flat when rows carry audio.
    rows_per_file: int = Field(50_000, ge=1)
    bytes_per_file: int = Field(64 * 1024 * 1024, ge=1024)
    #: Stages that commit many small chunks (the Spotify crawl's state) compact their table once it
    #: holds this many files (``hitpredict tables --compact`` does it for any table).
    compact_min_files: int = Field(64, ge=2)
    #: A write to a keyed table (schemas.KEYS) that loses a commit race to another writer re-checks its keys
    #: against the winner's rows and commits again, at most this many times.
    commit_retries: int = Field(20, ge=0)
    #: Each delta-rs write deletes the data files of earlier hitpredict writes that never committed (a killed
    #: driver) once they are this old: a live writer's not yet committed files are younger than its longest
    #: write (one chunk), so keep this well above that.
    orphan_grace_hours: float = Field(12.0, ge=0)

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="after")
    def _catalog_needs_schema(self) -> "LakeConfig":
        if (self.catalog is None) != (self.schema_name is None):
            raise ValueError("catalog and schema must be set together (Unity Catalog names are catalog.schema.table)")
        if self.catalog is not None and self.engine != "delta":
            raise ValueError("catalog tables need engine 'delta' (delta-rs writes to a path)")
        return self


class AudioConfig(AudioParams, _Section):
    """The ``audio`` section: the five :class:`~hitpredict.audio_params.AudioParams` (declared and
    bounded there) and ``min_seconds``, the shortest audio (seconds) a track may have to be analysed.
    ``AudioParams.from_config`` gives the plain parameters."""

    min_seconds: float = Field(5.0, ge=0)


#: Characters no HTTP header value may hold (CR and LF would start another header).
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
#: Proxy schemes requests supports with PySocks installed.
SOCKS_SCHEMES = {"socks4", "socks4a", "socks5", "socks5h"}
#: fsspec schemes ``fetch.allow_schemes`` may list: scheme -> (what its URI's authority names, the
#: package that implements it). "bucket": a bucket or container at the provider's endpoint (or the
#: operator's configured one); "host": a server, checked by the address policy before connecting.
REMOTE_SCHEMES: dict[str, tuple[str, str | None]] = {
    "s3": ("bucket", "s3fs"), "s3a": ("bucket", "s3fs"), "gs": ("bucket", "gcsfs"), "gcs": ("bucket", "gcsfs"),
    "abfs": ("bucket", "adlfs"), "abfss": ("bucket", "adlfs"), "az": ("bucket", "adlfs"),
    "ftp": ("host", None), "sftp": ("host", "paramiko"), "webhdfs": ("host", None), "hdfs": ("host", "pyarrow"),
    "smb": ("host", "smbprotocol"),
}


class FetchConfig(_Section):
    """Preview downloads (used by fetch_previews)."""

    max_concurrency: int = Field(16, ge=1, le=512)
    per_host_concurrency: int = Field(8, ge=1, le=512)
    connect_timeout_s: float = Field(5.0, gt=0)
    read_timeout_s: float = Field(20.0, gt=0)
    #: Whole-body deadline: a server that trickles bytes forever still times out.
    total_timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(30.0, ge=0)
    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024)
    #: Size cap for local / fsspec audio files; ``None``: the HTTP cap ``max_body_bytes``, so decoding
    #: stays within its bounds. Raise it knowingly for full-length masters.
    max_local_bytes: int | None = Field(None, ge=1024)

    @property
    def local_cap_bytes(self) -> int:
        """The size cap of a local or fsspec read (bytes)."""
        return self.max_local_bytes if self.max_local_bytes is not None else self.max_body_bytes
    max_runs_per_track: int = Field(3, ge=1)
    commit_every: int = Field(500, ge=1)
    #: Hosts or networks (CIDR) allowed even though they are loopback/private.
    allow_hosts: list[str] = Field(default_factory=list)
    user_agent: str = "hitpredict/0.1 (+https://github.com/hitpredict)"
    #: HTTP(S) proxy URL for preview downloads (environment proxy variables are not read);
    #: socks5h:// and friends need PySocks installed.
    proxy: str | None = None
    #: fsspec schemes an ``audio_uri`` may use besides local paths and http(s) (which always go
    #: through the address policy): e.g. ``[s3, gs, abfs]``. Each needs its fsspec backend
    #: installed (s3fs, gcsfs, adlfs). Host schemes (ftp, sftp, webhdfs, hdfs, smb) pass the
    #: address policy first.
    allow_schemes: list[str] = Field(default_factory=list)
    #: A signed preview URL (Deezer's expire within hours) that has expired, or answers 401/403/410,
    #: is looked up again with ``resolve.services`` for a fresh URL, once per fetch.
    refresh_expired: bool = True
    #: A signed URL expiring within this many seconds counts as expired already.
    expiry_margin_s: float = Field(60.0, ge=0)

    @field_validator("user_agent")
    @classmethod
    def _header_safe(cls, value: str) -> str:
        if _CONTROL_CHARS.search(value) or value != value.strip():
            raise ValueError("must be one line of printable text (no CR, LF or other control characters, "
                             "no leading or trailing spaces): it is sent as an HTTP header")
        return value

    @field_validator("proxy")
    @classmethod
    def _proxy_supported(cls, value: str | None) -> str | None:
        if value is None:
            return value
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme in ("http", "https"):
            return value
        if scheme in SOCKS_SCHEMES:
            import importlib.util

            if importlib.util.find_spec("socks") is None:
                raise ValueError(f"{scheme}:// proxies need SOCKS support, which is not installed "
                                 "(pip install 'requests[socks]'), or use an http:// proxy")
            return value
        raise ValueError(f"proxy URL must start with http://, https:// or one of "
                         f"{', '.join(s + '://' for s in sorted(SOCKS_SCHEMES))}")

    @field_validator("allow_schemes")
    @classmethod
    def _remote_schemes(cls, value: list[str]) -> list[str]:
        import importlib

        schemes = [s.lower() for s in value]
        for scheme in schemes:
            if scheme not in REMOTE_SCHEMES:
                raise ValueError(f"{scheme!r} is not a remote storage scheme that can be allowed; allowed: "
                                 f"{', '.join(sorted(REMOTE_SCHEMES))} (http and https are always fetched, "
                                 "through the address policy; local paths follow ingest.allow_roots)")
            module = REMOTE_SCHEMES[scheme][1]
            if module:
                try:
                    importlib.import_module(module)
                except ImportError:
                    raise ValueError(f"{scheme}:// needs the {module} package, which is not installed") from None
        return schemes


class FeaturesConfig(_Section):
    """extract_features: how many tracks a commit holds, and the bounds on decoding one file."""

    commit_every: int = Field(1000, ge=1)
    #: Files with more channels, or a higher sample rate, are ``unsupported_format`` (never decoded).
    max_channels: int = Field(8, ge=1, le=64)
    max_source_rate_hz: int = Field(192_000, ge=8000, le=768_000)
    #: Decode in a child process per task (memory-capped, with a deadline), so a file that crashes
    #: or exhausts its decoder becomes a ``decode_error`` row instead of killing the task.
    decode_in_child: bool = True
    #: The child's address space may grow this much above what it maps when it starts.
    decode_memory_mib: int = Field(512, ge=64)
    decode_timeout_s: float = Field(60.0, gt=0)


#: The musicnn models (:mod:`hitpredict.embeddings`) and the layers each gives.
EMBEDDING_LAYERS: dict[str, tuple[str, ...]] = {
    "MTT_musicnn": ("penultimate", "max_pool", "mean_pool", "tags"),
    "MSD_musicnn": ("penultimate", "max_pool", "mean_pool", "tags"),
    "MTT_vgg": ("pool5", "tags"),
    "MSD_vgg": ("pool5", "tags"),
}


def musicnn_installed() -> bool:
    """Whether the ``musicnn`` package (and so its weights) is installed; imports nothing."""
    return importlib.util.find_spec("musicnn") is not None


def embedding_name(model: str, layer: str, max_patches: int | None = None) -> str:
    """The name of an embedding (``features.embedding_model``, a bundle's ``embedding_model``):
    ``MODEL/LAYER``, with ``/patches=N`` when ``max_patches`` samples the clip, e.g.
    ``MTT_musicnn/penultimate/patches=3``. :func:`parse_embedding_name` reads it back."""
    return f"{model}/{layer}" + (f"/patches={max_patches}" if max_patches else "")


def parse_embedding_name(name: str) -> tuple[str, str, int | None]:
    """``(model, layer, max_patches)`` of an :func:`embedding_name`; ``ValueError`` for another form."""
    parts = name.split("/")
    if len(parts) not in (2, 3) or (len(parts) == 3 and not parts[2].startswith("patches=")):
        raise ValueError(f"not an embedding model name: {name!r} (MODEL/LAYER or MODEL/LAYER/patches=N)")
    return parts[0], parts[1], int(parts[2].split("=", 1)[1]) if len(parts) == 3 else None


class EmbeddingConfig(_Section):
    """extract_features: the pretrained music embedding (musicnn) stored beside each clip's mel."""

    #: On or off; ``null`` (the default): on when the ``musicnn`` package is installed.
    enabled: bool | None = None
    #: Which of the wheel's four models (MTT: MagnaTagATune, MSD: Million Song Dataset tags) ...
    model: Literal["MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg"] = "MSD_musicnn"
    #: ... and which layer, averaged over the clip's 3 s patches, is the ``embedding`` column (the 50 tag
    #: probabilities are always stored too): musicnn: penultimate (200) | max_pool | mean_pool (753) | tags
    #: (50); vgg: pool5 (256) | tags. The default, MSD_musicnn's max_pool, is the real-audio bench's choice
    #: (``bench/embedding_choice.py``: grouped cross-validation on its training clips; README, "Pretrained
    #: music embeddings").
    layer: Literal["penultimate", "max_pool", "mean_pool", "pool5", "tags"] = "max_pool"
    #: Clips whose patches one TensorFlow run takes together. 1 (the default) keeps "same bytes, same bits"
    #: whatever else a task holds: with more, oneDNN's results for a clip differ (about 1e-6) with its
    #: neighbours, for about 3% less CPU (measured: 0.411 CPU-s per clip at 1, 0.396 at 8).
    batch_clips: int = Field(1, ge=1, le=256)
    #: TensorFlow intra-op threads of the embedding session (Spark runs one task per core).
    threads: int = Field(1, ge=1, le=64)
    #: How many 3 s patches of the clip the network sees, evenly spaced (3, the default: about 0.14 CPU-s per
    #: clip, within issue 15's 0.15 budget; the clip's vectors are then a sample of the full mean, and
    #: ``bench/features.py`` prints how close). ``null``: every patch, as the stock extractor (10 for 30 s,
    #: about 0.43 CPU-s per clip).
    max_patches: int | None = Field(3, ge=1)

    @model_validator(mode="after")
    def _layer_of_model(self) -> "EmbeddingConfig":
        if self.layer not in EMBEDDING_LAYERS[self.model]:
            raise ValueError(f"model {self.model} has no layer {self.layer!r}; "
                             f"one of {', '.join(EMBEDDING_LAYERS[self.model])}")
        return self

    @property
    def active(self) -> bool:
        """Whether extract_features computes embeddings: ``enabled``, or musicnn is installed."""
        return self.enabled if self.enabled is not None else musicnn_installed()

    @property
    def name(self) -> str:
        """The ``embedding_model`` value of the rows it gives (:func:`embedding_name`), e.g.
        ``MTT_musicnn/penultimate/patches=3``."""
        return embedding_name(self.model, self.layer, self.max_patches)


class DatasetConfig(_Section):
    """build_dataset: which target, how to split, how to threshold."""

    target: TargetName = "popular"
    #: popular = popularity >= this fixed score ...
    popular_threshold: float | None = Field(39.0, ge=0, le=100)
    #: ... or >= this quantile of the training split's popularity (set threshold to null).
    popular_quantile: float | None = Field(None, gt=0, lt=1)
    #: popular/popularity targets: the popularity signals to use (``popularity_source``: "label",
    #: "spotify", "deezer_rank"; "unnamed" for rows without one). None uses every signal, and the
    #: report says when it mixes scales.
    popularity_sources: list[str] | None = Field(None, min_length=1)
    artist_top_n: int = Field(20, ge=2)
    split_fractions: list[float] = Field(default_factory=lambda: [0.7, 0.15, 0.15])
    seed: int = 13

    @model_validator(mode="after")
    def _consistent(self) -> "DatasetConfig":
        if len(self.split_fractions) != 3 or any(f <= 0 for f in self.split_fractions) \
                or abs(sum(self.split_fractions) - 1) > 1e-6:
            raise ValueError(f"split_fractions must be three positive numbers (train, validation, test) "
                             f"summing to 1, got {self.split_fractions}")
        if (self.popular_threshold is None) == (self.popular_quantile is None):
            raise ValueError("set exactly one of popular_threshold and popular_quantile")
        return self


class AugmentConfig(_Section):
    """Training-only augmentation of the spectrogram (validation and test see the full window)."""

    #: Train on a random window of this many frames (None: the whole clip); also speeds training up.
    crop_frames: int | None = Field(None, ge=8)
    #: Random gain, uniform in +-gain_db, added to the log-mel before normalisation.
    gain_db: float = Field(0.0, ge=0, le=24)
    #: How many time masks per example, each up to time_mask_frames wide (set to the mean).
    time_masks: int = Field(0, ge=0, le=16)
    time_mask_frames: int = Field(20, ge=1)


class TrainConfig(_Section):
    """train_model: which family, how many Horovod processes, how long."""

    family: ModelFamily = "crnn"
    #: Horovod processes (one Spark task each; one GPU each when there are GPUs).
    num_proc: int = Field(2, ge=1, le=1024)
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    #: Learning rate of one process; the run uses learning_rate * num_proc after warm-up.
    learning_rate: float = Field(1e-3, gt=0, le=10)
    warmup_epochs: int = Field(1, ge=0)
    #: Early stopping: epochs without a better validation loss before stopping.
    patience: int = Field(4, ge=1)
    seed: int = 13
    #: Train on this build of ``build_dataset`` (default: the latest build for ``dataset.target``).
    dataset_id: str | None = None
    augment: AugmentConfig = AugmentConfig()
    #: Rank-0 checkpoints and the local copy of every trained model bundle.
    output_dir: str = "./data/models"
    #: Where Petastorm materialises the training and validation DataFrames (a URL or a path).
    petastorm_cache: str = "./data/petastorm"
    #: Petastorm reader threads per process. With 1 a run is repeatable: the same dataset, seed and number of
    #: processes give the same model bit for bit. More threads read faster, but deliver row groups in an order
    #: that changes from run to run, and so does the model.
    reader_workers: int = Field(1, ge=1, le=64)
    bootstrap_rounds: int = Field(1000, ge=0)
    #: Training rows (a seeded random sample) whose predictions form the reference
    #: distribution for percentiles, and how many quantiles of it the model keeps.
    reference_rows: int = Field(5000, ge=10)
    reference_points: int = Field(1001, ge=11)
    #: The ``fusion`` family's branches: ``mel`` (the inception spectrogram branch) and/or ``tags`` (a dense
    #: branch on the pretrained model's tag probabilities); with both, a learned weight mixes their predictions.
    fusion_branches: list[Literal["mel", "tags"]] = Field(["mel", "tags"], min_length=1)
    #: The ``embed`` family: hidden ReLU layers (one width each; ``[]``: a linear model on the embedding and
    #: summary vector), dropout after each, dropout on the inputs, and an L2 penalty on every kernel.
    #: ``bench/embed_head_choice.py`` compares choices by grouped cross-validation on a benchmark's training
    #: clips (README, "Pretrained music embeddings").
    embed_units: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [128, 64])
    embed_dropout: float = Field(0.3, ge=0, lt=1)
    embed_input_dropout: float = Field(0.0, ge=0, lt=1)
    embed_l2: float = Field(0.0, ge=0)

    @field_validator("fusion_branches")
    @classmethod
    def _distinct_branches(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"fusion_branches names a branch twice: {value}")
        return value


class MlflowConfig(_Section):
    """Experiment tracking and the model registry."""

    #: ``sqlite:///mlflow.db`` (a SQLite database, relative to the working folder) on the embedded
    #: default; a server's URL; null uses the platform's own (Databricks workspace).
    tracking_uri: str | None = "sqlite:///mlflow.db"
    registry_uri: str | None = None
    #: Where a new experiment keeps its artifacts (a folder or URI); null: ``mlartifacts/`` beside a
    #: SQLite database, the tracking server's own choice otherwise.
    artifact_location: str | None = None
    experiment: str = "hitpredict"
    #: Registered model name; ``{target}`` becomes the dataset target.
    model_name: str = "hitpredict-{target}"
    register_model: bool = True


class ModelRef(_Section):
    """One model to score with: a registered model (name plus version or alias), or a bundle folder.

    Written ``NAME`` (the latest version), ``NAME/3`` (version 3), ``NAME@champion`` (an alias) or a
    bundle folder path: :meth:`parse` reads that text (``--model`` on the command line), ``str()``
    writes it.
    """

    #: Registered model name in the MLflow registry, e.g. hitpredict-popular.
    name: str | None = None
    #: A version number ("3"), an alias ("champion"), or null for the latest registered version.
    version: str | None = None
    #: A model bundle folder (bundle.json + weights.h5) instead of the registry.
    path: str | None = None

    @field_validator("version", mode="before")
    @classmethod
    def _version_as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @model_validator(mode="after")
    def _one_source(self) -> "ModelRef":
        if (self.name is None) == (self.path is None):
            raise ValueError("give a registered model name (with an optional version or alias) or a bundle path")
        if self.path is not None and self.version is not None:
            raise ValueError("version applies to registered models, not to a bundle path")
        return self

    @classmethod
    def parse(cls, text: str) -> "ModelRef":
        """``NAME``, ``NAME/3``, ``NAME@alias`` or a bundle folder path (a folder that exists, or text
        starting with ``.``, ``/`` or ``~``; ``~`` is expanded) -> :class:`ModelRef`."""
        if Path(text).is_dir() or text.startswith((".", "/", "~")):
            return cls(path=str(Path(text).expanduser()))
        if "@" in text:
            name, _, alias = text.partition("@")
            return cls(name=name, version=alias)
        if "/" in text:
            name, _, version = text.rpartition("/")
            return cls(name=name, version=version)
        return cls(name=text)

    def __str__(self) -> str:
        """The reference as :meth:`parse` reads it: the path, ``NAME``, ``NAME/3`` or ``NAME@alias``."""
        if self.path is not None:
            return self.path
        return (self.name or "") + (f"@{self.version}" if self.version and not self.version.isdigit() else
                            f"/{self.version}" if self.version else "")


#: A preview look-up service, and every one in the default order.
ResolveService = Literal["deezer", "itunes"]
RESOLVE_SERVICES: tuple[ResolveService, ...] = ("deezer", "itunes")


class ResolveConfig(_Section):
    """Deezer and iTunes look-ups: a 30 s preview (and Deezer's rank) for a catalogue track."""

    #: Services to try, in order.
    services: list[ResolveService] = Field(default_factory=lambda: list(RESOLVE_SERVICES), min_length=1)
    deezer_url: str = "https://api.deezer.com"
    itunes_url: str = "https://itunes.apple.com"
    itunes_country: str = Field("US", pattern=r"^[A-Z]{2}$")
    #: A title+artist search hit is accepted only when both normalised names are at least this similar (0-1).
    match_threshold: float = Field(0.9, gt=0, le=1)
    search_limit: int = Field(10, ge=1, le=200)
    per_host_concurrency: int = Field(4, ge=1, le=64)
    timeout_s: float = Field(10.0, gt=0)
    max_retries: int = Field(5, ge=0, le=20)
    backoff_base_s: float = Field(0.5, ge=0)
    backoff_max_s: float = Field(60.0, ge=0)
    #: Calls per minute the client makes to the iTunes host (0: no limit). Apple throttles at
    #: about 20 a minute, with HTTP 403 and an empty body; a resolve run divides this among its
    #: Spark tasks.
    itunes_calls_per_minute: float = Field(20.0, ge=0)
    user_agent: str = "hitpredict/0.1 (+https://github.com/hitpredict)"


#: Items per page the Web API serves a Development-Mode app on search and artist albums (since 2026).
DEV_MODE_PAGE_SIZE = 10


class SpotifyConfig(_Section):
    """The Spotify Web API crawl (spotipy, client-credentials flow)."""

    api_url: str = "https://api.spotify.com/v1/"
    token_url: str = "https://accounts.spotify.com/api/token"
    market: str = Field("US", pattern=r"^[A-Z]{2}$")
    #: The app has Spotify's extended quota mode (not Development Mode): pages of up to 50 items.
    extended_access: bool = False
    #: Items per page: since February 2026 Development-Mode apps get at most 10 per search and
    #: per artist-albums page (a larger limit is refused with HTTP 400 "Invalid limit").
    page_size: int = Field(10, ge=1, le=50)
    #: Search results stop at this offset; slices (years, then name prefixes) get past it.
    offset_cap: int = Field(1000, ge=10)
    first_year: int = Field(1980, ge=1900, le=2100)
    last_year: int = Field(2026, ge=1900, le=2100)
    #: The longest ``Retry-After`` (seconds) the crawl waits out; a longer one (the service has
    #: sent hours) stops the crawl, resumable, instead of blocking a task.
    max_wait_s: float = Field(60.0, ge=0)
    #: Characters a too-big slice is split by (query prefix ``X*``).
    prefixes: str = "abcdefghijklmnopqrstuvwxyz0123456789"
    timeout_s: float = Field(10.0, gt=0)
    retries: int = Field(5, ge=0, le=20)
    backoff_factor: float = Field(0.5, ge=0)
    #: What ``ingest --source spotify`` crawls when the command line names nothing: a genre,
    #: artists (ids, URIs, URLs or exact names) or a playlist (id, URI or URL).
    genre: str | None = None
    artists: list[str] = Field(default_factory=list)
    playlist: str | None = None
    #: Names one crawl (e.g. a scheduled job's date): a new tag crawls afresh, the same tag
    #: resumes; without one, a finished crawl is read back from ``crawl_state``.
    crawl_tag: str | None = None
    #: Units (artists, albums) per Spark job; each job's results are committed to ``crawl_state``,
    #: so an interrupted crawl resumes from there.
    commit_every: int = Field(200, ge=1)
    #: Spark tasks calling the Web API at once (each one session, calls in sequence): the
    #: crawl's concurrency against api.spotify.com.
    max_concurrency: int = Field(4, ge=1, le=64)

    @field_validator("page_size")
    @classmethod
    def _page_size_served(cls, value: int, info: Any) -> int:
        if value > DEV_MODE_PAGE_SIZE and not info.data.get("extended_access", False):
            raise ValueError(f"Development-Mode apps get at most {DEV_MODE_PAGE_SIZE} items per search and "
                             "artist-albums page since 2026 (HTTP 400 'Invalid limit'); set "
                             "spotify.extended_access: true only if the app has extended quota mode")
        return value

    @field_validator("last_year")
    @classmethod
    def _years_in_order(cls, value: int, info: Any) -> int:
        first = info.data.get("first_year")
        if first is not None and first > value:
            raise ValueError(f"spotify.first_year ({first}) is after spotify.last_year: no year would be crawled")
        return value


class ScoreConfig(_Section):
    """score_catalogue, score-folder, score and report."""

    #: Models to score with in one pass: popular/popularity, artist and region models, each
    #: recognised by the target it was trained on.
    models: list[ModelRef] = Field(default_factory=lambda: [ModelRef(name="hitpredict-popular")], min_length=1)
    #: How many similar artists an artist model reports per track.
    top_k_artists: int = Field(5, ge=1, le=100)
    #: Occlusion explanations: the window is cut into segments of this many seconds.
    explain: bool = True
    segment_seconds: float = Field(3.0, gt=0)
    #: Tracks per commit of the scores table.
    commit_every: int = Field(5000, ge=1)
    report_dir: str = "./data/report"
    #: Tracks in the report's table, and how many of them get a segment-importance strip.
    report_top: int = Field(50, ge=1)
    report_strips: int = Field(10, ge=0)


class DemoConfig(_Section):
    """What ``hitpredict demo`` trains: target -> model family (null: ``train.family``)."""

    models: dict[TargetName, ModelFamily | None] = Field(
        default_factory=lambda: {"popular": None, "artist": "embed", "region": "fusion"})


class ProgressConfig(_Section):
    """How a run shows progress while it waits (sample generation, fetch, features, training, scoring):
    a bar on an interactive terminal, else a log line every ``interval_s`` seconds and a final line."""

    #: Seconds between two progress lines in a log (a file, CI, a Databricks job's output).
    interval_s: float = Field(10.0, gt=0)
    #: On an interactive terminal, draw a tqdm bar (false: log lines there too).
    bar: bool = True


class SampleConfig(_Section):
    """The bundled sample catalogue, generated on first use (never downloaded)."""

    dir: str = "./data/sample"
    tracks: int = Field(240, ge=1)
    artists: int = Field(24, ge=1)
    seconds: float = Field(30.0, gt=0)
    seed: int = 7
    #: Port of the demo's loopback preview server (0: any free port).
    preview_port: int = Field(18765, ge=0, le=65535)


class IngestConfig(_Section):
    """Where ingest_catalogue reads a catalogue from and how its columns map."""

    #: csv, parquet or folder (inferred from ``path`` when not set); spotify (a crawl, see the
    #: ``spotify`` section); deezer or itunes (a CSV/Parquet of title, artists and ISRC whose
    #: previews that service resolves).
    source: Literal["csv", "parquet", "folder", "spotify", "deezer", "itunes"] | None = None
    path: str | None = None
    #: catalogue field -> source column; fields left out map to a column of the same name if present.
    columns: dict[str, str | None] = Field(default_factory=dict)
    artist_separator: str = ";"
    #: Folders (local paths) a catalogue's local ``audio_uri`` may point into; rows pointing
    #: elsewhere are rejected at ingest, and fetch_previews reads nothing outside them. Empty:
    #: the catalogue file's folder (a folder source: that folder), recorded in the
    #: ``audio_roots`` table by each ingest so fetch_previews knows it.
    allow_roots: list[str] = Field(default_factory=list)
    date_formats: list[str] = Field(default_factory=lambda: ["%Y-%m-%d", "%Y-%m", "%Y", "%d/%m/%Y", "%Y/%m/%d"])
    audio_extensions: list[str] = Field(default_factory=lambda: ["mp3", "m4a", "aac", "mp4", "ogg", "oga",
                                                                 "flac", "wav"])
    chunk_rows: int = Field(200_000, ge=1)
    #: Look up a preview (``resolve.services``) for CSV/Parquet rows with no audio instead of
    #: rejecting them; always done for the spotify source.
    resolve_missing: bool = False

    @field_validator("artist_separator")
    @classmethod
    def _separator_not_empty(cls, value: str) -> str:
        if not value:
            raise ValueError("must not be empty: it splits the artists column (e.g. ';')")
        return value

    @field_validator("allow_roots")
    @classmethod
    def _local_folders(cls, value: list[str]) -> list[str]:
        for root in value:
            path = root[len("file://"):] if root.startswith("file://") else root
            if not path or "://" in path:
                raise ValueError(f"{root!r} is not a local folder (remote audio follows fetch.allow_schemes)")
        return value

    @field_validator("columns")
    @classmethod
    def _known_fields(cls, value: dict[str, str | None]) -> dict[str, str | None]:
        unknown = sorted(set(value) - set(CATALOGUE_SOURCE_FIELDS))
        if unknown:
            raise ValueError(f"unknown field(s) {', '.join(unknown)}; fields: {', '.join(CATALOGUE_SOURCE_FIELDS)}")
        return value


#: Secrets read from these environment variables when the config file does not set them.
SECRET_VARIABLES = {"spotify_client_id": "SPOTIPY_CLIENT_ID", "spotify_client_secret": "SPOTIPY_CLIENT_SECRET"}


class SecretsConfig(_Section):
    """Credentials. Give them by environment (``SECRET_VARIABLES``, or ``${env:NAME}`` in the
    YAML; on Databricks from a secret scope), never in a committed file."""

    spotify_client_id: SecretStr | None = None
    spotify_client_secret: SecretStr | None = None
    #: A Databricks secret scope to read the Spotify credentials from (``dbutils.secrets``) when
    #: they are not given by environment; the keys name them inside the scope.
    databricks_scope: str | None = None
    spotify_client_id_key: str = "spotify_client_id"
    spotify_client_secret_key: str = "spotify_client_secret"


class Config(_Section):
    """The whole configuration of one run."""

    spark: SparkConfig = SparkConfig()
    lake: LakeConfig = LakeConfig()
    audio: AudioConfig = AudioConfig()
    ingest: IngestConfig = IngestConfig()
    fetch: FetchConfig = FetchConfig()
    features: FeaturesConfig = FeaturesConfig()
    embedding: EmbeddingConfig = EmbeddingConfig()
    dataset: DatasetConfig = DatasetConfig()
    train: TrainConfig = TrainConfig()
    mlflow: MlflowConfig = MlflowConfig()
    resolve: ResolveConfig = ResolveConfig()
    spotify: SpotifyConfig = SpotifyConfig()
    score: ScoreConfig = ScoreConfig()
    demo: DemoConfig = DemoConfig()
    sample: SampleConfig = SampleConfig()
    progress: ProgressConfig = ProgressConfig()
    secrets: SecretsConfig = SecretsConfig()
    #: Where the config came from, for messages; not a key users set.
    source: str = Field("<defaults>", exclude=True)


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load ``path`` (YAML), apply ``--set`` overrides and ``HITPREDICT__*`` variables.

    Parameters
    ----------
    path : YAML file; ``None`` gives the built-in defaults (the embedded local setup).
    overrides : ``"section.key=value"`` strings; the value is parsed as YAML. A blank string is skipped.
    environ : environment to read (defaults to ``os.environ``).

    Raises
    ------
    ConfigError : one line naming the file, the key, the bad value and what is allowed.
    """
    environ = os.environ if environ is None else environ
    found = config_path(path) if path is not None else None
    source = str(found) if found is not None else "<defaults>"
    raw: dict[str, Any] = {}
    if found is not None:
        raw = _read_yaml(found)
    raw = _interpolate_env(raw, environ, source)
    secrets = raw.get("secrets") or {}
    for key, name in SECRET_VARIABLES.items():   # the standard variables, when the file names none
        if not secrets.get(key) and environ.get(name):
            secrets[key] = environ[name]
    if secrets:
        raw["secrets"] = secrets
    origins: dict[str, str] = {}
    for item in overrides:
        if not item.strip():   # an empty --set (a Databricks job parameter left empty) sets nothing
            continue
        key, value = _parse_override(item, source)
        origins[key] = f"--set {item}"
        _set_dotted(raw, key, value, origins[key])
    for name, value in sorted(environ.items()):
        if name.startswith(ENV_PREFIX):
            key = name[len(ENV_PREFIX):].lower().replace("__", ".")
            origins[key] = f"${name}"
            _set_dotted(raw, key, yaml.safe_load(value) if value else value, origins[key])
    try:
        return Config.model_validate({**raw, "source": source})
    except ValidationError as exc:
        raise ConfigError(_one_line(exc, source, origins)) from None


#: The configs shipped inside the package (``lib/hitpredict/configs/NAME.yaml``; ``conf/NAME.yaml`` links
#: to them in the repository), so ``--conf local`` works from an installed wheel with no repository, and
#: from a wheel shipped zipped with ``spark-submit --py-files`` (hence read as package resources, not files).
SHIPPED_CONFIGS: Traversable = resources.files("hitpredict") / "configs"


def shipped_config_names() -> list[str]:
    """Names of the configs shipped in the package (``local``, ``cluster``, ``databricks``)."""
    return sorted(entry.name[:-len(".yaml")] for entry in SHIPPED_CONFIGS.iterdir() if entry.name.endswith(".yaml"))


def config_path(path: str | os.PathLike[str]) -> Path | Traversable:
    """The YAML file that ``--conf`` names: a path as given, or, for a bare name such as ``local``
    that is not a file here, the shipped config of that name.

    Raises
    ------
    ConfigError : a bare name that is neither a file nor a shipped config (the message lists them).
    """
    given = Path(path)
    if given.is_file() or given.suffix in (".yaml", ".yml") or len(given.parts) != 1:
        return given
    shipped = SHIPPED_CONFIGS / f"{given.name}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"{path}: no such config file, and no shipped config of that name "
                      f"(shipped: {', '.join(shipped_config_names())})")


def _read_yaml(path: Path | Traversable) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return data


def _interpolate_env(value: Any, environ: Mapping[str, str], source: str) -> Any:
    """Replace ``${env:NAME}`` / ``${env:NAME:-default}`` inside strings."""
    if isinstance(value, dict):
        return {k: _interpolate_env(v, environ, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate_env(v, environ, source) for v in value]
    if isinstance(value, str) and "${env:" in value:
        def repl(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            if name in environ:
                return environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{source}: environment variable {name} is not set (referenced as ${{env:{name}}})")
        resolved = _ENV_REF.sub(repl, value)
        return resolved if resolved != "" else None
    return value


def _parse_override(item: str, source: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected section.key=value, e.g. --set fetch.max_concurrency=32")
    key, _, text = item.partition("=")
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_.-]*)+", key):
        raise ConfigError(f"--set {item!r}: key {key!r} must look like section.key")
    try:
        value = yaml.safe_load(text) if text.strip() else text
    except yaml.YAMLError:
        value = text
    return key, value


def _set_dotted(raw: dict[str, Any], key: str, value: Any, origin: str) -> None:
    section, _, rest = key.partition(".")
    node = raw.setdefault(section, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{origin}: {section} is not a section")
    # spark.conf keys contain dots themselves: everything after 'conf.' is one key.
    parts = rest.split(".", 1) if rest.startswith("conf.") else rest.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{origin}: {section}.{part} is not a section")
        node = child
    node[parts[-1]] = value


def _one_line(exc: ValidationError, source: str, origins: Mapping[str, str]) -> str:
    """Turn pydantic's first error into one readable line, naming where the value came from."""
    err = exc.errors(include_url=False)[0]
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc) if loc else "<top level>"
    source = origins.get(key, source)
    kind = err["type"]
    if kind == "extra_forbidden":
        model: type[BaseModel] = Config
        for part in loc[:-1]:
            field = model.model_fields.get(part)
            annotation = getattr(field, "annotation", None)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                model = annotation
        allowed = sorted(
            (f.alias or name) for name, f in model.model_fields.items() if name != "source"
        )
        close = difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"{source}: unknown key {key}{hint}; allowed keys here: {', '.join(allowed)}"
    msg = err["msg"].removeprefix("Value error, ")
    bad = err.get("input")
    if isinstance(bad, dict):  # a rule across several keys of one section
        return f"{source}: {key}: {msg}"
    shown = "<hidden>" if "secret" in key else repr(bad)
    return f"{source}: {key} = {shown} is not allowed: {msg}"

