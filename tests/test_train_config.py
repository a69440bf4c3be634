"""Training settings resolve in one pure function, Python and CLI agree, and the CLI's options are the fields."""

from __future__ import annotations

import os

import pytest
import typer
import yaml
from typer.testing import CliRunner

from leffa.errors import LeffaError
from leffa.train.config import STAGE_PRESETS, TrainConfig, environment_settings, load_config, resolve_config
from leffa_cli.app import build_app, main
from leffa_cli.fields import flag


def dry_run(*args: str, env: dict | None = None) -> dict:
    result = CliRunner().invoke(build_app(), ["train", *args, "--dry-run"], env=env)
    assert result.exit_code == 0, result.output
    return yaml.safe_load(result.output)


@pytest.fixture(autouse=True)
def no_train_environment(monkeypatch):
    for key in list(os.environ):
        if key.upper().startswith("LEFFA_TRAIN_"):
            monkeypatch.delenv(key)


@pytest.mark.parametrize(("task", "stage"), sorted(STAGE_PRESETS))
def test_python_construction_gets_the_stage_preset_like_the_cli(task, stage):
    config = TrainConfig(task=task, stage=stage)
    preset = STAGE_PRESETS[(task, stage)]
    assert config.size == preset["size"] and config.batch_size == preset["batch_size"]
    assert config.max_steps == preset["max_steps"] and config.leffa_loss == preset["leffa_loss"]
    assert str(config.output) == f"runs/{task}-stage{stage}"
    assert (
        config.resolved()
        == load_config(task=task, stage=stage).resolved()
        == dry_run("--task", task, "--stage", str(stage))
    )


def test_explicit_values_beat_the_preset_in_python_and_cli():
    config = TrainConfig(task="pose", stage=3, max_steps=5, leffa_loss=False, size=(64, 48))
    assert (config.max_steps, config.leffa_loss, config.size, config.batch_size) == (5, False, (64, 48), 64)
    cli = dry_run("--task", "pose", "--stage", "3", "--max-steps", "5", "--no-leffa-loss", "--size", "64x48")
    assert cli == config.resolved()


def test_resolution_is_a_pure_function_of_its_layers(monkeypatch):
    monkeypatch.setenv("LEFFA_TRAIN_LR", "9e-9")  # not passed in: must not leak into resolve_config
    file_values = {"lr": 3e-5, "max_steps": 5, "size": "128x96", "stage": 2}
    environment = {"max_steps": "7", "task": "pose", "ema": "true", "dresscode_categories": "upper_body,dresses"}
    config = resolve_config(file_values, environment, {"seed": 3, "size": None})
    assert (config.lr, config.max_steps, config.size, config.seed) == (3e-5, 7, (128, 96), 3)  # env beats file
    assert (config.task, config.stage, config.batch_size) == ("pose", 2, 64)  # preset of the file+env task/stage
    assert config.ema is True and config.dresscode_categories == ["upper_body", "dresses"]
    assert resolve_config(file_values, environment, {"seed": 3}) == config  # same layers, same config
    assert resolve_config(file_values, environment, {"max_steps": 9}).max_steps == 9  # explicit beats env
    assert load_config(task="pose").lr == 9e-9  # load_config is the one that reads os.environ
    assert load_config(task="pose", environ={}).lr == 1e-5


def test_environment_names_are_checked_and_case_insensitive():
    assert environment_settings({"leffa_train_lr": "1", "LEFFA_TRAIN_SEED": "4", "HOME": "/x"}) == {
        "lr": "1",
        "seed": "4",
    }
    with pytest.raises(LeffaError, match="LEFFA_TRAIN_LRR: no training setting 'lrr'"):
        environment_settings({"LEFFA_TRAIN_LRR": "1"})


def test_bad_values_are_errors_naming_the_setting():
    with pytest.raises(LeffaError, match="training setting size 100x75: height and width") as caught:
        load_config(size="100x75")
    assert caught.value.option == "size"
    with pytest.raises(LeffaError, match="training setting stage") as caught:
        load_config(stage=4)
    assert caught.value.option == "stage"
    with pytest.raises(LeffaError, match="learning_rate") as caught:
        resolve_config(explicit={"learning_rate": 1})
    assert caught.value.option == "learning_rate"


def test_cli_words_the_setting_as_its_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--size", "100x75", "--dry-run"])
    assert exit_info.value.code != 0
    assert "leffa: error: training setting --size 100x75: height and width must be" in capsys.readouterr().err


def test_every_setting_is_an_option_of_the_train_command():
    command = typer.main.get_command(build_app()).commands["train"]
    options = {opt for param in command.params for opt in param.opts + param.secondary_opts}
    assert {flag(name) for name in TrainConfig.model_fields} <= options
    assert {"--no-ema", "--no-gradient-checkpointing", "--config", "--dry-run"} <= options
    described = {param.name: param.help for param in command.params}
    assert all(described[name] for name in TrainConfig.model_fields)  # help comes from the field descriptions


def test_snr_gamma_is_off_by_default_and_must_be_positive():
    assert load_config().snr_gamma is None
    assert load_config(snr_gamma=5).snr_gamma == 5
    with pytest.raises(LeffaError, match="snr_gamma must be positive") as caught:
        load_config(snr_gamma=0)
    assert caught.value.option == "snr_gamma"


@pytest.mark.parametrize("name", ["micro_batch_size", "keep_checkpoints", "validation_steps", "leffa_temperature"])
def test_positive_settings_are_refused_at_zero_naming_the_option(name):
    with pytest.raises(LeffaError, match=f"{name} must be positive") as caught:
        load_config(**{name: 0})
    assert caught.value.option == name
