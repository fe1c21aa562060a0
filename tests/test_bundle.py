"""The Databricks Asset Bundle (databricks.yml, resources/*.yml), checked offline: ``databricks bundle validate``
needs a workspace.

For each target (dev, prod) the bundle's ``${var.*}`` references are resolved the way the CLI resolves them
(the target's values over the variables' defaults), and then:
- every job loads with ``databricks.bundles.jobs.Job.from_dict``, which refuses unknown fields;
- every task runs an entry point that the BUILT wheel declares, from the wheel the bundle ships;
- every task's parameters, with the job parameters (``{{job.parameters.x}}``) filled in from their defaults
  and from other values a user may pass, are accepted by ``hitpredict``'s command line for that entry point's
  command, and the ``databricks`` config loads with them;
- the schedule is weekly, paused in dev and live in prod; the tasks form the chain ingest -> ... -> report;
  training runs on a GPU node type with the 15.4 LTS ML GPU runtime, the others on 15.4 LTS ML.
"""
from __future__ import annotations

import configparser
import copy
import fnmatch
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.bundles.jobs import Job

from hitpredict import jobs
from hitpredict.cli import build_parser
from hitpredict.config import ModelRef, load_config
from test_wheel import build_wheel

ROOT = Path(__file__).resolve().parents[1]
CHAIN = ["ingest", "fetch", "features", "dataset", "train", "score", "report"]
#: Keys the bundle format allows at the top level of databricks.yml and in a target.
ROOT_KEYS = {"bundle", "include", "artifacts", "variables", "targets", "workspace", "resources", "presets", "sync",
             "permissions", "run_as", "experimental", "scripts", "python"}
TARGET_KEYS = {"mode", "default", "variables", "workspace", "resources", "artifacts", "presets", "run_as",
               "permissions", "bundle", "git", "cluster_id", "compute_id", "sync"}
#: Bundle references the CLI fills in itself, at deploy time.
BUNDLE_REFS = {"bundle.name", "bundle.target", "workspace.current_user.userName",
               "workspace.current_user.short_name"}
#: Job-run references Databricks fills in at run time, with a sample value each.
RUN_REFS = {"job.run_id": "918273645", "job.id": "1234", "job.start_time.iso_date": "2026-11-23"}
#: GPU node types: AWS (g4dn, g5, g6, p3, p4d, p5), Azure (NC, ND, NV series), GCP (a2, a3, g2).
GPU_NODE = re.compile(r"^((g4dn|g5|g6|g6e|p3|p4d|p4de|p5)\.\w+|Standard_N[CDV]\w+|(a2|a3|g2)-\w+-\d+g?)$")
#: Other values a user may run the job with (``databricks bundle run --params``): none of them a default.
SAMPLE_PARAMETERS = {
    "catalog": "ml_prod", "schema": "hits_2026", "secret_scope": "spotify-creds", "ingest_source": "csv",
    "ingest_path": "/Volumes/ml_prod/hits_2026/landing/catalogue.csv", "genre": "", "crawl_tag": "weekly-47",
    "target": "artist", "family": "mlp", "num_proc": "8", "extra_set": "fetch.max_concurrency=64",
}


def _load(path: Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict), f"{path}: not a mapping"
    return data


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    """databricks.yml with the resources of its ``include`` files merged in."""
    root = _load(ROOT / "databricks.yml")
    resources: dict[str, dict[str, Any]] = {}
    for pattern in root.get("include", []):
        files = sorted(ROOT.glob(pattern))
        assert files, f"include {pattern!r} matches no file"
        for path in files:
            included = _load(path)
            assert set(included) <= {"resources", "variables", "targets"}, f"{path}: {sorted(included)}"
            for kind, items in included.get("resources", {}).items():
                for key, value in items.items():
                    assert key not in resources.get(kind, {}), f"{kind}.{key} is defined twice"
                    resources.setdefault(kind, {})[key] = value
    root["resources"] = resources
    return root


@pytest.fixture(scope="module")
def wheel_entry_points(tmp_path_factory) -> tuple[str, dict[str, str]]:
    """(the built wheel's file name, its console_scripts entry points)."""
    wheel = build_wheel(tmp_path_factory.mktemp("wheel"))
    with zipfile.ZipFile(wheel) as archive:
        names = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        parser = configparser.ConfigParser(delimiters=("=",))
        parser.read_string(archive.read(names[0]).decode())
    return wheel.name, {name: target.strip() for name, target in parser["console_scripts"].items()}


def resolve(value: Any, variables: dict[str, Any]) -> Any:
    """``value`` with every ``${var.NAME}`` replaced by that variable's value (a whole-string reference keeps
    the value's type, as the CLI does); fails on an undeclared variable or an unknown reference."""
    if isinstance(value, dict):
        return {k: resolve(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v, variables) for v in value]
    if not isinstance(value, str):
        return value
    for ref in re.findall(r"\$\{([^}]+)\}", value):
        assert ref.startswith("var.") or ref in BUNDLE_REFS, f"unknown bundle reference ${{{ref}}}"
        assert not ref.startswith("var.") or ref[4:] in variables, f"${{{ref}}}: no such variable"
    whole = re.fullmatch(r"\$\{var\.([\w-]+)\}", value)
    if whole:
        return variables[whole[1]]
    return re.sub(r"\$\{var\.([\w-]+)\}", lambda m: str(variables[m[1]]), value)


