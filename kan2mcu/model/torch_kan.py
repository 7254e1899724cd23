"""kan2mcu's own KAN module for PyTorch, with efficient-kan semantics and state-dict layout.

Keys per layer ``layers.N``: ``base_weight [O,I]``, ``spline_weight [O,I,G+k]``,
``spline_scaler [O,I]``, ``grid [I,G+2k+1]`` (a buffer). Output of a layer::

    y = silu(x) @ base_weight.T + B(x) @ (spline_weight * spline_scaler[..., None]).T
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class KANLinear(nn.Module):
    """One KAN layer: a SiLU base branch plus a B-spline branch on a uniform extended grid."""

    def __init__(self, in_features: int, out_features: int, grid_size: int = 5, spline_order: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.grid_size, self.spline_order = grid_size, spline_order
        h = (grid_range[1] - grid_range[0]) / grid_size
        knots = torch.arange(-spline_order, grid_size + spline_order + 1, dtype=torch.float32) * h + grid_range[0]
        self.register_buffer("grid", knots.expand(in_features, -1).contiguous())
        self.base_weight = nn.Parameter(torch.empty(out_features, in_features))
        self.spline_weight = nn.Parameter(torch.empty(out_features, in_features, grid_size + spline_order))
        self.spline_scaler = nn.Parameter(torch.empty(out_features, in_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.base_weight, a=math.sqrt(5))
        nn.init.normal_(self.spline_weight, std=0.1 / self.grid_size)
        nn.init.kaiming_uniform_(self.spline_scaler, a=math.sqrt(5))

    def b_splines(self, x: torch.Tensor) -> torch.Tensor:
        """Cox-de Boor basis values: [N, I] -> [N, I, G+k] (half-open intervals, zero outside)."""
        grid = self.grid
        x = x.unsqueeze(-1)
        bases = ((x >= grid[:, :-1]) & (x < grid[:, 1:])).to(x.dtype)
        for p in range(1, self.spline_order + 1):
            bases = ((x - grid[:, : -(p + 1)]) / (grid[:, p:-1] - grid[:, : -(p + 1)]) * bases[:, :, :-1]
                     + (grid[:, p + 1:] - x) / (grid[:, p + 1:] - grid[:, 1:-p]) * bases[:, :, 1:])
        return bases

    @property
    def scaled_spline_weight(self) -> torch.Tensor:
        return self.spline_weight * self.spline_scaler.unsqueeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.linear(F.silu(x), self.base_weight)
        spline = F.linear(self.b_splines(x).reshape(x.shape[0], -1),
                          self.scaled_spline_weight.reshape(self.out_features, -1))
        return base + spline

    @torch.no_grad()
    def update_grid(self, x: torch.Tensor, grid_eps: float = 0.02, margin: float = 0.01) -> None:
        """Move each input's knots toward the quantiles of ``x`` [N, I] and refit the spline branch.

        efficient-kan's algorithm. Per input, the ``G + 1`` grid points are
        ``grid_eps * uniform + (1 - grid_eps) * adaptive``: ``adaptive`` are ``G + 1`` evenly spaced
        order statistics of the samples (min and max included), ``uniform`` spans
        ``[min - margin, max + margin]`` in ``G`` equal steps; the grid is then extended by
        ``spline_order`` of those uniform steps on each side. Knots become non-uniform and differ
        per input (strictly increasing whenever ``grid_eps > 0``).

        The spline coefficients are refit by least squares (float64) so the spline branch computes,
        on the samples, the same function as before as closely as the new knots allow; the
        ``spline_scaler`` is divided out (unlike efficient-kan, which writes the fit into
        ``spline_weight`` as is), and the base branch is unchanged.
        """
        if x.dim() != 2 or x.shape[1] != self.in_features:
            raise ValueError(f"update_grid: x must be [N, {self.in_features}], got {tuple(x.shape)}")
        if not 0.0 <= grid_eps <= 1.0:
            raise ValueError(f"update_grid: grid_eps must be in [0, 1], got {grid_eps}")
        x = x.detach().to(device=self.grid.device, dtype=torch.float64)
        n_samples, k, g = x.shape[0], self.spline_order, self.grid_size
        if n_samples < 2:
            raise ValueError("update_grid: needs at least 2 samples")
        old_spline = torch.einsum("nim,oim->nio", self.b_splines(x),
                                  self.scaled_spline_weight.to(torch.float64))  # [N, I, O]

        x_sorted = torch.sort(x, dim=0).values
        picks = torch.linspace(0, n_samples - 1, g + 1, dtype=torch.float64).round().long()
        adaptive = x_sorted[picks]  # [G+1, I]
        step = (x_sorted[-1] - x_sorted[0] + 2 * margin) / g  # [I]
        uniform = torch.arange(g + 1, dtype=torch.float64)[:, None] * step + (x_sorted[0] - margin)
        inner = grid_eps * uniform + (1.0 - grid_eps) * adaptive
        left = inner[:1] - step * torch.arange(k, 0, -1, dtype=torch.float64)[:, None]
        right = inner[-1:] + step * torch.arange(1, k + 1, dtype=torch.float64)[:, None]
        new_grid = torch.cat([left, inner, right], dim=0).T.to(self.grid.dtype)  # [I, G+2k+1]
        if not bool(torch.all(new_grid[:, 1:] > new_grid[:, :-1])):
            raise ValueError("update_grid: the new knots are not strictly increasing "
                             "(samples too concentrated; use grid_eps > 0 and margin > 0)")
        self.grid.copy_(new_grid)

        basis = self.b_splines(x).permute(1, 0, 2)  # [I, N, M] on the new (stored) knots
        target = old_spline.permute(1, 0, 2)  # [I, N, O]
        fitted = torch.linalg.lstsq(basis, target).solution  # [I, M, O]
        coef = fitted.permute(2, 0, 1)  # [O, I, M]
        scaler = self.spline_scaler.to(torch.float64)[..., None]
        safe = torch.where(scaler != 0, scaler, torch.ones_like(scaler))
        weight = torch.where(scaler != 0, coef / safe, torch.zeros_like(coef))
        self.spline_weight.copy_(weight.to(self.spline_weight.dtype))


class KAN(nn.Module):
    """A stack of :class:`KANLinear` layers, e.g. widths ``[64, 16, 10]``."""

    def __init__(self, widths: list[int], grid_size: int = 5, spline_order: int = 3,
                 grid_range: tuple[float, float] = (-1.0, 1.0)) -> None:
        super().__init__()
        self.widths = list(widths)
        self.config = {"widths": list(widths), "grid_size": grid_size, "spline_order": spline_order,
                       "grid_range": [float(grid_range[0]), float(grid_range[1])]}
        self.layers = nn.ModuleList(
            KANLinear(i, o, grid_size, spline_order, grid_range) for i, o in zip(widths, widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x
