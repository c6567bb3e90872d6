"""The under-the-cover table of docs/under-the-cover.md from the evaluations experiments/outcrop_input.sh wrote.

The study is :mod:`ggmnet.studies.outcrop_table` (its docstring, and ``--help``, say what it does and how to run it).
"""

from ggmnet.studies.outcrop_table import main

if __name__ == "__main__":
    raise SystemExit(main())
