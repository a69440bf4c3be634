"""ONNX export (graphs.py), its manifest (manifest.py) and the ONNX Runtime backend (backend.py)."""
