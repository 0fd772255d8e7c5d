"""The demo shop's fault mode: what a real shop and its CDN do to a crawler now and then.

Each request draws at most one fault from a seeded generator, so a run is repeatable and a
retry of the same URL can succeed, as it does against a real flaky server.
"""

from __future__ import annotations

import io
import random
import threading
from dataclasses import dataclass, field
from functools import cache

from PIL import Image

from core.errors import ConfigError

# name: which requests it can hit ('image', 'page' or 'any')
FAULTS = {
    "5xx": "any",  # a 503 with no advice
    "429": "any",  # too many requests, with Retry-After
    "slow": "any",  # answers after a delay
    "stall": "any",  # answers nothing until the client gives up
    "truncate": "any",  # declares the whole length, sends half, hangs up
    "content_type": "image",  # an HTML error page sent as image/jpeg
    "drift": "page",  # a field or link pattern renamed, as a redesign does
    "redirect": "any",  # to a foreign host, or to a path robots.txt disallows
    "oversize": "image",  # a photo padded past any sane size
    "bomb": "image",  # a small file that decodes to 400 million pixels
}


@dataclass
class FaultPlan:
    rates: dict[str, float]
    seed: int = 0
    latency_s: float = 0.0  # added to every response, as a distant server's round trip
    slow_s: float = 1.0
    stall_s: float = 10.0
    retry_after_s: int = 1
    oversize_bytes: int = 25_000_000
    _rng: random.Random = field(init=False, repr=False)
    _lock: threading.Lock = field(init=False, repr=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.rates) - set(FAULTS))
        if unknown:
            raise ConfigError(f"unknown faults: {', '.join(unknown)}; valid faults: {', '.join(FAULTS)}")
        if sum(self.rates.values()) > 1:
            raise ConfigError(f"fault rates add up to {sum(self.rates.values()):.2f}, over 1")
        self._rng = random.Random(self.seed)

    @classmethod
    def parse(cls, spec: str, rate: float = 0.1, **options: float) -> FaultPlan:
        """'default' spreads `rate` evenly over every fault; 'a=0.02,b=0.01' names each rate."""
        if spec == "default":
            rates = {name: rate / len(FAULTS) for name in FAULTS}
        else:
            rates = {}
            for item in filter(None, spec.split(",")):
                name, sep, value = item.partition("=")
                if not sep:
                    raise ConfigError(f"fault '{item}' needs a rate: NAME=RATE")
                rates[name.strip()] = float(value)
        return cls(rates, **options)  # type: ignore[arg-type]

    def pick(self, target: str) -> str | None:
        """Draws the fault for one request to a 'page' or 'image' URL, or None."""
        with self._lock:
            u = self._rng.random()
        for name, rate in self.rates.items():
            if u < rate:
                return name if FAULTS[name] in ("any", target) else None
            u -= rate
        return None


@cache
def bomb_png() -> bytes:
    """A PNG of 20000 x 20000 one-bit pixels: 50 kB on the wire, 400 megapixels decoded."""
    buf = io.BytesIO()
    Image.new("1", (20000, 20000)).save(buf, "PNG", optimize=True)
    return buf.getvalue()
