"""Accuracy under the cover by cover thickness: how deep the bedrock can be read from gravity.

The study is :mod:`ggmnet.studies.cover_depth` (its docstring, and ``--help``, say what it does and how to run it).
"""

from ggmnet.studies.cover_depth import main

if __name__ == "__main__":
    raise SystemExit(main())
