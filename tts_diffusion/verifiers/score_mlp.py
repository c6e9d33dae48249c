"""The MLP head that ImageReward and the LAION aesthetic predictor share: an embedding of
width `width` -> 1024 -> 128 -> 64 -> 16 -> 1, with dropout between the first layers and,
in the aesthetic predictor's ReLU variant, ReLUs after each hidden layer.

Module indices follow upstream (`layers.{0,2,4,6,7}` plain, `layers.{0,3,6,9,11}` with ReLU),
so upstream state dicts load as they are. The head runs in float32 whatever dtype the module
was cast to, as upstream does (`features.float()` before the MLP)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

LINEAR_IDX = (0, 2, 4, 6, 7)
RELU_IDX = (0, 3, 6, 9, 11)


class ScoreMLP(nn.Module):
    """[B, width] embeddings -> [B] scores (float32)."""

    def __init__(self, width: int = 768, relu: bool = False):
        super().__init__()
        self.relu = relu
        act = (lambda: [nn.ReLU()]) if relu else (lambda: [])
        self.layers = nn.Sequential(
            nn.Linear(width, 1024), *act(), nn.Dropout(0.2),
            nn.Linear(1024, 128), *act(), nn.Dropout(0.2),
            nn.Linear(128, 64), *act(), nn.Dropout(0.1),
            nn.Linear(64, 16), *act(),
            nn.Linear(16, 1),
        )

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x = emb.float()
        for m in self.layers:
            if isinstance(m, nn.Linear):
                x = F.linear(x, m.weight.float(), m.bias.float())
            elif isinstance(m, nn.ReLU):
                x = F.relu(x)
        return x[:, 0]
