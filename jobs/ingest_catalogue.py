"""spark-submit entry point: `hitpredict ingest_catalogue`.

    spark-submit jobs/ingest_catalogue.py --conf conf/local.yaml [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("ingest_catalogue")
