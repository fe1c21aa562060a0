"""spark-submit entry point: `hitpredict check-stack`.

    spark-submit jobs/check_stack.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("check-stack")
