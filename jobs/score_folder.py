"""spark-submit entry point: `hitpredict score_folder`.

    spark-submit jobs/score_folder.py DIR --conf conf/local.yaml [--model NAME@ALIAS ...]
"""
from hitpredict.cli import job_main

if __name__ == "__main__":
    job_main("score_folder")
