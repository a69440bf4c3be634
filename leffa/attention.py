"""Attention processors that join the two UNets, keyed by layer name.

Leffa concatenates the reference UNet's normed self-attention inputs to the generative UNet's own tokens in every
self-attention layer (attn1). Upstream runs attention over all 2n tokens and keeps the first half; only the queries of
the generative tokens matter, so we take queries from the own tokens and keys/values from ``[own; reference]``: the
same numbers at half the cost. Cross-attention (attn2) has no text to attend to; ``leffa.model`` replaces it with a
pass-through module, as upstream does, so only attn1 layers get processors here.

Every processor takes its attention *kernel* ``(q, k, v) -> out`` (all ``(B, heads, tokens, head_dim)``) as a
constructor argument: PyTorch's fused ``scaled_dot_product_attention`` by default; export passes a query-chunked
kernel (``leffa.export.graphs.chunked_attention``) and keeps everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial

import torch
import torch.nn.functional as F

ReferenceFeatures = dict[str, torch.Tensor]
"""Normed attn1 inputs of the reference UNet, ``{layer name: (B, n, d)}``; layer names are shared by both UNets."""

AttentionKernel = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""Softmax attention ``(q, k, v) -> out``: q ``(B, h, n_q, d)``, k and v ``(B, h, n_k, d)``, out ``(B, h, n_q, d)``."""

DEFAULT_KERNEL: AttentionKernel = F.scaled_dot_product_attention


def sliced_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, queries: int | None) -> torch.Tensor:
    """``scaled_dot_product_attention`` over slices of ``queries`` queries: q (B, h, n, d), k/v (B, h, m, d).

    Softmax runs over the keys, so each query's row is independent and slicing the queries changes no number; a
    kernel that materialises the (n, m) scores then holds ``queries x m`` of them at a time. (Export's
    ``chunked_attention`` does the same with explicit ops that every ONNX consumer parses.)
    """
    if queries is None or q.shape[2] <= queries:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(part, k, v) for part in q.split(queries, dim=2)], dim=2)


def sliced_kernel(queries: int) -> AttentionKernel:
    """The kernel of ``LeffaModel.set_attention_slice`` (``--attention-slice``): ``sliced_attention`` at ``queries``."""
    return partial(sliced_attention, queries=queries)


@dataclass
class AttentionContext:
    """State shared by the processors of one model for one forward pass.

    ``recorded`` is filled by the reference processors; ``capture`` (when not ``None``) receives each generative
    layer's queries and reference keys for the Leffa loss. The reference features themselves reach the generative
    processors as a call argument (``cross_attention_kwargs``), not through here.
    """

    recorded: ReferenceFeatures = field(default_factory=dict)
    capture: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    capture_layers: frozenset[str] | None = None
    upstream_equivalent: bool = False


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = x.shape
    return x.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _project_out(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    hidden_states = attn.to_out[0](hidden_states)
    return attn.to_out[1](hidden_states)


def _check_plain(attn) -> None:
    if attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_q is not None:
        raise ValueError("Leffa attention expects plain transformer-block self-attention layers")


class ReferenceSelfAttention:
    """Reference UNet attn1: plain self-attention that records its normed input tokens under its layer name."""

    def __init__(self, name: str, context: AttentionContext, kernel: AttentionKernel = DEFAULT_KERNEL):
        self.name = name
        self.context = context
        self.kernel = kernel

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        _check_plain(attn)
        self.context.recorded[self.name] = hidden_states
        q = _split_heads(attn.to_q(hidden_states), attn.heads)
        k = _split_heads(attn.to_k(hidden_states), attn.heads)
        v = _split_heads(attn.to_v(hidden_states), attn.heads)
        return _project_out(attn, _merge_heads(self.kernel(q, k, v)))


class GenerativeSelfAttention:
    """Generative UNet attn1: queries from its own tokens, keys/values from ``[own; reference]``.

    With ``context.upstream_equivalent`` the queries run over all 2n tokens and the first half is kept, as upstream
    does; it exists only to measure what the shortcut saves.
    """

    def __init__(self, name: str, context: AttentionContext, kernel: AttentionKernel = DEFAULT_KERNEL):
        self.name = name
        self.context = context
        self.kernel = kernel

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, reference_features=None, **kwargs
    ):
        _check_plain(attn)
        # A call argument rather than context state, so that gradient checkpointing, which re-runs this layer during
        # backward after ``predict_noise`` has returned, still finds them.
        if reference_features is None or self.name not in reference_features:
            raise RuntimeError(f"no reference features for layer {self.name}; compute them first")
        reference = reference_features[self.name].to(hidden_states.dtype)
        if reference.shape[0] != hidden_states.shape[0]:
            raise ValueError(
                f"reference features for {self.name} have batch {reference.shape[0]}, "
                f"the generative input has {hidden_states.shape[0]}"
            )
        tokens = hidden_states.shape[1]
        joint = torch.cat([hidden_states, reference], dim=1)
        query_source = joint if self.context.upstream_equivalent else hidden_states
        q = _split_heads(attn.to_q(query_source), attn.heads)
        k = _split_heads(attn.to_k(joint), attn.heads)
        v = _split_heads(attn.to_v(joint), attn.heads)
        capture = self.context.capture
        if capture is not None and (self.context.capture_layers is None or self.name in self.context.capture_layers):
            capture[self.name] = (q[:, :, :tokens], k[:, :, tokens:])
        return _project_out(attn, _merge_heads(self.kernel(q, k, v)[:, :, :tokens]))


