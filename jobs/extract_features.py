"""spark-submit entry point: `hitpredict extract_features`.

    spark-submit jobs/extract_features.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("extract_features")
