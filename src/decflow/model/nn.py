"""Networks: a stacked autoencoder and the clustering layer."""

from collections.abc import Sequence

import torch
from torch import nn

from decflow.model.losses import soft_assignment


def _mlp(widths: Sequence[int], final_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2 or final_activation:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Autoencoder(nn.Module):
    """Encoder d-h1-...-e (ReLU, linear bottleneck) with a mirrored decoder.

    ``input_dropout`` corrupts the input during training only (denoising autoencoder).
    """

    def __init__(self, n_features: int, hidden: Sequence[int], n_components: int,
                 input_dropout: float = 0.0):
        super().__init__()
        widths = [n_features, *hidden, n_components]
        self.encoder = _mlp(widths, final_activation=False)
        self.decoder = _mlp(widths[::-1], final_activation=False)
        self.corrupt = nn.Dropout(input_dropout)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(n, d) -> (n, n_components)."""
        return self.encoder(x)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(n, d) -> (embedding (n, n_components), reconstruction (n, d))."""
        z = self.encoder(self.corrupt(x))
        return z, self.decoder(z)


class ClusteringLayer(nn.Module):
    """Trainable centroids; forward gives the soft assignment q of shape (n, k)."""

    def __init__(self, centers: torch.Tensor, alpha: float = 1.0):
        super().__init__()
        self.alpha = alpha
        self.centers = nn.Parameter(centers.clone().float())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return soft_assignment(z, self.centers, self.alpha)
