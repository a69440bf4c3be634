"""Attention processors that join the two UNets, keyed by layer name.

Leffa concatenates the reference UNet's normed self-attention inputs to the generative UNet's own tokens in every
self-attention layer (attn1). Upstream runs attention over all 2n tokens and keeps the first half; only the queries of
the generative tokens matter, so we take queries from the own tokens and keys/values from ``[own; reference]``: the
same numbers at half the cost. Cross-attention (attn2) has no text to attend to and, as upstream, returns its input.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

ReferenceFeatures = dict[str, torch.Tensor]
"""Normed attn1 inputs of the reference UNet, ``{layer name: (B, n, d)}``; layer names are shared by both UNets."""


@dataclass
class AttentionContext:
    """State shared by the processors of one model for one forward pass.

    ``features`` are read by the generative processors; ``recorded`` is filled by the reference processors;
    ``capture`` (when not ``None``) receives each generative layer's queries and reference keys for the Leffa loss.
    """

    features: ReferenceFeatures | None = None
    recorded: ReferenceFeatures = field(default_factory=dict)
    capture: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None
    capture_layers: frozenset[str] | None = None
    upstream_equivalent: bool = False
    query_slice: int | None = None


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    batch, tokens, dim = x.shape
    return x.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    batch, heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def sliced_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, queries: int | None) -> torch.Tensor:
    """``scaled_dot_product_attention`` over slices of ``queries`` queries: q (B, h, n, d), k/v (B, h, m, d).

    Softmax runs over the keys, so each query's row is independent and slicing the queries changes no number; a
    kernel that materialises the (n, m) scores then holds ``queries x m`` of them at a time.
    """
    if queries is None or q.shape[2] <= queries:
        return F.scaled_dot_product_attention(q, k, v)
    return torch.cat([F.scaled_dot_product_attention(part, k, v) for part in q.split(queries, dim=2)], dim=2)


def _project_out(attn, hidden_states: torch.Tensor) -> torch.Tensor:
    hidden_states = attn.to_out[0](hidden_states)
    return attn.to_out[1](hidden_states)


def _check_plain(attn) -> None:
    if attn.group_norm is not None or attn.spatial_norm is not None or attn.norm_q is not None:
        raise ValueError("Leffa attention expects plain transformer-block self-attention layers")


class SkipCrossAttention:
    """Upstream's cross-attention replacement: returns its (normed) input, so the block adds ``norm2(h)`` to ``h``."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        return hidden_states


class ReferenceSelfAttention:
    """Reference UNet attn1: plain self-attention that records its normed input tokens under its layer name."""

    def __init__(self, name: str, context: AttentionContext):
        self.name = name
        self.context = context

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, **kwargs):
        _check_plain(attn)
        self.context.recorded[self.name] = hidden_states
        q = _split_heads(attn.to_q(hidden_states), attn.heads)
        k = _split_heads(attn.to_k(hidden_states), attn.heads)
        v = _split_heads(attn.to_v(hidden_states), attn.heads)
        return _project_out(attn, _merge_heads(self.attend(q, k, v)))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention kernel (query-sliced when ``context.query_slice`` is set); exporters override it."""
        return sliced_attention(q, k, v, self.context.query_slice)


class GenerativeSelfAttention:
    """Generative UNet attn1: queries from its own tokens, keys/values from ``[own; reference]``.

    With ``context.upstream_equivalent`` the queries run over all 2n tokens and the first half is kept, as upstream
    does; it exists only to measure what the shortcut saves.
    """

    def __init__(self, name: str, context: AttentionContext):
        self.name = name
        self.context = context

    def __call__(
        self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, reference_features=None, **kwargs
    ):
        _check_plain(attn)
        # Passed as a call argument so that gradient checkpointing, which re-runs this layer during backward after
        # ``predict_noise`` has returned, still finds them; the context is the fallback for direct callers.
        features = reference_features if reference_features is not None else self.context.features
        if features is None or self.name not in features:
            raise RuntimeError(f"no reference features for layer {self.name}; compute them first")
        reference = features[self.name].to(hidden_states.dtype)
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
        return _project_out(attn, _merge_heads(self.attend(q, k, v)[:, :, :tokens]))

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attention kernel (query-sliced when ``context.query_slice`` is set); exporters override it."""
        return sliced_attention(q, k, v, self.context.query_slice)


_EXECUTION_ORDER = {"down_blocks": 0, "mid_block": 1, "up_blocks": 2}


def self_attention_names(unet) -> list[str]:
    """Names of a UNet's transformer self-attention layers (attn1), in execution order (down, mid, up)."""
    names = [name for name, module in unet.named_modules() if name.endswith(".attn1") and hasattr(module, "processor")]
    return sorted(names, key=lambda name: _EXECUTION_ORDER[name.split(".")[0]])  # stable within each part


def install_processors(unet, context: AttentionContext, role: str) -> None:
    """Give every attention layer of ``unet`` its Leffa processor; ``role`` is ``"reference"`` or ``"generative"``."""
    self_attention = {"reference": ReferenceSelfAttention, "generative": GenerativeSelfAttention}[role]
    processors = {}
    for key in unet.attn_processors:
        layer = key.removesuffix(".processor")
        if layer.endswith(".attn1"):
            processors[key] = self_attention(layer, context)
        elif layer.endswith(".attn2"):
            processors[key] = SkipCrossAttention()
        else:
            raise ValueError(f"unexpected attention layer {layer}")
    unet.set_attn_processor(processors)
