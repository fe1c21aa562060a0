"""spark-submit entry point: `hitpredict check-stack`.

    spark-submit jobs/check_stack.py --conf conf/local.yaml [--set section.key=value ...]
"""
import os
import sys

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # before anything imports TensorFlow

from hitpredict.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["check-stack", *sys.argv[1:]]))
