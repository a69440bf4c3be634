"""Preprocessing from plain photos: human parsing, body keypoints, garment-agnostic masks, garment clean-up."""
