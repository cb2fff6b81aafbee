"""Differential privacy for what a member sends in ``sync.mode: average`` (``sync.privacy``): each round, the
member's update to the group model (its parameters minus the merged model it last adopted) is clipped to L2 norm
``clip`` and Gaussian noise of standard deviation ``noise_multiplier * clip`` is added to every coordinate
before it leaves the member (DP-FedAvg's mechanism, applied by each member to its own update: the group, the
sync topic and its readers only ever see noisy updates). Every member then weighs the same in the merge (the
number of labeled events it learned is not sent).

The privacy unit is a member's whole contribution to a round (its update present or absent: the add/remove
adjacency whose L2 sensitivity is ``clip`` after clipping). The budget spent, epsilon at ``delta`` over the rounds a
member sent, is computed by Opacus's RDP accountant (`opacus.accountants.analysis.rdp`: the Gaussian mechanism
composed once per round, sampling rate 1), never by a formula of ours.

Only MEAN entries (a linear model's weights and intercepts) can be privatised: a scaler's running counts, means
and variances are statistics of the member's data sent exactly, so the settings refuse ``model.scale`` with
privacy. The noise comes from numpy's PCG64 seeded from the operating system's entropy (``privacy.seed`` for
tests): not a cryptographically secure generator, as in Opacus without its ``secure_mode``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from driftline.errors import ConfigError
from driftline.learners.mergeable import MEAN, Entry, Params, _aligned

# Rényi orders the accountant evaluates (Opacus's default set)
ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))


def privatize(update: Params, ref: Params, *, clip: float, noise_multiplier: float,
              rng: np.random.Generator) -> tuple[Params, float]:
    """``ref`` plus the member's clipped, noised change since it (``update - ref``, all MEAN entries together as
    one vector), and that change's L2 norm before clipping. ValueError for a statistics (MOMENTS) entry."""
    names = sorted(update)
    deltas: list[tuple[str, tuple[str, ...], np.ndarray, np.ndarray]] = []
    for name in names:
        e = update[name]
        if e.kind != MEAN:
            raise ValueError(f"parameter {name!r} holds statistics of the member's data ({e.kind}): differential "
                             "privacy covers averaged parameters only (set model.scale false)")
        base = ref.get(name, Entry(MEAN, (), np.zeros(0)))
        keys, (now, before) = _aligned([e, base])
        deltas.append((name, keys, now - before, before))
    norm = math.sqrt(sum(float(np.dot(d, d)) for _, _, d, _ in deltas))
    scale = min(1.0, clip / norm) if norm > 0 else 1.0
    sigma = noise_multiplier * clip
    out: Params = {}
    for name, keys, delta, before in deltas:
        noisy = delta * scale + rng.normal(0.0, sigma, size=delta.shape)
        out[name] = Entry(MEAN, keys, before + noisy)
    return out, norm


def epsilon(rounds: int, noise_multiplier: float, delta: float, orders: Sequence[float] = ORDERS) -> float:
    """The privacy budget spent after ``rounds`` updates, by Opacus's RDP accountant (0 before the first)."""
    if rounds <= 0:
        return 0.0
    from opacus.accountants.analysis import rdp  # with the deep extra; checked at start (`require_accountant`)

    spent = rdp.compute_rdp(q=1.0, noise_multiplier=noise_multiplier, steps=rounds, orders=list(orders))
    eps, _ = rdp.get_privacy_spent(orders=list(orders), rdp=spent, delta=delta)
    return float(eps)


def require_accountant() -> None:
    """ConfigError naming the extra when Opacus (the accountant) is not installed."""
    try:
        import opacus.accountants.analysis.rdp  # noqa: F401
    except ImportError as exc:
        raise ConfigError("sync.privacy needs Opacus's privacy accountant, in the deep extra: pip install "
                          f"'driftline[deep]' ({exc})") from None
