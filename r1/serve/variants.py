"""A/B and canary routing between the variants of one server, and automatic rollback.

    router = Router({"stable": 95, "canary": 5}, stable="stable")
    name = router.pick(user="alice")          # sticky: sha256(user) -> a point in [0, 1)
    name = router.pick()                      # weighted random
    router.record("canary", ok=False, seconds=0.02)   # -> a rollback reason, or None

Weights are relative (95/5 and 0.95/0.05 route the same), each a finite number from 0 to MAX_WEIGHT. Variants share [0, 1) in declaration
order, each a slice as wide as its share of the weight; a request lands where its point falls.
A user's point is the sha256 of their `X-R1-User` value, so it is the same in every process and
after restarts; changing weights moves only the users whose point changes slice.

Rollback (non-stable variants only; the stable one is the reference and the retry target): over a
variant's last `window` requests (once it has at least `min_requests`), an error rate above
`max_error_rate`, or a p95 latency above `p95_factor` x the stable variant's p95 (and above
`p95_floor`: millisecond jitter is no regression), sets its weight
to 0. The caller logs it and counts it in a metric; requests continue on the others. A non-stable
variant that cannot load (or whose inference process could not be restarted) is rolled back at
once (`roll_back`).

Comparison over time (`describe(seconds)`): besides the last N requests, each variant keeps its
answers of the last `horizon_s` (300 s: seed 002's "last 5 minutes"), so an operator compares a
canary with the stable variant over the same stretch of time whatever their traffic shares.
"""
from __future__ import annotations

import hashlib
import math
import random
import time
from collections import deque
from dataclasses import dataclass, field

from r1.config_commands import weight_value


def user_point(user: str) -> float:
    """A stable point in [0, 1) for a user id (sha256; never Python's salted `hash()`)."""
    return int.from_bytes(hashlib.sha256(user.encode("utf-8")).digest()[:8], "big") / 2.0 ** 64


def quantile(values, q: float) -> float | None:
    data = sorted(values)
    if not data:
        return None
    return data[max(0, math.ceil(q * len(data)) - 1)]  # nearest rank


def p95(values) -> float | None:
    return quantile(values, 0.95)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


TIMED_CAP = 100_000  # the most answers a time window keeps (bounded memory at any request rate)


@dataclass
class Stats:
    """A variant's totals, its sliding window of (ok, seconds) for the rollback rules, and its answers
    of the last `horizon` seconds as (time, ok, seconds), for comparisons over a time window."""

    window: int
    requests: int = 0
    errors: int = 0
    recent: deque = field(default_factory=deque)
    horizon: float = 300.0
    timed: deque = field(default_factory=lambda: deque(maxlen=TIMED_CAP))

    def add(self, ok: bool, seconds: float, now: float | None = None) -> None:
        self.requests += 1
        self.errors += not ok
        self.recent.append((ok, seconds))
        while len(self.recent) > self.window:
            self.recent.popleft()
        now = time.monotonic() if now is None else now
        self.timed.append((now, ok, seconds))
        while self.timed and self.timed[0][0] < now - self.horizon:
            self.timed.popleft()

    def since(self, seconds: float, now: float | None = None) -> dict:
        """Requests, errors, error rate, p50 and p95 (ms, successful requests) of the last `seconds`."""
        start = (time.monotonic() if now is None else now) - seconds
        rows = [(ok, s) for t, ok, s in self.timed if t >= start]
        ok_times = [s for ok, s in rows if ok]
        errors = sum(not ok for ok, _ in rows)
        return {"seconds": seconds, "requests": len(rows), "errors": errors,
                "error_rate": round(errors / len(rows), 6) if rows else 0.0,
                "p50_ms": _ms(quantile(ok_times, 0.5)), "p95_ms": _ms(p95(ok_times))}

    @property
    def error_rate(self) -> float:
        return sum(not ok for ok, _ in self.recent) / len(self.recent) if self.recent else 0.0

    @property
    def p95_seconds(self) -> float | None:
        return p95(s for ok, s in self.recent if ok)

    def reset_window(self) -> None:
        self.recent.clear()


