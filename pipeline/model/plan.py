"""A run's plan: its initial parameters, what it trains and is evaluated on, and in which order.

A pure function of the prepared data, the seed and the randomness mode (`train.rng`):
- default: generators derived from the seed, `SeedSequence(seed).spawn(2)` (one for the
  initialisation, eqs. (1)-(3), one for each epoch's shuffle); the fit split, or its first
  `subset` images; the validation split evaluated after every epoch. Separate seeds for the
  initialisation and for the order (`train.init_seed`, `train.order_seed`) take the same
  stream that `seed` would give them: the init of `init_seed` and the order of `order_seed`.
- toolbox: DeepLearnToolbox's run under Octave after rand('state', seed), replayed
  (`pipeline.model.toolbox`): its initial parameters and randperm order over all 60,000
  training images in file order, each image transposed as the toolbox presents it; no
  validation split (every image is trained on, as in the toolbox). The trained parameters are
  converted back to the network for natural images (`Plan.to_saved`).

Both orders are resumable: `order.state()` is their generator's state (JSON-ready) and
`order.restore(state)` puts it back, so that after a checkpoint `order(epoch)` continues with
exactly the permutations an uninterrupted run draws.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from pipeline.data.prepared import Prepared, Split
from pipeline.model import cnn, toolbox


class ResumableOrder(Protocol):
    """An `sgd.Order` whose random state can be saved and put back (see the module docstring)."""

    def __call__(self, epoch: int) -> np.ndarray: ...

    def state(self) -> dict[str, Any]: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


@dataclass(frozen=True)
class Plan:
    params0: cnn.Params  # the dtype of training
    # The splits hold the prepared file's uint8 bytes, converted per batch in the params' dtype.
    fit: Split  # as the network sees it during training
    val: Split | None
    test: Split  # as the network sees it during training (per-epoch evaluation)
    test_natural: Split  # natural images, for the saved weights (always natural)
    order: ResumableOrder
    to_saved: Callable[[cnn.Params], cnn.Params]  # trained params -> saved (natural) params


def make_generators(
    seed: int, *, init_seed: int | None = None, order_seed: int | None = None
) -> tuple[np.random.Generator, np.random.Generator]:
    """The (init, shuffle) generators of a run, from `SeedSequence(seed).spawn(2)`.

    init_seed / order_seed (None: `seed`) replace the seed of one stream only: the init
    generator is the first child of `SeedSequence(init_seed)`, the shuffle generator the second
    child of `SeedSequence(order_seed)`, exactly what a run with that `seed` would draw. So
    init_seed=a, order_seed=b starts from seed a's weights and follows seed b's order, and a run
    with both None (or both equal to `seed`) is the run it always was.
    """
    init_seq = np.random.SeedSequence(seed if init_seed is None else init_seed).spawn(2)[0]
    shuffle_seq = np.random.SeedSequence(seed if order_seed is None else order_seed).spawn(2)[1]
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)


class Shuffled:
    """An order drawing a fresh permutation of range(n) from `rng` for each epoch, in sequence;
    `state`/`restore` save and put back the generator's state (a checkpoint)."""

    KIND = "shuffled"

    def __init__(self, rng: np.random.Generator, n: int) -> None:
        self.rng, self.n = rng, n

    def __call__(self, epoch: int) -> np.ndarray:
        return self.rng.permutation(self.n)

    def state(self) -> dict[str, Any]:
        return {"kind": self.KIND, "n": self.n, "bit_generator": self.rng.bit_generator.state}

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("kind") != self.KIND or state.get("n") != self.n:
            raise ValueError(f"not the state of a shuffle of {self.n}: {state.get('kind')}")
        self.rng.bit_generator.state = dict(state["bit_generator"])


def shuffled(rng: np.random.Generator, n: int) -> Shuffled:
    """An order drawing a fresh permutation of range(n) from `rng` for each epoch, in sequence."""
    return Shuffled(rng, n)


def make_plan(
    *,
    prepared: Prepared,
    seed: int,
    rng: str,
    dtype: np.dtype | str,
    subset: int | None,
    init_seed: int | None = None,
    order_seed: int | None = None,
) -> Plan:
    """The plan of a run (module docstring). rng: "default" or "toolbox"; dtype: of the
    parameters, hence of all the arithmetic; init_seed and order_seed (default mode only; None:
    `seed`): see `make_generators`. The splits refer to `prepared`'s arrays (no copy)."""
    dtype = np.dtype(dtype)
    test = prepared.split("test")
    if rng == "toolbox":
        if init_seed not in (None, seed) or order_seed not in (None, seed):
            raise ValueError("rng=toolbox draws init and order from one stream: one seed only")
        full = prepared.split("train")
        params0, order = toolbox.replay(seed, len(full), dtype)

        def shown(s: Split) -> Split:
            return Split(x=toolbox.present(s.x), labels=s.labels, y=s.y)  # a view

        return Plan(params0, shown(full), None, shown(test), test, order, toolbox.to_natural)
    if rng != "default":
        raise ValueError(f"rng must be default or toolbox, got {rng!r}")
    init_rng, order_rng = make_generators(seed, init_seed=init_seed, order_seed=order_seed)
    fit = prepared.split("fit").head(subset)
    val = prepared.split("val") if prepared.n_val else None
    return Plan(
        cnn.init_params(init_rng, dtype), fit, val, test, test, shuffled(order_rng, len(fit)), dict
    )
