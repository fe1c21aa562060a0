"""spark-submit entry point: `hitpredict report`.

    spark-submit jobs/report.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("report")