@dataclass(frozen=True)
class RollbackRules:
    window: int = 100
    min_requests: int = 20
    max_error_rate: float = 0.02
    p95_factor: float = 3.0  # 0: no latency rule
    p95_floor: float = 0.05  # seconds: a p95 below this never triggers the latency rule (noise)


class Router:
    def __init__(self, weights: dict[str, float], stable: str, rules: RollbackRules = RollbackRules(),
                 rng: random.Random | None = None, horizon_s: float = 300.0):
        if not weights:
            raise ValueError("at least one variant is needed")
        if stable not in weights:
            raise ValueError(f"stable variant {stable!r} is not one of {', '.join(weights)}")
        self.names = list(weights)
        self.weights = self._values(weights)
        self.stable, self.rules = stable, rules
        self.rng = rng or random.Random()
        self.stats = {n: Stats(rules.window, horizon=horizon_s) for n in self.names}
        self.horizon_s = horizon_s  # the longest time window `describe` compares over
        self.rolled_back: dict[str, str] = {}  # name -> why (its weight is 0 since)
        self._check_total(self.weights)

    @staticmethod
    def _values(weights: dict) -> dict[str, float]:
        out = {}
        for name, value in weights.items():
            try:
                out[name] = weight_value(value)
            except ValueError as err:
                raise ValueError(f"weight of {name!r} must be {err}") from None
        return out

    @staticmethod
    def _check_total(weights: dict[str, float]) -> None:
        if sum(weights.values()) <= 0:
            raise ValueError("at least one variant needs a weight > 0")

    def shares(self) -> dict[str, float]:
        total = sum(self.weights.values())
        return {n: self.weights[n] / total for n in self.names}

    def shares_text(self) -> str:
        """"stable 81.8%, canary 18.2% (relative weights stable=90, canary=20)": weights need not sum to 100."""
        shares = self.shares()
        weights = ", ".join(f"{n}={self.weights[n]:g}" for n in self.names)
        return ", ".join(f"{n} {100 * shares[n]:.1f}%" for n in self.names) + f" (relative weights {weights})"

    def pick(self, user: str | None = None, usable=lambda name: True) -> str:
        """The variant for one request: by the user's point when given, else at random. A variant
        that is not `usable` (not ready) sends its requests to the stable one."""
        point = user_point(user) if user else self.rng.random()
        edge, chosen = 0.0, None
        total = sum(self.weights.values())
        for name in self.names:
            w = self.weights[name] / total
            if w > 0:
                chosen = name
                edge += w
                if point < edge:
                    break
        if chosen is None or not usable(chosen):
            return self.stable
        return chosen

    def set_weights(self, weights: dict[str, float]) -> None:
        """Change some weights (unknown names: ValueError). A weight > 0 on a rolled-back variant
        brings it back with a fresh window."""
        unknown = [n for n in weights if n not in self.weights]
        if unknown:
            raise ValueError(f"unknown variant {unknown[0]!r}; variants: {', '.join(self.names)}")
        values = self._values(weights)
        new = {**self.weights, **values}
        self._check_total(new)
        for name, w in values.items():
            if w > 0 and name in self.rolled_back:
                del self.rolled_back[name]
                self.stats[name].reset_window()
        self.weights = new

    def roll_back(self, name: str, why: str) -> bool:
        """Weight 0 for a non-stable variant, now (it cannot load); False for the stable one or one
        already at 0."""
        if name == self.stable or self.weights[name] == 0:
            return False
        self.weights[name] = 0.0
        self.rolled_back[name] = why
        return True

    def record(self, name: str, ok: bool, seconds: float, now: float | None = None) -> str | None:
        """Count one answered request of `name` (at monotonic time `now`); -> why it was just rolled
        back, else None."""
        stats = self.stats[name]
        stats.add(ok, seconds, now)
        if name == self.stable or self.weights[name] == 0 or len(stats.recent) < self.rules.min_requests:
            return None
        why = None
        if stats.error_rate > self.rules.max_error_rate:
            why = (f"error rate {stats.error_rate:.1%} over its last {len(stats.recent)} requests > "
                   f"{self.rules.max_error_rate:.1%}")
        elif self.rules.p95_factor > 0:
            mine, ref = stats.p95_seconds, self.stats[self.stable].p95_seconds
            if mine is not None and ref and len(self.stats[self.stable].recent) >= self.rules.min_requests \
                    and mine > max(self.rules.p95_factor * ref, self.rules.p95_floor):
                why = (f"p95 {mine * 1000:.1f} ms > {self.rules.p95_factor:g} x stable's {ref * 1000:.1f} ms")
        if why is None:
            return None
        self.weights[name] = 0.0
        self.rolled_back[name] = why
        return why

    def describe(self, seconds: float | None = None, now: float | None = None) -> list[dict]:
        """One row per variant: weight, share, totals, the rollback window (last N requests) and the
        last `seconds` (default: the horizon) as `time_window`; non-stable rows compare both with the
        stable variant's (`vs_stable`: error rate difference, p95 ratio)."""
        seconds = self.horizon_s if seconds is None else min(seconds, self.horizon_s)
        shares = self.shares()
        out, base = [], None
        for name in self.names:
            s = self.stats[name]
            p = s.p95_seconds
            row = {"name": name, "weight": self.weights[name], "share": round(shares[name], 6),
                   "stable": name == self.stable, "requests": s.requests, "errors": s.errors,
                   "window_requests": len(s.recent), "error_rate": round(s.error_rate, 6),
                   "p95_ms": _ms(p), "time_window": s.since(seconds, now),
                   "rolled_back": self.rolled_back.get(name)}
            out.append(row)
            base = row if name == self.stable else base
        for row in out:
            row["vs_stable"] = None if row["stable"] else {
                "last_requests": _versus(row, base), "time_window": _versus(row["time_window"], base["time_window"])}
        return out


