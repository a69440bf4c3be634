"""Automatic conditions: tryon/pose call the installed ``leffa.conditions`` plugins when files are not given."""

from importlib.metadata import entry_points

from PIL import Image

import leffa.pipeline as pipeline


def test_leffa_publishes_its_own_condition_plugins():
    published = {entry.name: entry.value for entry in entry_points(group=pipeline.CONDITIONS_GROUP)}
    assert published == {"mask": "leffa.automatic:garment_mask", "densepose": "leffa.automatic:densepose"}


def test_missing_conditions_come_from_plugins(tmp_path, monkeypatch):
    calls = []

    def fake_mask(person, garment_type, offline=False, mask_style="upstream", style="hd"):
        calls.append(("mask", garment_type, offline, mask_style, style))
        return Image.new("L", person.size, 255)

    def fake_densepose(person, kind, offline=False):
        calls.append(("densepose", kind, offline))
        return Image.new("RGB", person.size, (10, 20, 30))

    monkeypatch.setattr(pipeline, "condition_plugin", {"mask": fake_mask, "densepose": fake_densepose}.get)
    Image.new("RGB", (96, 128), "white").save(tmp_path / "person.png")
    Image.new("RGB", (96, 128), "red").save(tmp_path / "garment.png")
    job = pipeline.tryon_job(
        tmp_path / "person.png",
        tmp_path / "garment.png",
        tmp_path / "out.png",
        garment_type="lower_body",
        offline=True,
        mask_style="tight",
    )
    assert calls == [("mask", "lower_body", True, "tight", "hd"), ("densepose", "rgb", True)]
    assert job.mask.getpixel((0, 0)) == 255 and job.densepose.getpixel((5, 5)) == (10, 20, 30)

    calls.clear()  # the DressCode model: dc mask rules and the part-index DensePose, as the authors' app
    pipeline.tryon_job(tmp_path / "person.png", tmp_path / "garment.png", tmp_path / "out.png", style="dc")
    assert calls == [("mask", "upper_body", False, "upstream", "dc"), ("densepose", "index", False)]

    calls.clear()
    job = pipeline.pose_job(tmp_path / "person.png", tmp_path / "garment.png", tmp_path / "out.png")
    assert calls == [("densepose", "iuv", False)]


def test_tryon_makes_conditions_for_the_chosen_model():
    from leffa.pipelines import conditions_style

    assert conditions_style("dress_code") == "dc"
    assert conditions_style(None) == conditions_style("viton_hd") == conditions_style("model.safetensors") == "hd"
