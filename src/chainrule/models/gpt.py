"""A GPT-2 style decoder-only transformer (pre-norm, causal self-attention through SDPA, tied embeddings)."""

import math

import torch
from torch import nn
from torch.nn import functional as F

from chainrule.models.sharding import COLWISE, ROWWISE


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. Queries, keys and values have projections of their own, so that
    tensor parallelism can give each rank whole heads (a column-parallel split of a fused qkv projection
    would cut across q, k and v)."""

    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        if n_embd % n_head:
            raise ValueError(f"n_embd={n_embd} must be divisible by n_head={n_head}")
        self.head_dim = n_embd // n_head
        self.q = nn.Linear(n_embd, n_embd, bias=bias)
        self.k = nn.Linear(n_embd, n_embd, bias=bias)
        self.v = nn.Linear(n_embd, n_embd, bias=bias)
        self.proj = nn.Linear(n_embd, n_embd, bias=bias)
        self.dropout = dropout
        self.register_load_state_dict_pre_hook(_split_fused_qkv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        # (B, T, heads x head_dim) -> (B, heads, T, head_dim). The head count is read from the projection's
        # output: under tensor parallelism a rank holds only its share of the heads.
        q, k, v = (proj(x).view(B, T, -1, self.head_dim).transpose(1, 2) for proj in (self.q, self.k, self.v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, -1))


def _split_fused_qkv(module: nn.Module, state_dict: dict, prefix: str, *args: object) -> None:
    """Checkpoints written before q, k and v had projections of their own hold one fused `qkv` projection
    (output features: all queries, then keys, then values); they load as its three thirds."""
    for kind in ("weight", "bias"):
        fused = state_dict.pop(f"{prefix}qkv.{kind}", None)
        if fused is not None:
            for name, part in zip(("q", "k", "v"), fused.chunk(3)):
                state_dict[f"{prefix}{name}.{kind}"] = part


class TransformerBlock(nn.Module):
    def __init__(self, n_embd: int, n_head: int, dropout: float, bias: bool):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, bias)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, 4 * n_embd, bias=bias), nn.GELU(), nn.Linear(4 * n_embd, n_embd, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Maps token ids (B, T) to next-token logits (B, T, vocab). `input_shape` = (block_size,) and
    `num_outputs` = vocabulary size come from the data; GPT-2 small is n_layer=12, n_head=12, n_embd=768."""

    def __init__(
        self,
        input_shape: tuple[int],
        num_outputs: int,
        n_layer: int,
        n_head: int,
        n_embd: int,
        dropout: float,
        bias: bool,
    ):
        super().__init__()
        (self.block_size,) = input_shape
        self.n_layer, self.n_head, self.n_embd = n_layer, n_head, n_embd
        self.token_embedding = nn.Embedding(num_outputs, n_embd)
        self.position_embedding = nn.Embedding(self.block_size, n_embd)
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(TransformerBlock(n_embd, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.lm_head = nn.Linear(n_embd, num_outputs, bias=False)
        self.lm_head.weight = self.token_embedding.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream's variance
        # does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def sharding_units(self) -> list[nn.Module]:
        """FSDP shards each transformer block on its own (chainrule.models.sharding); the embeddings, tied to
        the output head, stay together in the root unit."""
        return list(self.blocks)

    def tensor_parallel_plan(self) -> dict[str, str]:
        """Each block's attention and MLP split over the tensor-parallel ranks: q, k, v and the MLP's first
        layer by output features (whole heads per rank), the output projections by input features."""
        plan = {}
        for i in range(len(self.blocks)):
            plan |= {f"blocks.{i}.attn.{name}": COLWISE for name in ("q", "k", "v")}
            plan |= {f"blocks.{i}.attn.proj": ROWWISE, f"blocks.{i}.mlp.0": COLWISE,
                     f"blocks.{i}.mlp.2": ROWWISE}
        return plan

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        positions = torch.arange(T, device=idx.device)
        x = self.dropout(self.token_embedding(idx) + self.position_embedding(positions))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))

    def flops_per_token(self, seq_len: int | None = None) -> float:
        """Training FLOPs per token (forward + backward), PaLM appendix B: 6N + 12 L H Q T, with N the
        non-embedding parameter count (the embedding lookup is not a matmul)."""
        T = seq_len or self.block_size
        n_params = sum(p.numel() for p in self.parameters()) - self.position_embedding.weight.numel()
        head_dim = self.n_embd // self.n_head
        return 6 * n_params + 12 * self.n_layer * self.n_head * head_dim * T
