"""HTTP plumbing shared by every module that drives alpaca-py's ``requests`` session."""

from __future__ import annotations

from typing import Any

from requests import PreparedRequest, Response
from requests.adapters import HTTPAdapter

__all__ = ["TimeoutAdapter"]


class TimeoutAdapter(HTTPAdapter):
    """Gives every request a default timeout: alpaca-py's session sets none, so a stalled
    socket would block forever. ``timeout`` is seconds or ``(connect, read)``. The adapter
    never retries (``max_retries=0``): callers decide what is safe to retry."""

    def __init__(self, timeout: float | tuple[float, float]) -> None:
        super().__init__(max_retries=0)
        self._timeout = timeout

    def send(
        self,
        request: PreparedRequest,
        stream: bool = False,
        timeout: Any = None,
        verify: Any = True,
        cert: Any = None,
        proxies: Any = None,
    ) -> Response:
        return super().send(
            request,
            stream=stream,
            timeout=self._timeout if timeout is None else timeout,
            verify=verify,
            cert=cert,
            proxies=proxies,
        )