def target_jobs(bundle: dict[str, Any], target: str) -> dict[str, dict[str, Any]]:
    """The bundle's jobs as target ``target`` deploys them: its variable values over the defaults."""
    spec = bundle["targets"][target] or {}
    variables = {name: (decl or {}).get("default") for name, decl in bundle["variables"].items()}
    unknown = set(spec.get("variables", {})) - set(variables)
    assert not unknown, f"target {target} sets undeclared variables {sorted(unknown)}"
    variables.update(spec.get("variables", {}))
    assert all(v is not None for v in variables.values()), f"{target}: variables without a value: {variables}"
    merged = copy.deepcopy(bundle["resources"]["jobs"])
    for key, override in (spec.get("resources", {}).get("jobs") or {}).items():
        merged[key] = {**merged[key], **override}
    return resolve(merged, variables)


def fill(text: str, parameters: dict[str, str]) -> str:
    """``text`` with every ``{{job.parameters.x}}`` and run reference replaced; fails on an unknown one."""
    def value(match: re.Match[str]) -> str:
        ref = match[1].strip()
        if ref.startswith("job.parameters."):
            name = ref.removeprefix("job.parameters.")
            assert name in parameters, f"{{{{{ref}}}}}: the job declares no parameter {name!r}"
            return parameters[name]
        assert ref in RUN_REFS, f"unknown dynamic value reference {{{{{ref}}}}}"
        return RUN_REFS[ref]
    return re.sub(r"\{\{([^}]*)\}\}", value, text)


def test_the_bundle_files_parse_and_use_only_known_keys(bundle):
    assert set(bundle) <= ROOT_KEYS, sorted(set(bundle) - ROOT_KEYS)
    assert bundle["bundle"]["name"] == "hitpredict"
    assert set(bundle["targets"]) == {"dev", "prod"}
    for name, target in bundle["targets"].items():
        assert set(target) <= TARGET_KEYS, (name, sorted(set(target) - TARGET_KEYS))
    assert bundle["targets"]["dev"]["mode"] == "development" and bundle["targets"]["dev"].get("default") is True
    assert bundle["targets"]["prod"]["mode"] == "production"
    assert list(bundle["resources"]) == ["jobs"] and list(bundle["resources"]["jobs"]) == ["hitpredict"]


def test_the_artifact_is_the_wheel_make_wheel_builds(bundle, wheel_entry_points):
    wheel_name, _ = wheel_entry_points
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl" and artifact["build"] == "make wheel" and artifact["path"] == "."
    assert re.search(r"^wheel:", (ROOT / "Makefile").read_text(), re.M), "the Makefile has no wheel target"
    (source,) = [f["source"] for f in artifact["files"]]
    assert fnmatch.fnmatch(f"dist/{wheel_name}", source)


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_each_job_loads_with_databricks_bundles(bundle, target):
    for key, job in target_jobs(bundle, target).items():
        loaded = Job.from_dict(copy.deepcopy(job))
        assert [t.task_key for t in loaded.tasks] == CHAIN


def test_databricks_bundles_refuses_a_misspelt_field(bundle):
    """The check above means something: a field the job schema does not have is refused."""
    job = target_jobs(bundle, "dev")["hitpredict"]
    for path in (["tasks", 0, "python_wheel_task"], ["job_clusters", 0, "new_cluster", "node_type_id"],
                 ["schedule", "pause_status"]):
        broken = copy.deepcopy(job)
        node = broken
        for step in path[:-1]:
            node = node[step]
        node[path[-1] + "s"] = node.pop(path[-1])
        with pytest.raises(ValueError, match=f"Unexpected field '{path[-1]}s'"):
            Job.from_dict(broken)
    bad_mode = copy.deepcopy(job)
    bad_mode["job_clusters"][0]["new_cluster"]["data_security_mode"] = "SINGLE_USERS"
    with pytest.raises(ValueError):
        Job.from_dict(bad_mode)


def test_every_task_runs_an_entry_point_of_the_built_wheel(bundle, wheel_entry_points):
    wheel_name, entry_points = wheel_entry_points
    job = target_jobs(bundle, "dev")["hitpredict"]
    for task in job["tasks"]:
        wheel_task = task["python_wheel_task"]
        assert wheel_task["package_name"] == "hitpredict"
        assert wheel_task["entry_point"] in entry_points, task["task_key"]
        assert entry_points[wheel_task["entry_point"]].startswith("hitpredict.jobs:")
        (library,) = task["libraries"]
        # Library paths are relative to the resource file (resources/), as the CLI reads them.
        assert fnmatch.fnmatch(f"../dist/{wheel_name}", library["whl"]), library


