"""Studies: the project's experiments as functions (the scripts under ``experiments/`` are their command lines)."""
