"""Placeholder torch-ops solver: plain substitution, row by row (to be replaced)."""

import torch
import torch.nn.functional as F


def solve_depthwise(y, kernel):
    P, H, W = y.shape
    Ck, kh, kw = kernel.shape
    k = kernel.repeat(P // Ck, 1, 1)
    x = torch.zeros(P, H + kh - 1, W + kw - 1, dtype=y.dtype, device=y.device)
    anchor = k[:, -1, -1]
    for i in range(H):
        for j in range(W):
            patch = x[:, i : i + kh, j : j + kw]
            s = (patch * k).sum((1, 2))
            x[:, i + kh - 1, j + kw - 1] = (y[:, i, j] - s) / anchor
    return x[:, kh - 1 :, kw - 1 :].contiguous()


def solve_mixing(y, kernel):
    B, C, H, W = y.shape
    _, _, kh, kw = kernel.shape
    x = torch.zeros(B, C, H + kh - 1, W + kw - 1, dtype=y.dtype, device=y.device)
    for i in range(H):
        for j in range(W):
            for c in range(C):
                patch = x[:, :, i : i + kh, j : j + kw]
                s = (patch * kernel[c]).sum((1, 2, 3))
                x[:, c, i + kh - 1, j + kw - 1] = (y[:, c, i, j] - s) / kernel[c, c, -1, -1]
    return x[:, :, kh - 1 :, kw - 1 :].contiguous()