class VaeSelfAttention:
    """The VAE mid-block attention (group norm, one head, residual) as diffusers computes it, with a given kernel.

    Only export installs it (the model keeps diffusers' own processor): a query-chunked kernel keeps the score
    tensor of a large image under TensorRT's element limit. Input and output are ``(B, C, H, W)``.
    """

    def __init__(self, kernel: AttentionKernel = DEFAULT_KERNEL):
        self.kernel = kernel

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        batch, channels, height, width = hidden_states.shape
        hidden_states = hidden_states.view(batch, channels, height * width).transpose(1, 2)
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        q = _split_heads(attn.to_q(hidden_states), attn.heads)
        k = _split_heads(attn.to_k(hidden_states), attn.heads)
        v = _split_heads(attn.to_v(hidden_states), attn.heads)
        hidden_states = _project_out(attn, _merge_heads(self.kernel(q, k, v)))
        hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channels, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


_EXECUTION_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_attention_names(unet) -> list[str]:
    """Names of a UNet's transformer self-attention layers (attn1), in execution order (down, mid, up)."""
    names = [name for name, module in unet.named_modules() if name.endswith(".attn1") and hasattr(module, "processor")]
    return sorted(names, key=lambda name: _EXECUTION_ORDER[name.split(".")[0]])  # stable within each part


def install_processors(
    unet, context: AttentionContext, role: str, kernels: Mapping[str, AttentionKernel] | None = None
) -> None:
    """Give every self-attention layer of ``unet`` its Leffa processor; ``role`` is ``"reference"`` or ``"generative"``.

    ``kernels`` maps layer names to attention kernels; a layer not in it gets ``DEFAULT_KERNEL``. Cross-attention
    must already be gone (``leffa.model.remove_cross_attention``): any other attention layer is an error.
    """
    self_attention = {"reference": ReferenceSelfAttention, "generative": GenerativeSelfAttention}[role]
    kernels = kernels or {}
    processors = {}
    for key in unet.attn_processors:
        layer = key.removesuffix(".processor")
        if not layer.endswith(".attn1"):
            raise ValueError(f"unexpected attention layer {layer}")
        processors[key] = self_attention(layer, context, kernels.get(layer, DEFAULT_KERNEL))
    unet.set_attn_processor(processors)


def install_vae_attention(vae, kernel: AttentionKernel) -> None:
    """Give the VAE's attention layers (mid block) ``VaeSelfAttention`` with ``kernel``; a VAE without any is left."""
    processors = {key: VaeSelfAttention(kernel) for key in vae.attn_processors}
    if processors:
        vae.set_attn_processor(processors)
