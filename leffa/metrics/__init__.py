"""Evaluation: image scores and metric-network loading (scores.py), the networks (inception.py, lpips.py) and where
their weights come from (weights.py), flow error (flow.py), charts (chart.py), generation runs (run.py)."""
