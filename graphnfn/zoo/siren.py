"""SIRENs fitted to images, many at once.

The network is the one of the INR-classification literature (DWSNets, NFN):
``nn.Sequential(Linear(2, 32), Sine(30), Linear(32, 32), Sine(30), Linear(32, 1))``,
1,185 parameters, mapping a pixel coordinate in [-1, 1]^2 to its value in
[-1, 1] (pixels x in [0, 1] are fitted as 2x - 1, as in NFN). Initialisation as
in the SIREN paper: first layer U(-1/fan_in, 1/fan_in), the others
U(-sqrt(6/fan_in)/w0, +sqrt(6/fan_in)/w0), biases PyTorch's default
U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (NFN's siren_utils does the same).

:func:`fit_sirens` fits B INRs in one batch with batched matmuls and a
per-INR Adam (every INR gets exactly the update it would get alone): the loss
is the sum over INRs of each INR's mean squared error. Every ``check_every``
steps, the INRs whose PSNR reached ``target_psnr`` are taken out of the batch
with the parameters that reached it, so the batch shrinks as INRs finish.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from graphnfn.execute import run_mlp
from graphnfn.modules import Sine

#: Layer widths of the literature SIREN: 2 -> 32 -> 32 -> 1.
SIREN_WIDTHS = (2, 32, 32, 1)


def make_siren(widths: Sequence[int] = SIREN_WIDTHS, w0: float = 30.0) -> nn.Sequential:
    """The SIREN as an ``nn.Sequential`` of Linear and :class:`graphnfn.Sine` (what the converters read).
    Its state_dict keys are ``0.weight, 0.bias, 2.weight, ...``."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(widths) - 2:
            layers.append(Sine(w0))
    return nn.Sequential(*layers)


def siren_keys(widths: Sequence[int] = SIREN_WIDTHS) -> list[str]:
    """State_dict keys of :func:`make_siren` in order: weight then bias per layer."""
    return [f"{2 * i}.{role}" for i in range(len(widths) - 1) for role in ("weight", "bias")]


def init_sirens(seeds: Sequence[int], widths: Sequence[int] = SIREN_WIDTHS, w0: float = 30.0,
                device: torch.device | str = "cpu") -> list[Tensor]:
    """SIREN initialisations, one per seed: tensors in :func:`siren_keys` order,
    weights [B, fan_out, fan_in], biases [B, fan_out]. The same seed always gives
    the same INR, whatever batch it sits in."""
    per_inr = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        tensors = []
        for i, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:])):
            bound = 1.0 / fan_in if i == 0 else math.sqrt(6.0 / fan_in) / w0
            tensors.append((torch.rand(fan_out, fan_in, generator=gen) * 2 - 1) * bound)
            tensors.append((torch.rand(fan_out, generator=gen) * 2 - 1) / math.sqrt(fan_in))
        per_inr.append(tensors)
    return [torch.stack(column).to(device) for column in zip(*per_inr)]


def permute_hidden(params: Sequence[Tensor], seeds: Sequence[int]) -> list[Tensor]:
    """SIRENs (tensors in :func:`siren_keys` order, batch first) with the hidden
    neurons of each INR reordered by a permutation drawn from its seed: the same
    functions, with an uninformative neuron order."""
    weights, biases = list(params[0::2]), list(params[1::2])
    for layer in range(len(weights) - 1):
        n = weights[layer].size(1)
        perm = torch.stack([torch.randperm(n, generator=torch.Generator().manual_seed(int(s) + layer)) for s in seeds])
        perm = perm.to(weights[layer].device)
        weights[layer] = torch.take_along_dim(weights[layer], perm[:, :, None], 1)
        biases[layer] = torch.take_along_dim(biases[layer], perm, 1)
        weights[layer + 1] = torch.take_along_dim(weights[layer + 1], perm[:, None, :], 2)
    return [t for pair in zip(weights, biases) for t in pair]


