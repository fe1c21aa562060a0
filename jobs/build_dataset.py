"""spark-submit entry point: `hitpredict build_dataset`.

    spark-submit jobs/build_dataset.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("build_dataset")
