"""Synthetic metrics.jsonl rows for the classifier's tests: the shapes of the paper's Figure 1
(docs/science.md#figure-1-values) and of the classifier's known failure modes."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

INIT_LOSS, INIT_GRAD, CLASSES = 9.5, 600.0, 10
STEPS_PER_EPOCH = 391


def log_epochs(last: float = 1000, n: int = 25) -> np.ndarray:
    """0, then n log-spaced whole epochs from 1 to `last` (the engine's record schedule)."""
    ep = np.unique(np.round(np.exp(np.linspace(0.0, math.log(last), n))))
    return np.concatenate([[0.0], ep])


def accuracy_from_loss(loss: np.ndarray, init_loss: float = INIT_LOSS) -> np.ndarray:
    """Chance (0.1) at the init loss, close to 1 for a tiny loss."""
    return np.clip(1.0 - 0.9 * (np.minimum(loss, init_loss) / init_loss) ** 0.3, 0.1, 1.0)


def rows(
    ep: Sequence[float],
    loss: Sequence[float],
    grad: Sequence[float],
    elr: float | None = None,
    acc: Sequence[float] | None = None,
) -> list[dict[str, float]]:
    """Records as the engine writes them (the keys classify_records reads, and a few more)."""
    accuracy = accuracy_from_loss(np.asarray(loss)) if acc is None else np.asarray(acc)
    out = []
    for e, lo, g, a in zip(ep, loss, grad, accuracy):
        row = {
            "epoch": float(e),
            "step": int(round(e * STEPS_PER_EPOCH)),
            "train_loss": float(lo),
            "train_acc": float(a),
            "eff_grad_norm": float(g),
            "si_norm": 12.65,
        }
        if elr is not None:
            row["elr"] = elr
        out.append(row)
    return out


def noisy(rng: np.random.Generator, sigma: float) -> Callable[[np.ndarray], np.ndarray]:
    return lambda x: x * rng.lognormal(0.0, sigma, np.shape(x))


def converging(ep: np.ndarray, level: float, grad: float, rng: np.random.Generator):
    """Regime 1: a power-law fall that reaches `level` at the last epoch; the gradient norm
    shrinks with the loss (log-log slope ~1 on the grad-vs-loss diagram)."""
    tau = 20.0
    power = math.log(INIT_LOSS / level) / math.log(1 + ep[-1] / tau)
    loss = noisy(rng, 0.1)(INIT_LOSS * (1 + ep / tau) ** -power)
    g = INIT_GRAD * (loss / INIT_LOSS) ** (math.log(INIT_GRAD / grad) / math.log(INIT_LOSS / level))
    loss[0], g[0] = INIT_LOSS, INIT_GRAD
    return loss, g


def equilibrium(
    ep: np.ndarray, level: float, grad: float, rng: np.random.Generator, tau: float = 3.0
):
    """Regime 2: a transient of a few epochs, then a noisy stationary level."""
    decay = np.exp(-ep / tau)
    loss = noisy(rng, 0.25)(level + (INIT_LOSS - level) * decay)
    g = noisy(rng, 0.2)(grad + (INIT_GRAD - grad) * decay)
    loss[0], g[0] = INIT_LOSS, INIT_GRAD
    return loss, g


def diverging(ep: np.ndarray, level: float, grad: float, rng: np.random.Generator):
    """Regime 3: the loss jumps to the init level or above at once, the gradient explodes."""
    loss, g = noisy(rng, 0.15)(np.full(ep.size, level)), noisy(rng, 0.3)(np.full(ep.size, grad))
    loss[0], g[0] = INIT_LOSS, INIT_GRAD
    return loss, g
