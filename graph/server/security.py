"""Who may talk to the server: the origin and host checks, the optional bearer token, CORS.

- Origin check (ComfyUI's anti-CSRF rule, applied to every host): a browser request whose `Origin`
  differs from the `Host` it was sent to, or that says `Sec-Fetch-Site: cross-site`, is refused
  with 403, so a web page cannot drive a local server. `--enable-cors-header` replaces this check
  with CORS headers for the one allowed origin.
- Host check: a server listening only on loopback answers only to loopback host names, so DNS
  rebinding cannot turn a web page into a same-origin client.
- Token: with `--auth-token` (or DIFFLOOM_AUTH_TOKEN) every route needs `Authorization: Bearer
  TOKEN`. Browsers cannot set that header on `<img>` or websocket requests, so `?token=` works too
  and sets an HttpOnly, SameSite=Strict cookie that the editor's later requests carry.

Path confinement for the file routes lives in `graph.files.confined_path`.
"""
from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from .options import is_loopback_host

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN_COOKIE = "diffloom_token"
TOKEN_QUERY = "token"
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def _error(status: int, kind: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message, "details": "", "extra_info": {}}},
                             status=status, headers=headers or None)


def split_host(host: str, default_port: int | None) -> tuple[str, int | None]:
    """'Host' header or netloc -> (lower-case host name without brackets, port or the scheme's default)."""
    host = host.strip().lower()
    if host.startswith("["):
        name, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
    else:
        name, port = host, ""
    try:
        return name, int(port) if port else default_port
    except ValueError:
        return name, default_port


def is_cross_origin(request: web.Request) -> str | None:
    """Why this request comes from another site, or None if it does not."""
    if request.headers.get("Sec-Fetch-Site", "").lower() == "cross-site":
        return "Sec-Fetch-Site says cross-site"
    origin = request.headers.get("Origin")
    if origin is None:
        return None
    parts = urlsplit(origin)
    if origin == "null" or not parts.hostname:
        return f"Origin {origin!r} is opaque"
    origin_host = split_host(parts.netloc.rpartition("@")[2], _DEFAULT_PORTS.get(parts.scheme))
    request_host = split_host(request.headers.get("Host", ""), _DEFAULT_PORTS.get(request.scheme))
    if origin_host != request_host:
        return f"Origin {origin!r} does not match Host {request.headers.get('Host', '')!r}"
    return None


def origin_middleware(*, loopback_only: bool) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Refuse cross-site browser requests (and non-loopback Host names on a loopback-only server)."""

    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        if loopback_only:
            host, _ = split_host(request.headers.get("Host", ""), None)
            if host and not is_loopback_host(host):
                log.warning("refused %s %s: Host %r is not a loopback name", request.method, request.path, host)
                return _error(403, "forbidden_host", f"Host {host!r} is not allowed: this server listens on "
                                                     "loopback only")
        reason = is_cross_origin(request)
        if reason is not None:
            log.warning("refused cross-origin %s %s: %s", request.method, request.path, reason)
            return _error(403, "cross_origin", f"cross-origin request refused: {reason}")
        return await handler(request)

    return check_origin


def cors_middleware(allowed_origin: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Answer preflights and add CORS headers for the origin given to --enable-cors-header."""

    def headers() -> dict[str, str]:
        return {"Access-Control-Allow-Origin": allowed_origin,
                "Access-Control-Allow-Methods": "POST, GET, DELETE, PUT, PATCH, OPTIONS",
                "Access-Control-Allow-Headers": "Content-Type, Authorization, Comfy-User",
                "Access-Control-Allow-Credentials": "true"}

    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            return web.Response(headers=headers())
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            exc.headers.update(headers())
            raise
        if not response.prepared:
            response.headers.update(headers())
        return response

    return cors


def token_middleware(token: str) -> Callable[..., Awaitable[web.StreamResponse]]:
    """Require the bearer token on every route (header, ?token= or the cookie it sets)."""
    expected = token.encode()

    def matches(candidate: str | None) -> bool:
        return candidate is not None and hmac.compare_digest(candidate.encode(), expected)

    @web.middleware
    async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        from_query = request.query.get(TOKEN_QUERY)
        if (scheme.lower() == "bearer" and matches(value.strip())) or matches(request.cookies.get(TOKEN_COOKIE)):
            return await handler(request)
        if matches(from_query):
            response = await handler(request)
            if not response.prepared:
                response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
            return response
        return _error(401, "unauthorized", "this server requires a token: send 'Authorization: Bearer <token>' "
                                           "(or ?token=<token> from a browser)",
                      **{"WWW-Authenticate": 'Bearer realm="diffloom"'})

    return require_token


def cache_control_middleware() -> Callable[..., Awaitable[web.StreamResponse]]:
    """The editor's code must never be stale; images may be cached."""

    @web.middleware
    async def cache_control(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        if response.prepared or "Cache-Control" in response.headers:
            return response
        path = request.path
        if path == "/" or path.endswith((".html", ".js", ".mjs", ".css")) or path.endswith("index.json"):
            response.headers["Cache-Control"] = "no-cache"
        return response

    return cache_control
