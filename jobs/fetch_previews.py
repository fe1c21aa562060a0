"""spark-submit entry point: `hitpredict fetch_previews`.

    spark-submit jobs/fetch_previews.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("fetch_previews")
