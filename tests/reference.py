"""A float64 numpy reference of StatefulNet's step, written from the equations in
docs/stability.md, independent of the torch code it checks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from psann_stream import StateConfig, StatefulNet


def softplus(x: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, x)


def bound(x: np.ndarray, cfg: StateConfig) -> np.ndarray:
    m = cfg.max_abs
    if cfg.bound == "clip":
        return np.clip(x, -m, m)
    with np.errstate(over="ignore"):  # x / m beyond float64 is inf: tanh gives the limit, 1
        if cfg.bound == "tanh":
            return m * np.tanh(x / m)
        norm = np.linalg.norm(x, axis=-1, keepdims=True)
        # (x / norm) * m: m / norm would be a deep subnormal (few bits) when m is near the smallest normal
        return np.where(norm > m, (x / np.maximum(norm, 1e-300)) * m, x)


@dataclass
class RefLayer:
    W: np.ndarray
    b: np.ndarray
    A: np.ndarray
    f: np.ndarray
    d: np.ndarray
    gamma: np.ndarray


@dataclass
class RefNet:
    cfg: StateConfig
    layers: list[RefLayer]
    Wh: np.ndarray
    bh: np.ndarray

    @classmethod
    def from_model(cls, model: StatefulNet) -> "RefNet":
        g = lambda t: t.detach().double().numpy().copy()  # noqa: E731
        layers = []
        for layer in model.layers:
            act = layer.activation
            layers.append(
                RefLayer(
                    W=g(layer.linear.weight),
                    b=g(layer.linear.bias),
                    A=softplus(g(act.raw_amplitude)),
                    f=softplus(g(act.raw_frequency)),
                    d=softplus(g(act.raw_decay)) + 1e-6,
                    gamma=g(layer.gain),
                )
            )
        return cls(model.state_config, layers, g(model.head.weight), g(model.head.bias))

    def initial_state(self, n_streams: int) -> list[np.ndarray]:
        return [np.full((n_streams, L.W.shape[0]), self.cfg.init) for L in self.layers]

    def step(self, x: np.ndarray, states: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        cfg = self.cfg
        h = np.asarray(x, dtype=np.float64)
        new = []
        for L, s in zip(self.layers, states):
            z = h @ L.W.T + L.b
            a = L.A * np.exp(-L.d * np.abs(z)) * np.sin(L.f * z)
            if cfg.mode == "trace":
                drive = a
            elif cfg.mode == "gain":
                drive = np.abs(a)
            else:
                drive = np.abs(a * s)
            s_new = bound(cfg.rho * s + (1 - cfg.rho) * cfg.beta * drive, cfg)
            if cfg.mode == "trace":
                h = a + L.gamma * s_new
            elif cfg.mode == "gain":
                h = L.gamma * a / (cfg.gain_eps + s_new)
            else:
                h = L.gamma * a * s
            new.append(s_new)
        return h @ self.Wh.T + self.bh, new
