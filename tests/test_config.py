"""Config: every shipped file loads; mistakes fail at start with one line naming the key."""
from __future__ import annotations

from pathlib import Path

import pytest

from hitpredict.config import ConfigError, load_config

CONF = Path(__file__).resolve().parents[1] / "conf"
SHIPPED = sorted(CONF.glob("*.yaml"))


def test_the_three_configs_are_shipped():
    assert {p.name for p in SHIPPED} >= {"local.yaml", "cluster.yaml", "databricks.yaml"}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_yaml_loads(path):
    config = load_config(path, environ={})
    assert config.source == str(path)


def test_engines_of_the_shipped_configs():
    local = load_config(CONF / "local.yaml", environ={})
    assert (local.lake.engine, local.lake.root, local.spark.master) == ("delta-rs", "./lakehouse", "local[*]")
    cluster = load_config(CONF / "cluster.yaml", environ={})
    assert cluster.lake.engine == "delta" and cluster.spark.master is None
    databricks = load_config(CONF / "databricks.yaml", environ={})
    assert (databricks.lake.catalog, databricks.lake.schema_name) == ("main", "hitpredict")


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_misspelled_key_names_the_key_and_the_fix(tmp_path):
    path = write(tmp_path, "fetch:\n  max_concurency: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message and "fetch.max_concurency" in message
    assert "did you mean 'max_concurrency'" in message


def test_bad_value_names_key_value_and_what_is_allowed(tmp_path):
    path = write(tmp_path, "lake:\n  engine: parquet\n")
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    message = str(err.value)
    assert "lake.engine" in message and "'parquet'" in message and "'delta-rs' or 'delta'" in message
    assert "\n" not in message


def test_bad_number_and_bounds(tmp_path):
    with pytest.raises(ConfigError, match=r"fetch\.max_concurrency = 0 .*greater than or equal to 1"):
        load_config(write(tmp_path, "fetch:\n  max_concurrency: 0\n"), environ={})
    with pytest.raises(ConfigError, match=r"audio\.n_fft = 1000 .*power of two"):
        load_config(write(tmp_path, "audio:\n  n_fft: 1000\n"), environ={})


def test_unknown_section_and_broken_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown key fecth .*did you mean 'fetch'"):
        load_config(write(tmp_path, "fecth: {}\n"), environ={})
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(write(tmp_path, "fetch: [\n"), environ={})
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.yaml", environ={})


def test_set_overrides_win_and_are_validated():
    config = load_config(CONF / "local.yaml", ["fetch.max_concurrency=32", "spark.conf.spark.sql.ansi.enabled=true"],
                         environ={})
    assert config.fetch.max_concurrency == 32
    assert config.spark.conf["spark.sql.ansi.enabled"] == "true"
    with pytest.raises(ConfigError, match=r"^--set fetch.max_concurrency=lots: fetch.max_concurrency = 'lots'"):
        load_config(CONF / "local.yaml", ["fetch.max_concurrency=lots"], environ={})
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(CONF / "local.yaml", ["fetch.max_concurrency"], environ={})


def test_environment_overrides_and_secrets(tmp_path):
    env = {"HITPREDICT__FETCH__READ_TIMEOUT_S": "7.5", "SPOTIPY_CLIENT_SECRET": "s3cr3t-value"}
    config = load_config(CONF / "local.yaml", environ=env)
    assert config.fetch.read_timeout_s == 7.5
    assert config.secrets.spotify_client_secret.get_secret_value() == "s3cr3t-value"
    # The secret never shows in dumps or reprs (what logs, dataset records and MLflow params see).
    for shown in (repr(config), str(config), str(config.model_dump(mode="json", by_alias=True)),
                  str(config.model_dump()), config.model_dump_json(), repr(config.secrets)):
        assert "s3cr3t-value" not in shown
    with pytest.raises(ConfigError) as err:
        load_config(CONF / "local.yaml", environ={"HITPREDICT__FETCH__MAX_RETRIES": "-1"})
    assert str(err.value).startswith("$HITPREDICT__FETCH__MAX_RETRIES: fetch.max_retries = -1")


def test_required_env_reference_must_be_set(tmp_path):
    path = write(tmp_path, "secrets:\n  spotify_client_id: ${env:MY_ID}\n")
    with pytest.raises(ConfigError, match="environment variable MY_ID is not set"):
        load_config(path, environ={})
    assert load_config(path, environ={"MY_ID": "abc"}).secrets.spotify_client_id.get_secret_value() == "abc"


def test_rules_across_keys(tmp_path):
    with pytest.raises(ConfigError, match="lake: catalog and schema must be set together"):
        load_config(write(tmp_path, "lake:\n  engine: delta\n  catalog: main\n"), environ={})
    with pytest.raises(ConfigError, match="catalog tables need engine 'delta'"):
        load_config(write(tmp_path, "lake:\n  catalog: main\n  schema: hp\n"), environ={})


def test_no_file_gives_the_embedded_defaults():
    config = load_config(None, environ={})
    assert config.lake.engine == "delta-rs" and config.audio.n_mels == 128 and config.audio.hop_length == 512



# --------------------------------------------------------------------------- issue 12 (fetch / ingest setup)


@pytest.mark.parametrize("text, key", [
    ('fetch:\n  user_agent: "hitpredict/0.1\\r\\nX-Injected: 1"\n', "fetch.user_agent"),
    ('fetch:\n  user_agent: "hitpredict/0.1\\nX: 1"\n', "fetch.user_agent"),
    ("fetch:\n  proxy: socks5h://127.0.0.1:1080\n", "fetch.proxy"),
    ("fetch:\n  proxy: foo://127.0.0.1:1080\n", "fetch.proxy"),
    ("fetch:\n  allow_schemes: [zip]\n", "fetch.allow_schemes"),
    ("fetch:\n  allow_schemes: [file]\n", "fetch.allow_schemes"),
    ('ingest:\n  artist_separator: ""\n', "ingest.artist_separator"),
    ("ingest:\n  allow_roots: ['s3://bucket/x']\n", "ingest.allow_roots"),
])
def test_setup_mistakes_are_refused_at_load_naming_the_key(tmp_path, text, key):
    import importlib.util

    if "socks5h" in text and importlib.util.find_spec("socks") is not None:
        pytest.skip("PySocks is installed here: socks5h:// is supported")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert key in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)


