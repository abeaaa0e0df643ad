"""The parts of a T5 encoder, computed exactly as transformers' ``T5EncoderModel`` computes them.

* :class:`T5LayerNorm`: RMS norm, no mean, no bias; the variance in fp32 whatever the dtype.
* :func:`relative_position_bucket`: T5's bucketing of key - query distances (exact for small
  distances, logarithmic up to ``max_distance``); one bias table (buckets x heads) lives in the
  first layer and its bias is added to the attention scores of every layer.
* :class:`T5SelfAttention`: no biases, no score scaling, a separate ``kv_dim`` per head.
* :class:`T5FeedForward`: ReLU (T5 v1.0) or gated GELU with the tanh approximation (v1.1).
* :class:`T5Layer`: pre-norm residual blocks; in fp16 the residual stream is clamped below the
  largest finite value as transformers' ``T5Block`` does (no host-device synchronisation).
* :class:`T5LMHead`: what this project adds for masked LM (the pooled embedding is
  :class:`fairseq_ext.models.towers.Pooler`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fairseq_ext.models.towers import Pooler
from fairseq_ext.runtime.fast_paths import gather_positions

FEED_FORWARD_PROJ = ("relu", "gated-gelu")


class T5LayerNorm(nn.Module):
    """``weight * x / sqrt(mean(x^2) + eps)``, statistics in fp32, the result in the weight's dtype."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.to(torch.float32).pow(2).mean(-1, keepdim=True)
        x = x * torch.rsqrt(variance + self.eps)
        if self.weight.dtype in (torch.float16, torch.bfloat16):
            x = x.to(self.weight.dtype)
        return self.weight * x


def relative_position_bucket(relative_position: torch.Tensor, bidirectional: bool = True, num_buckets: int = 32,
                             max_distance: int = 128) -> torch.Tensor:
    """Bucket of each relative position (key - query), as Mesh TensorFlow and transformers compute it.

    >>> relative_position_bucket(torch.tensor([-200, -3, 0, 3, 8, 200])).tolist()
    [15, 3, 0, 19, 24, 31]
    """
    buckets = 0
    if bidirectional:
        num_buckets //= 2
        buckets += (relative_position > 0).to(torch.long) * num_buckets
        relative_position = torch.abs(relative_position)
    else:
        relative_position = -torch.min(relative_position, torch.zeros_like(relative_position))
    max_exact = num_buckets // 2
    is_small = relative_position < max_exact
    if_large = max_exact + (torch.log(relative_position.float() / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact)).to(torch.long)
    if_large = torch.min(if_large, torch.full_like(if_large, num_buckets - 1))
    return buckets + torch.where(is_small, relative_position, if_large)


def clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    """transformers' fp16 guard: clamp to the largest finite value (1000 below it once an inf appeared)."""
    if x.dtype != torch.float16:
        return x
    big = torch.finfo(torch.float16).max
    limit = torch.where(torch.isinf(x).any(), big - 1000, big)  # stays on the device: no sync
    return torch.clamp(x, min=-limit, max=limit)


