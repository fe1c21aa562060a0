"""spark-submit entry point: `hitpredict score_catalogue`.

    spark-submit jobs/score_catalogue.py --conf conf/local.yaml [--model NAME/VERSION ...] [--set section.key=value ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("score_catalogue")
