"""Package `hitpredict`: predict a track's popularity from its audio alone."""
from setuptools import find_packages, setup

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
    ],
    extras_require={
        "spark": ["pyspark>=3.5"],
    },
    entry_points={"console_scripts": ["hitpredict=hitpredict.cli:main"]},
)