def _versus(mine: dict, stable: dict) -> dict:
    """A variant's error rate and p95 against the stable variant's (None where either has none)."""
    ratio = None
    if mine.get("p95_ms") is not None and stable.get("p95_ms"):
        ratio = round(mine["p95_ms"] / stable["p95_ms"], 4)
    return {"error_rate_diff": round(mine["error_rate"] - stable["error_rate"], 6), "p95_ratio": ratio}


def parse_traffic(text: str, key: str = "--traffic") -> dict[str, float]:
    """"stable=95,canary=5" -> {"stable": 95.0, "canary": 5.0} (ConfigError naming the bad part)."""
    from r1.errors import ConfigError

    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            out[name.strip()] = float(value)
        except ValueError:
            raise ConfigError(f"{key}: {part!r} is not NAME=WEIGHT; expected e.g. stable=95,canary=5") from None
    if not out:
        raise ConfigError(f"{key}: empty; expected e.g. stable=95,canary=5")
    return out


def split_variants(args: list[str]) -> tuple[str | None, dict[str, str] | None]:
    """`r1 serve` positional arguments -> (MODEL, None) for one model, (None, {name: model}) for
    `stable=RUN_A canary=RUN_B`, (None, None) for none (ConfigError when they mix or repeat)."""
    from r1.errors import ConfigError

    if not args:
        return None, None
    named = [a for a in args if "=" in a]
    if not named:
        if len(args) > 1:
            raise ConfigError(f"r1 serve: unexpected argument {args[1]!r}; several models are given as "
                              f"NAME=MODEL (e.g. stable=runs/a canary=runs/b)")
        return args[0], None
    if len(named) != len(args):
        plain = next(a for a in args if "=" not in a)
        raise ConfigError(f"r1 serve: {plain!r}: with several variants, name each one: NAME=MODEL")
    variants: dict[str, str] = {}
    for arg in args:
        name, _, model = arg.partition("=")
        if not name or not model:
            raise ConfigError(f"r1 serve: {arg!r} is not NAME=MODEL")
        if name in variants:
            raise ConfigError(f"r1 serve: variant {name!r} given twice")
        variants[name] = model
    return None, variants


def split_named(args: list[str]) -> tuple[list[str], list[str]]:
    """-> (NAME=MODEL arguments, the others): a NAME=MODEL has no dot in NAME and NAME is no
    `serve` setting (`max_batch=16` stays an override, refused with its usual message)."""
    from r1.config_commands import ServeConfig

    def named(arg: str) -> bool:
        key, sep, _ = arg.partition("=")
        return bool(sep) and "." not in key and "/" not in key and key not in ServeConfig.__dataclass_fields__

    return [a for a in args if named(a)], [a for a in args if not named(a)]
