"""The Leffa loss: flow from attention, warping, masking, gates, fused vs explicit, gradient checkpointing."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from leffa.flow import attention_flow, coordinate_grid, explicit_attention_flow
from leffa.loss import (
    LeffaLossSettings,
    layer_flow,
    leffa_loss,
    masked_distance,
    select_layers,
    timestep_gate,
    warp_reference,
)
from leffa.train.loop import release_features


def one_hot_attention(targets: torch.Tensor, tokens: int, heads: int = 2, sharpness: float = 1e3):
    """Queries/keys (1, heads, n, n) whose attention puts (numerically) all weight on key ``targets[i]``."""
    keys = torch.eye(tokens).expand(1, heads, tokens, tokens).clone()
    queries = sharpness * torch.eye(tokens)[targets].expand(1, heads, tokens, tokens).clone()
    return queries, keys


def pixel_centre_flow(batch: int, height: int, width: int) -> torch.Tensor:
    """The flow that samples every pixel at its own centre under grid_sample(align_corners=False)."""
    ys = (torch.arange(height) * 2 + 1) / height - 1
    xs = (torch.arange(width) * 2 + 1) / width - 1
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_x, grid_y], dim=-1).expand(batch, height, width, 2)


def test_one_hot_attention_gives_the_attended_keys_coordinate():
    height, width = 3, 4
    targets = torch.randperm(height * width, generator=torch.Generator().manual_seed(0))
    queries, keys = one_hot_attention(targets, height * width)
    coords = coordinate_grid(height, width)
    for flow_fn in (attention_flow, explicit_attention_flow):
        flow = flow_fn(queries, keys, height, width, temperature=2.0).reshape(-1, 2)
        torch.testing.assert_close(flow, coords[targets], atol=1e-5, rtol=0)
    # the corners are where the convention says: top-left (-1, -1), bottom-right (1, 1), (x, y) order
    assert coords[0].tolist() == [-1.0, -1.0] and coords[-1].tolist() == [1.0, 1.0] and coords[1, 0] > coords[0, 0]


def test_identity_flow_warps_the_reference_onto_itself_with_zero_loss():
    reference = torch.rand(2, 3, 16, 12) * 2 - 1
    flow = pixel_centre_flow(2, 16, 12)
    warped = warp_reference(flow, reference)
    torch.testing.assert_close(warped, reference, atol=1e-6, rtol=0)
    assert masked_distance(warped, reference, torch.ones(2, 1, 16, 12)).abs().max() < 1e-10


def test_self_attention_correspondence_beats_a_shuffled_one():
    """Identity attention (each token attends to itself) warps the reference almost onto itself; up to the
    token-centre convention (grid corners at -1/1 with align_corners=False: a half-token stretch) it is far better
    than a random correspondence."""
    torch.manual_seed(0)
    height, width, scale = 16, 12, 4
    smooth = F.interpolate(torch.rand(1, 3, 4, 3) * 2 - 1, size=(height * scale, width * scale), mode="bilinear")
    mask = torch.zeros(1, 1, height * scale, width * scale)
    mask[..., scale:-scale, scale:-scale] = 1  # away from the zero padding at the border
    losses = {}
    for name, targets in (("identity", torch.arange(height * width)), ("shuffled", torch.randperm(height * width))):
        queries, keys = one_hot_attention(targets, height * width)
        flow = layer_flow(queries, keys, (height * scale, width * scale))
        losses[name] = masked_distance(warp_reference(flow, smooth), smooth, mask).item()
    assert losses["identity"] < 0.1 * losses["shuffled"]


def test_fused_flow_equals_explicit_in_value_and_gradient():
    generator = torch.Generator().manual_seed(1)
    height, width, heads, dim = 4, 5, 3, 8
    queries = torch.randn(2, heads, height * width, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    keys = torch.randn(2, heads, height * width, dim, generator=generator, dtype=torch.float64, requires_grad=True)
    weights = torch.randn(2, height, width, 2, generator=generator, dtype=torch.float64)
    results = []
    for flow_fn in (attention_flow, explicit_attention_flow):
        flow = flow_fn(queries, keys, height, width, temperature=2.0)
        (gq, gk) = torch.autograd.grad((flow * weights).sum(), (queries, keys))
        results.append((flow.detach(), gq, gk))
    for fused, explicit in zip(*results):
        torch.testing.assert_close(fused, explicit, atol=1e-10, rtol=1e-10)


def test_fused_and_explicit_losses_agree():
    generator = torch.Generator().manual_seed(2)
    captured = {
        "a": (torch.randn(2, 2, 48, 8, generator=generator), torch.randn(2, 2, 48, 8, generator=generator)),
        "b": (torch.randn(2, 2, 12, 8, generator=generator), torch.randn(2, 2, 12, 8, generator=generator)),
    }
    reference, target = torch.rand(2, 3, 64, 48) * 2 - 1, torch.rand(2, 3, 64, 48) * 2 - 1
    mask, timesteps = torch.ones(2, 1, 64, 48), torch.tensor([10, 20])
    fused = leffa_loss(captured, reference, target, mask, timesteps, fused=True)
    explicit = leffa_loss(captured, reference, target, mask, timesteps, fused=False)
    torch.testing.assert_close(fused.loss, explicit.loss, atol=1e-7, rtol=1e-5)
    assert fused.loss > 0
    torch.testing.assert_close(fused.loss, 1e-3 * fused.unweighted)
    torch.testing.assert_close(fused.unweighted, torch.stack(list(fused.per_layer.values())).mean())


def test_masked_out_pixels_do_not_count_and_the_mean_is_over_all_pixels():
    warped = torch.zeros(1, 3, 8, 8)
    target = torch.ones(1, 3, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    assert masked_distance(warped, target, mask).item() == 0.0
    mask[..., :4, :] = 1  # half the image
    assert masked_distance(warped, target, mask).item() == 0.5  # not normalised by the mask area
    changed = target.clone()
    changed[..., 4:, :] = -7  # outside the mask
    assert masked_distance(warped, changed, mask).item() == 0.5
    assert 0 < masked_distance(warped, target, mask, "smooth_l1").item() < 0.5


def test_masked_out_pixels_do_not_change_the_full_loss():
    generator = torch.Generator().manual_seed(3)
    captured = {"a": (torch.randn(1, 2, 48, 8, generator=generator), torch.randn(1, 2, 48, 8, generator=generator))}
    reference, target = torch.rand(1, 3, 64, 48), torch.rand(1, 3, 64, 48)
    mask = torch.zeros(1, 1, 64, 48)
    mask[..., 10:40, 5:30] = 1
    base = leffa_loss(captured, reference, target, mask, torch.tensor([0])).loss
    other = target.clone()
    other[..., mask[0, 0] == 0] = 5.0
    assert leffa_loss(captured, reference, other, mask, torch.tensor([0])).loss.item() == base.item()
    assert leffa_loss(captured, reference, target, torch.zeros_like(mask), torch.tensor([0])).loss.item() == 0.0


def test_resolution_gate_picks_layers_at_least_one_32nd(tiny_model):
    downscale = tiny_model.layer_downscale()
    assert set(downscale.values()) == {8, 16, 32, 64}
    inclusive = select_layers(downscale, 1 / 32, inclusive=True)
    exclusive = select_layers(downscale, 1 / 32, inclusive=False)
    assert {downscale[name] for name in inclusive} == {8, 16, 32}
    assert {downscale[name] for name in exclusive} == {8, 16}
    assert not any(name.startswith("mid_block") for name in inclusive)
    assert len(inclusive) == sum(1 for v in downscale.values() if v <= 32)


def test_timestep_gate_drops_late_samples():
    assert timestep_gate(torch.tensor([0, 499, 500, 999])).tolist() == [1.0, 1.0, 0.0, 0.0]
    generator = torch.Generator().manual_seed(4)
    captured = {"a": (torch.randn(2, 2, 48, 8, generator=generator), torch.randn(2, 2, 48, 8, generator=generator))}
    reference, target, mask = torch.rand(2, 3, 64, 48), torch.rand(2, 3, 64, 48), torch.ones(2, 1, 64, 48)
    both = leffa_loss(captured, reference, target, mask, torch.tensor([100, 100])).unweighted
    first = leffa_loss(captured, reference, target, mask, torch.tensor([100, 700])).unweighted
    only_first = leffa_loss(
        {"a": tuple(x[:1] for x in captured["a"])}, reference[:1], target[:1], mask[:1], torch.tensor([100])
    ).unweighted
    assert 0 < first < both
    torch.testing.assert_close(first, only_first / 2)  # late sample contributes 0 to the batch mean
    dropped = leffa_loss(
        captured, reference, target, mask, torch.tensor([100, 100]), sample_weight=torch.tensor([1.0, 0.0])
    ).unweighted
    torch.testing.assert_close(dropped, first)
    settings = LeffaLossSettings(timestep_threshold=1000)
    assert leffa_loss(captured, reference, target, mask, torch.tensor([100, 700]), settings).unweighted == both


def _leffa_gradients(model, checkpointing: bool):
    if checkpointing:
        model.generative_unet.enable_gradient_checkpointing()
        model.reference_unet.enable_gradient_checkpointing()
    else:
        model.generative_unet.disable_gradient_checkpointing()
        model.reference_unet.disable_gradient_checkpointing()
    model.train()
    model.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(5)
    reference_latents = torch.randn(1, 4, 8, 6, generator=generator)
    model_input = torch.randn(1, 12, 8, 6, generator=generator)
    layers = select_layers(model.layer_downscale())
    captured = {}
    features = model.reference_features(reference_latents, torch.tensor([100]))
    model.predict_noise(model_input, torch.tensor([100]), features, captured, layers)
    assert set(captured) == set(layers)
    assert all(q.requires_grad and k.requires_grad for q, k in captured.values())
    image = torch.rand(1, 3, 64, 48, generator=generator) * 2 - 1
    reference = torch.rand(1, 3, 64, 48, generator=generator) * 2 - 1
    loss = leffa_loss(captured, reference, image, torch.ones(1, 1, 64, 48), torch.tensor([100])).loss
    loss.backward()
    release_features(model)
    return {
        "generative": model.generative_unet.down_blocks[0].attentions[0].transformer_blocks[0].attn1.to_q.weight.grad,
        "reference": model.reference_unet.down_blocks[0].resnets[0].conv1.weight.grad,
    }


def test_leffa_loss_gradients_survive_gradient_checkpointing(tiny_model):
    plain = _leffa_gradients(tiny_model, checkpointing=False)
    checkpointed = _leffa_gradients(tiny_model, checkpointing=True)
    for name in plain:
        assert plain[name] is not None and plain[name].abs().sum() > 0, name
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-7, rtol=1e-5)


def test_leffa_loss_runs_under_bf16_autocast():
    generator = torch.Generator().manual_seed(6)
    queries = torch.randn(1, 2, 48, 8, generator=generator, requires_grad=True)
    keys = torch.randn(1, 2, 48, 8, generator=generator, requires_grad=True)
    reference, target, mask = torch.rand(1, 3, 64, 48), torch.rand(1, 3, 64, 48), torch.ones(1, 1, 64, 48)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = leffa_loss({"a": (queries.bfloat16(), keys.bfloat16())}, reference, target, mask, torch.tensor([1]))
    full = leffa_loss({"a": (queries, keys)}, reference, target, mask, torch.tensor([1]))
    assert low.loss.dtype == torch.float32
    torch.testing.assert_close(low.loss, full.loss, rtol=3e-2, atol=0)
    low.loss.backward()
    assert queries.grad is not None and queries.grad.abs().sum() > 0


def _saved_bytes(function, *tensors) -> int:
    """Bytes autograd keeps for backward while running ``function`` (the activation memory it costs)."""
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        function(*tensors)
    return total


def test_fused_flow_never_keeps_an_n_by_n_map():
    tokens, heads, dim = 1024, 2, 8
    queries = torch.randn(1, heads, tokens, dim, requires_grad=True)
    keys = torch.randn(1, heads, tokens, dim, requires_grad=True)
    n_by_n = tokens * tokens * heads * 4
    fused = _saved_bytes(lambda q, k: attention_flow(q, k, 32, 32), queries, keys)
    explicit = _saved_bytes(lambda q, k: explicit_attention_flow(q, k, 32, 32), queries, keys)
    assert explicit >= n_by_n
    assert fused < 0.05 * n_by_n


def test_min_snr_weight_caps_only_the_nearly_clean_timesteps():
    from diffusers import DDPMScheduler
    from diffusers.training_utils import compute_snr

    from leffa.loss import min_snr_weight

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear")
    timesteps = torch.tensor([0, 50, 200, 500, 999])
    snr = compute_snr(scheduler, timesteps)
    weight = min_snr_weight(scheduler, timesteps, gamma=5.0)
    noisy = snr <= 5
    assert noisy.any() and (~noisy).any()  # the timesteps straddle the cap
    torch.testing.assert_close(weight[noisy], torch.ones(int(noisy.sum())))
    torch.testing.assert_close(weight[~noisy], 5 / snr[~noisy].float())
    assert weight[0] < 0.01  # t = 0: SNR in the thousands
    velocity = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", prediction_type="v_prediction")
    assert (min_snr_weight(velocity, timesteps, gamma=5.0) < 1).all()  # / (SNR + 1) for velocity targets


def test_weighted_diffusion_loss_is_the_weighted_mean_of_per_sample_errors():
    from leffa.loss import diffusion_loss

    generator = torch.Generator().manual_seed(0)
    prediction, target = torch.randn(3, 4, 5, 6, generator=generator), torch.randn(3, 4, 5, 6, generator=generator)
    torch.testing.assert_close(diffusion_loss(prediction, target, torch.ones(3)), diffusion_loss(prediction, target))
    per_sample = ((prediction - target) ** 2).flatten(1).mean(1)
    weight = torch.tensor([1.0, 0.5, 0.0])
    torch.testing.assert_close(diffusion_loss(prediction, target, weight), (per_sample * weight).mean())
