"""Per-example loss weights computed from the student's own current losses (PyTorch, no grad).

Self-paced learning (Kumar et al. 2010; Jiang et al. 2014, 2015) and focal / hard-example
weighting (Lin et al. 2017). The weighted loss is ``mean(w_i * loss_i)`` over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trainables.config import SPLRegularizer, kinds
from trainables.curriculum._pacing import Pacing

SPL_KINDS = kinds(SPLRegularizer)


def spl_weights(
    losses: torch.Tensor, lam: float, kind: str, *, mixture_ratio: float = 0.5
) -> torch.Tensor:
    """Closed-form self-paced weights ``v*(l; lambda)``.

    - ``hard``: ``1[l < lambda]`` (Kumar et al. 2010)
    - ``linear``: ``max(0, 1 - l / lambda)``
    - ``log``: ``log(l + zeta) / log(zeta)`` for ``l < lambda``, else 0; ``zeta = 1 - lambda``,
      needs ``0 < lambda < 1``
    - ``mixture``: 1 if ``l <= lambda'``, 0 if ``l >= lambda``, else ``zeta / l - zeta / lambda``
      with ``lambda' = mixture_ratio * lambda`` and ``zeta = lambda' lambda / (lambda - lambda')``
      (Jiang et al. 2014).

    ``lambda = inf`` admits everything (all weights 1).
    """
    if kind not in SPL_KINDS:
        raise ValueError(f"kind must be one of {', '.join(SPL_KINDS)}; got {kind!r}")
    if not lam > 0:
        raise ValueError(f"lambda must be > 0, got {lam}")
    if math.isinf(lam):
        return torch.ones_like(losses)
    if kind == "hard":
        return (losses < lam).to(losses.dtype)
    if kind == "linear":
        return torch.clamp(1.0 - losses / lam, min=0.0)
    if kind == "log":
        if not lam < 1:
            raise ValueError(f"log self-paced weights need 0 < lambda < 1, got {lam}")
        zeta = 1.0 - lam
        inside = torch.log(torch.clamp(losses, min=0.0) + zeta) / math.log(zeta)
        return torch.where(losses < lam, inside, torch.zeros_like(losses))
    if not 0 < mixture_ratio < 1:
        raise ValueError(f"mixture_ratio must be in (0, 1), got {mixture_ratio}")
    lam_prime = mixture_ratio * lam
    zeta = lam_prime * lam / (lam - lam_prime)
    middle = zeta / torch.clamp(losses, min=1e-12) - zeta / lam
    return torch.where(
        losses <= lam_prime,
        torch.ones_like(losses),
        torch.where(losses >= lam, torch.zeros_like(losses), middle),
    )


@dataclass(frozen=True)
class SelfPacedWeighting:
    """Self-paced weights with a growing threshold ``lambda``, on losses divided by
    ``loss_scale`` (``log(classes)``, the loss of a uniform guess, so ``lambda = 1`` means
    "as bad as chance").

    ``growth = "mu"``: ``lambda = lambda0 * mu^epoch`` (Kumar et al.'s ``K <- K / mu`` per
    round). ``growth = "pacing"``: ``lambda`` is the ``c(p)`` quantile of the batch's losses, so
    the easiest fraction ``c(p)`` of each batch is admitted and all data once ``c(p) = 1``.
    """

    kind: str
    loss_scale: float
    growth: str = "mu"
    lambda0: float = 0.5
    mu: float = 1.3
    pacing: Pacing | None = None
    mixture_ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SPL_KINDS:
            raise ValueError(f"kind must be one of {', '.join(SPL_KINDS)}; got {self.kind!r}")
        if self.growth not in ("mu", "pacing"):
            raise ValueError(f"growth must be 'mu' or 'pacing', got {self.growth!r}")
        if self.growth == "pacing" and self.pacing is None:
            raise ValueError("growth 'pacing' needs a pacing function")
        if self.lambda0 <= 0 or self.mu < 1 or self.loss_scale <= 0:
            raise ValueError("need lambda0 > 0, mu >= 1 and loss_scale > 0")

    def threshold(self, losses: torch.Tensor, *, progress: float, epoch: int) -> float:
        if self.growth == "mu":
            lam = self.lambda0 * self.mu**epoch
        else:
            fraction = self.pacing(progress)
            if fraction >= 1.0:
                return math.inf
            # just above the fraction-quantile, so that quantile's example is admitted
            lam = float(torch.quantile(losses, fraction)) + 1e-6
        if self.kind == "log":
            lam = min(lam, 1.0 - 1e-6)
        return lam

    def __call__(self, losses: torch.Tensor, *, progress: float, epoch: int) -> torch.Tensor:
        """Weights for one batch of per-example losses (detached)."""
        scaled = losses.detach() / self.loss_scale
        lam = self.threshold(scaled, progress=progress, epoch=epoch)
        return spl_weights(scaled, lam, self.kind, mixture_ratio=self.mixture_ratio)


def focal_weights(ce_losses: torch.Tensor, gamma: float) -> torch.Tensor:
    """Focal weighting (Lin et al. 2017): ``(1 - p_y)^gamma`` with ``p_y = exp(-CE)`` the
    student's probability of the true class; ``gamma = 0`` is uniform."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    p_true = torch.exp(-ce_losses.detach())
    return torch.clamp(1.0 - p_true, min=0.0) ** gamma
