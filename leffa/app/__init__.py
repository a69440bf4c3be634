"""Front ends over the pipelines that are not the CLI: the HTTP API (``server``) and the Gradio demo (``demo``).

Both load a model once and run every request through one ``worker.Worker`` (the model is used by one thread at a
time). They need the optional extras ``leffa[serve]`` (FastAPI, uvicorn, python-multipart) and ``leffa[demo]``
(Gradio); importing this package alone needs neither.
"""
