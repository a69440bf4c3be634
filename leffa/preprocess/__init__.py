"""Preprocessing from plain photos: human parsing, body keypoints, garment-agnostic masks, garment clean-up.

``from leffa.preprocess import automatic_conditions`` is the one call inference needs (see ``conditions``).
"""


def __getattr__(name: str):
    if name in ("automatic_conditions", "person_conditions", "PrepTools"):
        from leffa.preprocess import conditions

        return getattr(conditions, name)
    raise AttributeError(f"module 'leffa.preprocess' has no attribute {name!r}")
