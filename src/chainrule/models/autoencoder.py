import torch
from torch import nn


class ConvAutoencoder(nn.Module):
    """Strided-conv encoder to a `latent_dim` code, mirrored transposed-conv decoder.

    The output has the input's shape; spatial sizes must be divisible by 2**len(channels).
    """

    def __init__(self, input_shape: tuple[int, int, int], channels: tuple[int, ...], latent_dim: int):
        super().__init__()
        c, h, w = input_shape
        factor = 2 ** len(channels)
        if h % factor or w % factor:
            raise ValueError(f"image size {h}x{w} must be divisible by {factor} for {len(channels)} conv stages")
        enc: list[nn.Module] = []
        c_in = c
        for c_out in channels:
            enc += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        self.code_shape = (c_in, h // factor, w // factor)
        code_features = c_in * (h // factor) * (w // factor)
        self.encoder = nn.Sequential(*enc, nn.Flatten(), nn.Linear(code_features, latent_dim))
        dec: list[nn.Module] = [nn.Linear(latent_dim, code_features), nn.Unflatten(1, self.code_shape)]
        for c_out in list(reversed(channels[:-1])) + [c]:
            dec += [nn.ReLU(), nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1)]
            c_in = c_out
        self.decoder = nn.Sequential(*dec)

    def sharding_units(self) -> list[nn.Module]:
        """FSDP shards encoder and decoder as two units (chainrule.models.sharding)."""
        return [self.encoder, self.decoder]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))