class T5SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int, dropout: float, num_buckets: int = 0,
                 max_distance: int = 128):
        super().__init__()
        self.heads, self.kv_dim, self.dropout = heads, kv_dim, dropout
        inner = heads * kv_dim
        self.q_proj = nn.Linear(dim, inner, bias=False)
        self.k_proj = nn.Linear(dim, inner, bias=False)
        self.v_proj = nn.Linear(dim, inner, bias=False)
        self.out_proj = nn.Linear(inner, dim, bias=False)
        self.num_buckets, self.max_distance = num_buckets, max_distance
        if num_buckets:  # the first layer only
            self.relative_attention_bias = nn.Embedding(num_buckets, heads)

    def position_bias(self, length: int) -> torch.Tensor:
        """The relative position bias of a sequence of ``length``: (1, H, T, T)."""
        pos = torch.arange(length, dtype=torch.long, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_bucket(pos[None, :] - pos[:, None], True, self.num_buckets, self.max_distance)
        return self.relative_attention_bias(buckets).permute(2, 0, 1).unsqueeze(0)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        """x: (B, T, C); attn_bias: (B, H, T, T), position bias plus padding mask."""
        B, T, _ = x.shape
        q, k, v = (proj(x).view(B, T, self.heads, self.kv_dim).transpose(1, 2)  # (B, H, T, d_kv)
                   for proj in (self.q_proj, self.k_proj, self.v_proj))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, scale=1.0,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.out_proj(out.transpose(1, 2).reshape(B, T, self.heads * self.kv_dim))


class T5FeedForward(nn.Module):
    def __init__(self, dim: int, ffn_dim: int, kind: str, dropout: float):
        super().__init__()
        self.gated = kind == "gated-gelu"
        if self.gated:
            self.wi_0 = nn.Linear(dim, ffn_dim, bias=False)
            self.wi_1 = nn.Linear(dim, ffn_dim, bias=False)
        else:
            self.wi = nn.Linear(dim, ffn_dim, bias=False)
        self.wo = nn.Linear(ffn_dim, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.gated:
            h = F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x)
        else:
            h = F.relu(self.wi(x))
        return self.wo(self.dropout(h))


class T5Layer(nn.Module):
    """Pre-norm self-attention and feed-forward blocks (transformers' ``T5Block`` of an encoder)."""

    def __init__(self, args, has_relative_bias: bool):
        super().__init__()
        d = args.encoder_embed_dim
        self.self_attn_layer_norm = T5LayerNorm(d, args.layer_norm_eps)
        self.self_attn = T5SelfAttention(d, args.encoder_attention_heads, args.kv_dim, args.dropout,
                                         args.relative_attention_num_buckets if has_relative_bias else 0,
                                         args.relative_attention_max_distance)
        self.ffn_layer_norm = T5LayerNorm(d, args.layer_norm_eps)
        self.ffn = T5FeedForward(d, args.encoder_ffn_embed_dim, args.feed_forward_proj, args.dropout)
        self.dropout = nn.Dropout(args.dropout)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor) -> torch.Tensor:
        x = clamp_fp16(x + self.dropout(self.self_attn(self.self_attn_layer_norm(x), attn_bias)))
        return clamp_fp16(x + self.dropout(self.ffn(self.ffn_layer_norm(x))))


class T5LMHead(nn.Module):
    """Masked-LM head: dense + GELU + RMS norm, then the token embeddings (tied) scaled by d^-1/2, plus a bias.

    RoBERTa's head with T5's norm; the d^-1/2 factor is T5's own for a projection tied to its
    N(0, 1) embeddings (``scale_decoder_outputs``), which keeps the first logits near unit scale.
    """

    def __init__(self, dim: int, weight: nn.Parameter, eps: float):
        super().__init__()
        self.dense = nn.Linear(dim, dim)
        self.layer_norm = T5LayerNorm(dim, eps)
        self.weight = weight  # (V, C), the encoder's embed_tokens.weight
        self.bias = nn.Parameter(torch.zeros(weight.size(0)))
        self.scale = dim ** -0.5

    def forward(self, features: torch.Tensor, masked_tokens: torch.Tensor | None = None) -> torch.Tensor:
        if masked_tokens is not None and masked_tokens.dtype == torch.bool:
            features = features[masked_tokens]  # (N, C)
        elif masked_tokens is not None:  # flat positions into B*T, made on the host: the device is not waited for
            features = gather_positions(features, masked_tokens)  # (N, C)
        x = self.layer_norm(F.gelu(self.dense(features), approximate="tanh"))
        return F.linear(x * self.scale, self.weight) + self.bias


@torch.no_grad()
def init_t5_weights(module: nn.Module, args) -> None:
    """transformers' ``T5PreTrainedModel._init_weights`` with factor 1.0 (this project's head and pooler:
    N(0, d^-1/2), biases zero)."""
    d, dkv, heads, ffn = args.encoder_embed_dim, args.kv_dim, args.encoder_attention_heads, args.encoder_ffn_embed_dim
    for m in module.modules():
        if isinstance(m, T5LayerNorm):
            m.weight.fill_(1.0)
        elif isinstance(m, T5SelfAttention):
            m.q_proj.weight.normal_(0.0, (d * dkv) ** -0.5)
            m.k_proj.weight.normal_(0.0, d ** -0.5)
            m.v_proj.weight.normal_(0.0, d ** -0.5)
            m.out_proj.weight.normal_(0.0, (heads * dkv) ** -0.5)
            if m.num_buckets:
                m.relative_attention_bias.weight.normal_(0.0, d ** -0.5)
        elif isinstance(m, T5FeedForward):
            for w in ((m.wi_0, m.wi_1) if m.gated else (m.wi,)):
                w.weight.normal_(0.0, d ** -0.5)
            m.wo.weight.normal_(0.0, ffn ** -0.5)
        elif isinstance(m, T5LMHead):
            m.dense.weight.normal_(0.0, d ** -0.5)
            m.dense.bias.zero_()
            m.bias.zero_()
        elif isinstance(m, Pooler) and m.dense is not None:
            m.dense.weight.normal_(0.0, d ** -0.5)
