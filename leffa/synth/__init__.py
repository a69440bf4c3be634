"""Synthetic people with ground-truth correspondence (dataset.py), their bodies and garments, and a tiny base model (base.py)."""
