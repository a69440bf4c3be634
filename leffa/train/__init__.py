"""Training: the accelerate loop (loop.py) and its settings (config.py)."""
