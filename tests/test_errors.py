"""Library errors name the parameter they concern; the CLI words that name as its flag."""

from __future__ import annotations

import pytest

from leffa.errors import LeffaError
from leffa.sampler import SamplerOptions
from leffa_cli.fields import flag


def test_worded_replaces_whole_word_option_names_only():
    error = LeffaError(
        "max_batch 0: must be at least 1; lower max_batch (max_batches and max_batch_x stay)", "max_batch"
    )
    assert error.option == "max_batch" and str(error).startswith("max_batch 0")
    assert (
        error.worded(flag) == "--max-batch 0: must be at least 1; lower --max-batch (max_batches and max_batch_x stay)"
    )
    both = LeffaError("size 64x48: export again with other height/width", option=("size", "height", "width"))
    assert both.worded(flag) == "--size 64x48: export again with other --height/--width"
    assert LeffaError("plain message").worded(flag) == "plain message"
    assert LeffaError("steps: 0", "steps").worded(lambda name: None) == "steps: 0"  # a front end may keep the word


def test_renamed_flags_and_a_library_error_through_the_cli_spelling():
    assert flag("allow_extra_gt") == "--ignore-extra-gt" and flag("guidance_mode") == "--guidance-mode"
    with pytest.raises(LeffaError) as caught:
        SamplerOptions(guidance_mode="fancy").check()
    assert caught.value.option == "guidance_mode"
    assert caught.value.worded(flag).startswith("--guidance-mode: unknown mode 'fancy'")


def test_missing_metric_networks_name_the_option_before_any_work():
    from leffa.metrics.scores import MetricNetworks, evaluate_paired, evaluate_unpaired

    with pytest.raises(LeffaError, match=r"LPIPS needs its network \(lpips FILE") as caught:
        evaluate_paired([], MetricNetworks(), ["ssim", "lpips"])
    assert caught.value.worded(flag).startswith("LPIPS needs its network (--lpips FILE")
    with pytest.raises(LeffaError, match=r"FID/KID need the Inception network \(inception FILE") as caught:
        evaluate_unpaired([], [], MetricNetworks(), ["fid"])
    assert caught.value.option == "inception"


def _literal_text(node) -> str | None:
    """The constant text of a str or f-string expression (placeholders dropped); ``None`` for anything else."""
    import ast

    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "{}".join(part.value for part in node.values if isinstance(part, ast.Constant))
    return None


def test_library_messages_name_each_option_once_so_the_cli_can_word_it():
    """``worded`` replaces every whole-word use of an option name, so a message may use it only for the option."""
    import ast
    import re
    from pathlib import Path

    checked, offenders = 0, []
    for path in sorted((Path(__file__).resolve().parents[1] / "leffa").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "LeffaError" and node.args):
                continue
            option = next((k.value for k in node.keywords if k.arg == "option"), None)
            text = _literal_text(node.args[0])
            if option is None or text is None:
                continue
            names = [option.value] if isinstance(option, ast.Constant) else []
            if isinstance(option, ast.Tuple):
                names = [e.value for e in option.elts if isinstance(e, ast.Constant)]
            for name in names:
                if not isinstance(name, str):
                    continue
                checked += 1
                count = len(re.findall(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text))
                if count != 1 and not (name == "init" and count == 2):  # "init FILE ... init random": both flags
                    offenders.append(f"{path.name}:{node.lineno} {name!r} x{count}: {text}")
    assert checked > 20
    assert not offenders, "\n".join(offenders)
