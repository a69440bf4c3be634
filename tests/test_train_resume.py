"""Kill a tiny stage-3 run after a checkpoint, resume it: the next step's loss equals an uninterrupted run's."""

from __future__ import annotations

import pytest
import torch
from test_train import tiny_config, vitonhd  # noqa: F401 - vitonhd is a fixture

from leffa.checkpoint import load_model
from leffa.train.loop import Trainer, train


def test_resume_after_a_kill_continues_exactly(vitonhd, tmp_path):
    """Kill after step 1 (its checkpoint written), resume: step 2's loss equals an uninterrupted run's.

    The Leffa loss is forced on for every sample (weight 1, no timestep gate, no reference dropout) so the run
    also shows that stage 3 adds it and that it trains.
    """
    leffa_on = dict(
        max_steps=2, checkpoint_every=1, leffa_weight=1.0, leffa_timestep_threshold=1000, reference_dropout=0.0
    )
    trainer = Trainer(tiny_config(vitonhd, tmp_path / "straight", **{**leffa_on, "checkpoint_every": 100}))
    before = trainer.model.generative_unet.conv_in.weight.detach().clone()
    straight = trainer.run()
    assert all(record["leffa"] > 0 and record["loss"] > record["diffusion"] for record in straight.history)
    assert not torch.equal(before, trainer.model.generative_unet.conv_in.weight)
    assert straight.frozen_parameters > 0  # the reference-UNet tail that cannot reach the features

    class Killed(Exception):
        pass

    def kill_after_one(report):
        if report.step == 1:
            raise Killed

    with pytest.raises(Killed):
        train(tiny_config(vitonhd, tmp_path / "killed", **leffa_on), on_step=kill_after_one)
    resumed = train(tiny_config(vitonhd, tmp_path / "killed", resume="latest", **leffa_on))
    assert resumed.resumed_from.name == "step-00000001"
    assert [r["step"] for r in resumed.history] == [2]
    assert resumed.history[0]["loss"] == pytest.approx(straight.history[1]["loss"], rel=1e-6, abs=0)
    assert resumed.history[0]["leffa"] == pytest.approx(straight.history[1]["leffa"], rel=1e-6, abs=0)
    final_a = load_model(tmp_path / "straight" / "model.safetensors").state_dict()
    final_b = load_model(tmp_path / "killed" / "model.safetensors").state_dict()
    assert all(torch.allclose(final_a[k], final_b[k], atol=1e-6) for k in final_a)
