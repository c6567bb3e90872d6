"""Accuracy under the cover of the outcrop prior's settings: how its defaults were chosen, rerunnable.

The study is :mod:`ggmnet.studies.outcrop_prior` (its docstring, and ``--help``, say what it does and how to run it).
"""

from ggmnet.studies.outcrop_prior import main

if __name__ == "__main__":
    raise SystemExit(main())
