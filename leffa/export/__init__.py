"""ONNX export (graphs.py) and the ONNX Runtime backend (backend.py)."""
