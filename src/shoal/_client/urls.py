"""Several coordinator URLs for one client: one active coordinator and standbys on the
same PostgreSQL database (docs/scale.md). The client talks to one at a time and moves
on when it stops answering or answers as a standby (503 ``coord.standby``)."""

from __future__ import annotations

import httpx

from shoal._errors import ShoalError

#: A standby's refusal code, and the header naming the active coordinator.
STANDBY = "coord.standby"
ACTIVE_HEADER = "X-Shoal-Active"
#: Methods whose request may be sent again to another coordinator after any transport
#: error (a POST that may have arrived is sent again only when it certainly did not).
_SAFE = frozenset({"GET", "HEAD"})


def split_urls(urls: str, where: str = "the argument") -> list[str]:
    """The URLs of a comma-separated list, each checked for its scheme.

    Raises
    ------
    ShoalError
        ``client.config`` for an empty list or a URL without http(s)://.
    """
    found = [u.strip().rstrip("/") for u in urls.split(",") if u.strip()]
    if not found:
        raise ShoalError(
            f"no coordinator URL in {urls!r} (from {where})",
            code="client.config",
            hint="give https://host:8750, or several separated by commas",
        )
    for url in found:
        if not url.startswith(("http://", "https://")):
            raise ShoalError(
                f"coordinator URL {url!r} (from {where}) has no http:// or https:// scheme",
                code="client.config",
                hint=f"write it as https://{url}, or http://{url} for a coordinator without TLS",
            )
    return found


def is_standby(r: httpx.Response) -> bool:
    """Whether ``r`` is a standby coordinator's refusal (try the active one)."""
    if r.status_code != 503:
        return False
    try:
        return bool(r.json()["error"]["code"] == STANDBY)
    except (ValueError, KeyError, TypeError):
        return False


def may_move_on(method: str, e: httpx.HTTPError) -> bool:
    """Whether a request that failed with ``e`` may go to another coordinator: a read
    always; a write only if it never reached this one (it would otherwise be done
    twice, e.g. a swarm submitted twice)."""
    return method in _SAFE or isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout))


class Coordinators:
    """The URLs a client may use and the one it uses now."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self._at = 0

    @property
    def current(self) -> str:
        """The URL requests go to now."""
        return self.urls[self._at]

    @property
    def several(self) -> bool:
        """Whether there is another URL to move on to."""
        return len(self.urls) > 1

    def move_on(self, active: str | None = None) -> str:
        """Go to ``active`` if it is one of ours, else to the next URL; return it."""
        if active is not None and active.rstrip("/") in self.urls:
            self._at = self.urls.index(active.rstrip("/"))
        else:
            self._at = (self._at + 1) % len(self.urls)
        return self.current
