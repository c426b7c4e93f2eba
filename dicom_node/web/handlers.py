"""How the dashboard answers refusals and errors, and the security headers of every response.

:func:`install` registers them on an application. API paths (``/api/...``) and
clients that ask for JSON get ``{"detail": ...}``; browsers get the error page,
or a redirect to the login page when no one is logged in.
"""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response

from dicom_node.errors import InvalidQueryError
from dicom_node.web.deps import RequestTooLarge, current_user
from dicom_node.web.rendering import render
from dicom_node.web.security import Forbidden, LoginRequired

#: Content-Security-Policy of every response: nothing loaded from elsewhere, no framing.
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
)


async def security_headers(request: Request, call_next) -> Response:
    """HTTP middleware: CSP, ``nosniff``, no framing, same-origin referrers; pages not cached.

    References
    ----------
    OWASP HTTP Security Response Headers Cheat Sheet.
    """
    response = await call_next(request)
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.headers.get("content-type", "").startswith("text/html"):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def client_error(request: Request, status: int, message: str) -> Response:
    """A 4xx answer: JSON for the API and JSON clients, else the error page.

    Parameters
    ----------
    request : fastapi.Request
        The refused request.
    status : int
        403, 404 or another 4xx (titled "Bad request").
    message : str
        What the client did wrong.

    Returns
    -------
    starlette.responses.Response
    """
    if request.url.path.startswith("/api/") or request.headers.get("accept", "").startswith(
        "application/json"
    ):
        return JSONResponse({"detail": message}, status_code=status)
    user = None
    if request.session.get("uid") is not None:
        try:
            user = current_user(request)
        except LoginRequired:
            user = None
    title = {403: "Not allowed", 404: "Not found"}.get(status, "Bad request")
    return render(request, "error.html", user, status, title=title, message=message)


async def _login_required(request: Request, exc: LoginRequired) -> Response:
    if request.url.path.startswith("/api/") or request.method != "GET":
        return JSONResponse({"detail": "login required"}, status_code=401)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)


async def _forbidden(request: Request, exc: Forbidden) -> Response:
    return client_error(request, 403, exc.message)


async def _invalid_request(request: Request, exc: RequestValidationError) -> Response:
    # A path id that cannot exist is "not found"; a bad query value is the client's error.
    errors = exc.errors()
    in_path = any(e.get("loc", ("",))[0] == "path" for e in errors)
    status = 404 if in_path else 400
    message = "; ".join(
        f"{'.'.join(str(part) for part in e.get('loc', ())[1:])}: {e.get('msg', 'invalid')}"
        for e in errors
    )
    return client_error(request, status, message)


async def _invalid_query(request: Request, exc: InvalidQueryError) -> Response:
    return client_error(request, 400, str(exc))


async def _too_large(request: Request, exc: RequestTooLarge) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=413)


def install(app: FastAPI) -> None:
    """Register :func:`security_headers` and the exception handlers on ``app``.

    ``LoginRequired`` → 401 (API, non-GET) or a redirect to ``/login?next=...``;
    ``Forbidden`` → 403; a request validation error → 404 when in the path, else
    400; ``InvalidQueryError`` → 400; :class:`~dicom_node.web.deps.RequestTooLarge` → 413.

    Parameters
    ----------
    app : fastapi.FastAPI
        Its session middleware must already be added: this middleware wraps it.
    """
    app.middleware("http")(security_headers)
    # Starlette types a handler as taking any Exception; each of these takes only its own.
    app.add_exception_handler(LoginRequired, _login_required)  # type: ignore[arg-type]
    app.add_exception_handler(Forbidden, _forbidden)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(InvalidQueryError, _invalid_query)  # type: ignore[arg-type]
    app.add_exception_handler(RequestTooLarge, _too_large)  # type: ignore[arg-type]
