"""Evaluation: image scores (scores.py), metric networks (inception, lpips, weights), flow error, charts, generation runs."""
