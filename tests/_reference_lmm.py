"""An independent re-implementation of the reference network, with the reference's module names.

Written from method.md with the reference's explicit bmm/softmax attention, so that a state dict in the
released `.pth` layout loads into it strictly; tests compare its outputs with the converted LatentMappingModel.
"""

import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

SHARED_DIR = Path(os.environ.get("GMS_SHARED_DIR", Path(__file__).resolve().parents[2] / "shared"))


def reference_key_shapes() -> dict:
    """The released `.pth` state dict's keys and shapes (`design/lmm_state_dict.json` beside the checkout)."""
    path = SHARED_DIR / "design" / "lmm_state_dict.json"
    if not path.is_file():
        pytest.skip(f"the reference key list is not available at {path} (set GMS_SHARED_DIR)")
    return json.loads(path.read_text())


class RefResBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.act1 = nn.PReLU()
        self.act2 = nn.PReLU()
        self.conv1 = nn.Sequential(nn.GroupNorm(16, cin, eps=1e-6), self.act1, nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = nn.Sequential(nn.GroupNorm(16, cout, eps=1e-6), self.act2, nn.Conv2d(cout, cout, 3, padding=1))
        if cin != cout:
            self.skip_connection = nn.Conv2d(cin, cout, 1, bias=False)
        else:
            self.skip_connection = nn.Identity()

    def forward(self, x):
        return self.skip_connection(x) + self.conv2(self.conv1(x))


class RefAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(16, c, eps=1e-6)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        b, c, hh, ww = q.shape
        q = q.reshape(b, c, hh * ww).permute(0, 2, 1)  # b, hw, c
        k = k.reshape(b, c, hh * ww)  # b, c, hw
        w = torch.bmm(q, k) * (int(c) ** -0.5)  # b, hw_q, hw_k
        w = F.softmax(w, dim=2)
        v = v.reshape(b, c, hh * ww)
        out = torch.bmm(v, w.permute(0, 2, 1)).reshape(b, c, hh, ww)
        return x + self.proj_out(out)


class RefBlock(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        self.resblock = RefResBlock(cin, cout)
        self.attention = RefAttention(cout)

    def forward(self, x):
        return self.attention(self.resblock(x))


def _head(c):
    return nn.Sequential(nn.GroupNorm(16, c, eps=1e-6), nn.SiLU(), nn.Conv2d(c, 4, 3, padding=1, bias=False))


class ReferenceLMM(nn.Module):
    def __init__(self):
        super().__init__()
        self.input_blocks = nn.Conv2d(4, 32, 3, padding=1)
        self.conv1_0, self.conv2_0, self.conv3_0, self.conv4_0 = RefBlock(32, 32), RefBlock(32, 64), RefBlock(64, 128), RefBlock(128, 128)
        self.conv3_1, self.conv2_2 = RefBlock(256, 128), RefBlock(192, 64)
        self.conv1_3, self.conv0_4 = RefBlock(96, 32), RefBlock(64, 32)
        self.convds3, self.convds2, self.convds1, self.convds0 = _head(128), _head(64), _head(32), _head(32)

    def forward(self, z):
        x0 = self.input_blocks(z)
        x1 = self.conv1_0(x0)
        x2 = self.conv2_0(x1)
        x3 = self.conv3_0(x2)
        x4 = self.conv4_0(x3)
        d3 = self.conv3_1(torch.cat([x3, x4], 1))
        d2 = self.conv2_2(torch.cat([x2, d3], 1))
        d1 = self.conv1_3(torch.cat([x1, d2], 1))
        d0 = self.conv0_4(torch.cat([x0, d1], 1))
        return {"level3": self.convds3(d3), "level2": self.convds2(d2), "level1": self.convds1(d1), "out": self.convds0(d0)}


def random_reference_state_dict(shapes: dict, seed: int = 0) -> dict:
    """Random weights for every key of lmm_state_dict.json; the doubly-registered PReLU keys share values."""
    gen = torch.Generator().manual_seed(seed)
    state = {k: torch.randn(s, generator=gen) * 0.1 for k, s in shapes.items()}
    for key in state:
        for dup, orig in ((".conv1.1.", ".act1."), (".conv2.1.", ".act2.")):
            if dup in key:
                state[key] = state[key.replace(dup, orig)].clone()
    return state
