"""Package `hitpredict`: predict a track's popularity from its audio alone."""
from setuptools import find_packages, setup

#: hitpredict.jobs.console_scripts(), written out: setup.py cannot import the package (its dependencies
#: are not there when a wheel is built).
CONSOLE_SCRIPTS = [
    "hitpredict=hitpredict.cli:main",
    "hitpredict-ingest-catalogue=hitpredict.jobs:ingest_catalogue",
    "hitpredict-fetch-previews=hitpredict.jobs:fetch_previews",
    "hitpredict-extract-features=hitpredict.jobs:extract_features",
    "hitpredict-build-dataset=hitpredict.jobs:build_dataset",
    "hitpredict-train-model=hitpredict.jobs:train_model",
    "hitpredict-score-catalogue=hitpredict.jobs:score_catalogue",
    "hitpredict-score-folder=hitpredict.jobs:score_folder",
    "hitpredict-report=hitpredict.jobs:report",
    "hitpredict-demo=hitpredict.jobs:demo",
]

setup(
    name="hitpredict",
    version="0.1.0",
    description="Distributed batch prediction of a track's hit potential from its audio",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    package_data={"hitpredict": ["py.typed", "configs/*.yaml"]},
    python_requires=">=3.10",
    # Loose floors only: the exact, verified set lives in conf/constraints.txt and is
    # applied by `make setup`. A cluster (Databricks, spark-submit) brings its own
    # pyspark, so the wheel never forces one onto it.
    install_requires=[
        "numpy>=1.24",
        "pyarrow>=14",
        "pandas>=2.0",
        "pydantic>=2.5",
        "pyyaml>=6",
        "deltalake>=1.0",
        "requests>=2.32.2",  # the pinned-address adapter (net_guard) needs 2.32.2+
        "soundfile>=0.12",
        # Audio and catalogue libraries a cluster runtime may lack (on Databricks the wheel is the job's only library).
        "librosa>=0.10",
        "av>=11",            # M4A/AAC decoding
        "mutagen>=1.45",     # audio file tags (folder catalogues)
        "spotipy>=2.23",     # the Spotify crawl
    ],
    # TensorFlow 2.16 + tf-keras, Horovod 0.28.1, Petastorm and MLflow come from the runtime (Databricks ML)
    # or from `make setup` (conf/constraints.txt); pip cannot build Horovod for a cluster by itself.
    extras_require={
        "spark": ["pyspark>=3.5"],
    },
    # `hitpredict`, and one entry point per job (hitpredict.jobs.JOBS; tests/test_wheel.py keeps the two equal).
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
