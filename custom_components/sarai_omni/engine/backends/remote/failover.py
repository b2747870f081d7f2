"""The servers of one role (the same model on each): which to ask first, which are down for now.

A request goes to the server that answered last; one that did not answer (or was still loading its
model) is skipped for `DOWN_FOR_S` and asked again after that, or sooner when every other one is down
too. One household with two GPU boxes, or a box and a cluster, needs no load balancer in front.
"""

from __future__ import annotations

import time

from ...spec import server_label

DOWN_FOR_S = 30.0  # how long a server that did not answer is asked last


class Failover:
    def __init__(self, urls: tuple[str, ...]) -> None:
        self.urls = urls
        self.current = urls[0]
        self._down_at: dict[str, float] = {}

    @property
    def label(self) -> str:
        """The current server's URL without credentials."""
        return server_label(self.current)

    def _down(self, url: str) -> bool:
        at = self._down_at.get(url)
        return at is not None and time.monotonic() - at < DOWN_FOR_S

    @property
    def any_up(self) -> bool:
        return any(not self._down(u) for u in self.urls)

    def order(self) -> list[str]:
        """Every server, the current one first, those down for now last."""
        start = self.urls.index(self.current)
        ring = [*self.urls[start:], *self.urls[:start]]
        return sorted(ring, key=self._down)  # stable: the ring's order within each group

    def answered(self, url: str) -> None:
        self.current = url
        self._down_at.pop(url, None)

    def failed(self, url: str) -> None:
        self._down_at[url] = time.monotonic()
