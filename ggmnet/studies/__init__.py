"""Studies that run the stages and compare what they train: the paper's tables, the depth sweep, the fair test of
the search, the Pareto table, the recipe ablation, the outcrop studies, and the benchmarks' measuring helpers.
``experiments/*.py`` are their command lines."""

from pathlib import Path

#: The recipes' folder (``experiments/`` of the source tree).
RECIPES = Path(__file__).resolve().parents[2] / "experiments"
