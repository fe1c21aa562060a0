"""spark-submit entry point: `hitpredict train_model`.

    spark-submit jobs/train_model.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("train_model")
