"""Estimators, baselines, evaluation and scoring policy (filled in by later issues)."""