@pytest.mark.parametrize("values", ["defaults", "sample values"])
def test_every_task_parameter_is_one_its_command_line_accepts(bundle, values):
    job = target_jobs(bundle, "prod")["hitpredict"]
    defaults = {p["name"]: fill(p["default"], {}) for p in job["parameters"]}
    assert set(SAMPLE_PARAMETERS) == set(defaults)
    parameters = defaults if values == "defaults" else SAMPLE_PARAMETERS
    assert values == "defaults" or all(SAMPLE_PARAMETERS[k] != defaults[k] for k in defaults)
    used: set[str] = set()
    parser = build_parser()
    shipped = load_config("databricks", environ={})
    for task in job["tasks"]:
        wheel_task = task["python_wheel_task"]
        raw = wheel_task["parameters"]
        used |= {m for p in raw for m in re.findall(r"\{\{\s*job\.parameters\.(\w+)\s*\}\}", p)}
        argv = [fill(p, parameters) for p in raw]
        command = jobs.JOBS[wheel_task["entry_point"]][0]
        try:
            args = parser.parse_args([command, *argv])
        except SystemExit:
            pytest.fail(f"task {task['task_key']}: hitpredict {command} refuses {argv}")
        assert args.command == command
        config = load_config(args.conf, args.overrides, environ={})
        assert config.source.endswith("configs/databricks.yaml")
        lake = config.lake
        assert (lake.engine, lake.catalog, lake.schema_name) == ("delta", parameters["catalog"], parameters["schema"])
        assert lake.root == f"/Volumes/{parameters['catalog']}/{parameters['schema']}/lakehouse"
        assert config.secrets.databricks_scope == parameters["secret_scope"]
        assert config.dataset.target == parameters["target"]
        assert config.mlflow.model_name == f"{parameters['catalog']}.{parameters['schema']}.hitpredict_{{target}}"
        assert config.fetch.max_concurrency == (64 if values == "sample values"   # extra_set, or nothing
                                                else shipped.fetch.max_concurrency)
        assert shipped.fetch.max_concurrency != 64
        if command == "ingest_catalogue":
            assert args.source == parameters["ingest_source"] and args.crawl_tag == parameters["crawl_tag"]
            assert (args.path or "") == parameters["ingest_path"] and (args.genre or "") == parameters["genre"]
        if command == "train_model":
            assert (args.family, args.num_proc) == (parameters["family"], int(parameters["num_proc"]))
            assert task["job_cluster_key"] == "train"
        if command == "score_catalogue":
            # Scores with the model the train task just registered: its latest version in Unity Catalog.
            (model,) = [ModelRef.parse(text) for text in args.models]
            assert model == ModelRef(name=config.mlflow.model_name.format(target=parameters["target"]))
    assert used == set(defaults), f"job parameters no task uses: {sorted(set(defaults) - used)}"
    if values == "defaults":
        assert defaults["crawl_tag"] == f"run-{RUN_REFS['job.run_id']}"   # each run crawls afresh
        assert defaults["num_proc"] == str(bundle["variables"]["gpu_workers"]["default"])   # one per GPU worker


@pytest.mark.parametrize("target, status", [("dev", "PAUSED"), ("prod", "UNPAUSED")])
def test_the_weekly_schedule_is_paused_in_dev_and_live_in_prod(bundle, target, status):
    schedule = target_jobs(bundle, target)["hitpredict"]["schedule"]
    assert schedule["pause_status"] == status
    seconds, minutes, hours, day_of_month, month, day_of_week = schedule["quartz_cron_expression"].split()
    assert (day_of_month, month) == ("?", "*") and re.fullmatch(r"MON|TUE|WED|THU|FRI|SAT|SUN|[1-7]", day_of_week)
    assert all(part.isdigit() for part in (seconds, minutes, hours))   # once a week, at one time
    assert schedule["timezone_id"] == "UTC"


def test_the_tasks_form_the_stage_chain(bundle):
    tasks = target_jobs(bundle, "dev")["hitpredict"]["tasks"]
    assert [t["task_key"] for t in tasks] == CHAIN
    assert "depends_on" not in tasks[0]
    for before, task in zip(tasks, tasks[1:]):
        assert task["depends_on"] == [{"task_key": before["task_key"]}], task["task_key"]


@pytest.mark.parametrize("target", ["dev", "prod"])
def test_training_runs_on_a_gpu_node_with_the_15_4_lts_ml_gpu_runtime(bundle, target):
    job = target_jobs(bundle, target)["hitpredict"]
    clusters = {c["job_cluster_key"]: c["new_cluster"] for c in job["job_clusters"]}
    used = {t["job_cluster_key"] for t in job["tasks"]}
    assert used == set(clusters)
    for key, cluster in clusters.items():
        gpu = key == "train"
        assert cluster["spark_version"] == f"15.4.x-{'gpu' if gpu else 'cpu'}-ml-scala2.12", key
        assert bool(GPU_NODE.match(cluster["node_type_id"])) == gpu, (key, cluster["node_type_id"])
        assert cluster["spark_env_vars"]["TF_USE_LEGACY_KERAS"] == "1"   # Keras 2 for Horovod
        assert int(cluster["num_workers"]) >= 1
