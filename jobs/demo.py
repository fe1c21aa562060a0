"""spark-submit entry point: `hitpredict demo`.

    spark-submit jobs/demo.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("demo")