def coordinate_grid(resolution: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """Pixel coordinates [R*R, 2] in [-1, 1], row-major, (row, column) order (as NFN's get_mgrid)."""
    axis = torch.linspace(-1.0, 1.0, resolution, device=device, dtype=dtype)
    return torch.stack(torch.meshgrid(axis, axis, indexing="ij"), dim=-1).reshape(-1, 2)


def siren_layers(params: Sequence[Tensor], coords: Tensor, w0: float) -> list[Tensor]:
    """Batched SIREN, every layer: params in :func:`siren_keys` order (leading batch dim B),
    coords [P, 2] -> [B, P, n_l] per layer (hidden layers after the sine, outputs last)."""
    def sine(h: Tensor) -> Tensor:
        return torch.sin(w0 * h)

    return run_mlp(coords, params[0::2], params[1::2], [sine] * (len(params) // 2 - 1))


def siren_forward(params: Sequence[Tensor], coords: Tensor, w0: float) -> Tensor:
    """Batched SIREN: params in :func:`siren_keys` order (leading batch dim B),
    coords [P, 2] -> outputs [B, P, out]."""
    return siren_layers(params, coords, w0)[-1]


def render(params: Sequence[Tensor], resolution: int, w0: float = 30.0) -> Tensor:
    """Images [B, 1, R, R] in pixel units ([0, 1] for a perfect fit) drawn by a batch of SIRENs."""
    coords = coordinate_grid(resolution, params[0].device).to(params[0].dtype)
    out = siren_forward(params, coords, w0)
    return ((out + 1) / 2).transpose(1, 2).reshape(-1, out.size(-1), resolution, resolution)


def psnr_from_mse(mse: Tensor) -> Tensor:
    """PSNR in dB of a fit in the [-1, 1] convention, measured on the [0, 1] pixel scale."""
    return 10 * torch.log10(4.0 / mse.clamp_min(1e-20))


def fit_targets(images: Tensor, resolution: int | None) -> Tensor:
    """Images [B, 1, H, W] in [0, 1] -> fitting targets [B, R*R] in [-1, 1] (bilinear resize to R if given)."""
    if images.size(1) != 1:
        raise ValueError(f"SIREN zoo fits grey images [B, 1, H, W]; got {tuple(images.shape)}")
    if resolution is not None and resolution != images.size(-1):
        images = F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=True)
    return (images * 2 - 1).flatten(1)


@dataclass(frozen=True)
class SirenFit:
    """How the INRs are fitted. ``target_psnr``: an INR stops when it reaches
    this PSNR (dB, [0, 1] pixel scale); ``None`` runs every INR for ``steps``."""

    steps: int = 1000
    lr: float = 1e-3
    w0: float = 30.0
    target_psnr: float | None = None
    check_every: int = 10
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8


class SirenFitResult(NamedTuple):
    params: list[Tensor]  # siren_keys order, [B, ...]
    psnr: Tensor  # [B] dB of the returned parameters
    steps: Tensor  # [B] Adam steps each INR took


def fit_sirens(init: Sequence[Tensor], targets: Tensor, fit: SirenFit, progress: bool = False) -> SirenFitResult:
    """Fit B SIRENs at once.

    Args:
        init: initial parameters in :func:`siren_keys` order, leading dim B.
        targets: [B, R*R] pixel values in [-1, 1] on :func:`coordinate_grid` (R).
        fit: the optimisation settings.
    Sets ``torch.set_flush_denormal(True)`` (process-wide; denormals below
    ~1e-38 become 0, which no fit needs).
    Returns:
        the fitted parameters (same layout as ``init``), each INR's PSNR and step count.
    """
    # Adam's moments of well-fitted INRs sink into the denormal range, where CPU arithmetic is ~20x slower
    torch.set_flush_denormal(True)
    n, device = targets.size(0), targets.device
    resolution = math.isqrt(targets.size(1))
    coords = coordinate_grid(resolution, device).to(targets.dtype)
    params = [p.detach().clone().to(device) for p in init]
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    out_params = [torch.empty_like(p) for p in params]
    out_psnr = torch.empty(n, device=device, dtype=targets.dtype)
    out_steps = torch.empty(n, dtype=torch.long, device=device)
    active = torch.arange(n, device=device)  # original index of each row still being fitted
    beta1, beta2 = fit.betas
    bar = tqdm(total=n, desc="INRs fitted", unit="inr", leave=False, disable=not progress)

    def finish(done: Tensor, psnr: Tensor) -> None:
        rows = active[done]
        for out, p in zip(out_params, params):
            out[rows] = p.detach()[done]
        out_psnr[rows], out_steps[rows] = psnr[done], step
        bar.update(int(done.sum()))

    for step in range(fit.steps + 1):
        last = step == fit.steps
        for p in params:
            p.requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            mse = (siren_forward(params, coords, fit.w0).squeeze(-1) - targets).pow(2).mean(1)
        if last:
            finish(torch.ones_like(mse, dtype=torch.bool), psnr_from_mse(mse))
            break
        # the loss is a sum of independent per-INR terms: each row of a gradient is that INR's own
        grads = torch.autograd.grad(mse.sum(), params)
        params = [p.detach() for p in params]
        if fit.target_psnr is not None and step % fit.check_every == 0:
            psnr = psnr_from_mse(mse.detach())
            done = psnr >= fit.target_psnr
            if bool(done.any()):
                finish(done, psnr)
                keep = ~done
                active, targets = active[keep], targets[keep]
                params, grads = [t[keep] for t in params], [t[keep] for t in grads]
                m, v = [t[keep] for t in m], [t[keep] for t in v]
                if not len(active):
                    break
        with torch.no_grad():
            t = step + 1
            for p, g, mt, vt in zip(params, grads, m, v):
                mt.mul_(beta1).add_(g, alpha=1 - beta1)
                vt.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                denom = (vt / (1 - beta2 ** t)).sqrt_().add_(fit.eps)
                p.addcdiv_(mt, denom, value=-fit.lr / (1 - beta1 ** t))
    bar.close()
    return SirenFitResult(out_params, out_psnr, out_steps)
