"""Attention-flow pictures: colour wheel, warped references, heatmaps, HTML (render.py)."""