def test_supported_fetch_setup_loads(tmp_path):
    path = write(tmp_path, "fetch:\n  proxy: http://proxy.internal:3128\n  allow_schemes: [ftp]\n"
                           "ingest:\n  artist_separator: ' / '\n  allow_roots: [/srv/audio]\n")
    config = load_config(path, environ={})
    assert config.fetch.allow_schemes == ["ftp"] and config.ingest.allow_roots == ["/srv/audio"]


# --------------------------------------------------------------------------- issue 13 (one table of targets)


def test_targets_and_model_references_follow_their_one_definition():
    from hitpredict.config import ModelRef
    from hitpredict.targets import TARGETS

    for name in TARGETS:
        config = load_config(None, [f"dataset.target={name}", f"demo.models={{{name}: mlp}}"], environ={})
        assert config.dataset.target == name and config.demo.models == {name: "mlp"}
    allowed = "'popular', 'popularity', 'artist' or 'region'"
    with pytest.raises(ConfigError, match=rf"^--set dataset.target=hits: dataset.target = 'hits' is not allowed: "
                                          rf"Input should be {allowed}$"):
        load_config(None, ["dataset.target=hits"], environ={})
    with pytest.raises(ConfigError, match=rf"demo.models.hits.\[key\] = 'hits' is not allowed: "
                                          rf"Input should be {allowed}"):
        load_config(None, ["demo.models={hits: mlp}"], environ={})
    for text in ("hitpredict-popular", "hitpredict-popular/3", "hitpredict-popular@champion", "/models/bundle"):
        assert str(ModelRef.parse(text)) == text
    assert ModelRef.parse("hitpredict-popular@champion") == ModelRef(name="hitpredict-popular", version="champion")
    assert ModelRef.parse("./bundle").path == "bundle"


def test_loading_a_config_does_not_load_the_model_package():
    import subprocess
    import sys

    code = ("import sys; from hitpredict.config import load_config; load_config(None, environ={}); "
            "print(sorted(m for m in ('hitpredict.models', 'tensorflow', 'tf_keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_conf_names_a_shipped_config_or_a_file(tmp_path, monkeypatch):
    """`--conf local` reads the config shipped in the package (what a wheel user has); a file path is read as
    given, even when a file of the bare name exists here; an unknown bare name lists the shipped ones."""
    from hitpredict.config import SHIPPED_CONFIGS, config_path, shipped_config_names

    assert shipped_config_names() == ["cluster", "databricks", "local"]
    monkeypatch.chdir(tmp_path)
    assert load_config("local").source == str(SHIPPED_CONFIGS / "local.yaml")
    assert load_config("databricks").lake.engine == "delta"
    (tmp_path / "local").write_text("lake:\n  root: ./elsewhere\n")
    assert config_path("local") == Path("local")
    assert load_config("local").lake.root == "./elsewhere"
    with pytest.raises(ConfigError, match=r"^nosuch: no such config file.*shipped: cluster, databricks, local\)$"):
        load_config("nosuch")


def test_shipped_configs_are_read_from_a_zipped_package(tmp_path):
    """`spark-submit --py-files hitpredict-*.zip` imports the package from a zip archive: `--conf cluster` must still
    find the shipped config there (as a package resource, not a file on disk)."""
    import shutil
    import subprocess
    import sys

    lib = Path(__file__).resolve().parents[1] / "lib"
    archive = shutil.make_archive(str(tmp_path / "hitpredict-shipped"), "zip", root_dir=lib, base_dir="hitpredict")
    probe = ("import hitpredict.config as c; from hitpredict.config import load_config; "
             "print(c.__file__); print(load_config('cluster').lake.engine, c.shipped_config_names())")
    done = subprocess.run([sys.executable, "-c", probe], env={"PYTHONPATH": archive, "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr
    where, answer = done.stdout.splitlines()
    assert where.startswith(archive + "/hitpredict/")
    assert answer == "delta ['cluster', 'databricks', 'local']"
