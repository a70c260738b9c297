"""A small local web page: upload a picture, see the model's top-k classes as bars.

Start it with one command (`cifar-demo`, installed by `pip install -e .`):

    cifar-demo                           # the trained or shipped model, http://127.0.0.1:8000
    cifar-demo --model exports/model_int8.tflite --port 8080 --max-upload-mb 5

Why a small ASGI app (Starlette, served by uvicorn) rather than Gradio: the
whole demo is one page and two endpoints, so this file is all there is to
read; it installs three small packages instead of Gradio's hundred-odd; the
page works offline (no scripts or fonts from the internet); and every
behaviour the tests check (the upload limit, the error text) is ours to set.

Endpoints:

- `GET /`: the page (plain HTML, CSS and a few lines of JavaScript);
- `POST /api/predict`: the image file as the request body, or as the file field of a
  form upload (`curl -F file=@cat.jpg`); answers
  `{"predictions": [{"label", "class_index", "confidence"}, ...]}`, or
  `{"error": "..."}` with status 400 (not an image), 408 (the upload stalled), 413 (too
  large) or 503 (too many uploads at once);
- `GET /healthz`: `{"status": "ok", "model": ...}`.

Against slow or hostile clients (`server_config`): uploads idle for `--timeout-s` are
dropped, request headers must arrive within that time, at most `MAX_UPLOADS_IN_FLIGHT`
uploads are held at once and 64 connections served.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import email.parser
import email.policy
import hashlib
import html
import socket
import sys
import threading
import time

from cifar_utils import checks
from cifar_utils.images import ImageError
from cifar_utils.inference import Classifier

DEFAULT_MAX_UPLOAD_MB = 10.0
# Stop reading an oversized upload here; up to it we read and discard the rest,
# so the browser gets the 413 message instead of a reset connection.
DRAIN_LIMIT_BYTES = 64 * 2**20
# A client that stops sending is dropped: an upload after this many seconds without a
# byte, a connection whose request headers have not all arrived this long after it opened.
CLIENT_TIMEOUT_S = 15.0
# Uploads read at once; beyond it a request is answered 503 at once (each holds up to
# `max_upload_mb` of memory until it is classified or dropped).
MAX_UPLOADS_IN_FLIGHT = 32

PAGE = (
    """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CIFAR-10 classifier</title>
<style>
"""
    "  body {{ font-family: system-ui, sans-serif; max-width: 40rem; margin: 2rem auto; "
    "padding: 0 1rem; }}\n"
    "  #preview {{ max-width: 12rem; max-height: 12rem; image-rendering: pixelated; "
    "display: none; margin: 1rem 0; }}\n"
    "  .row {{ display: grid; grid-template-columns: 7rem 1fr 4rem; gap: .5rem; "
    "align-items: center; margin: .3rem 0; }}\n"
    """  .bar {{ background: #1f77b4; height: 1.1rem; border-radius: 3px; }}
  .track {{ background: #eee; border-radius: 3px; }}
  #error {{ color: #b00020; font-weight: 600; }}
  small {{ color: #666; }}
</style>
</head>
<body>
<h1>What is in this picture?</h1>
<p>Upload a photo: the model answers with its {top_k} most likely CIFAR-10 classes
({classes}). Files up to {max_mb:g} MB.</p>
<input type="file" id="file" accept="image/*">
<img id="preview" alt="your picture">
<div id="status" role="status"></div>
<div id="error" role="alert"></div>
<div id="result"></div>
<p><small>Model: {model}</small></p>
<script>
const file = document.getElementById("file");
const result = document.getElementById("result");
const error = document.getElementById("error");
const status = document.getElementById("status");
const preview = document.getElementById("preview");
file.addEventListener("change", async () => {{
  const f = file.files[0];
  result.innerHTML = ""; error.textContent = "";
  if (!f) return;
  preview.src = URL.createObjectURL(f); preview.style.display = "block";
  status.textContent = "Classifying " + f.name + "...";
  try {{
    const response = await fetch("api/predict", {{
      method: "POST", body: f,
      headers: {{"Content-Type": "application/octet-stream"}},
    }});
    const answer = await response.json();
    status.textContent = "";
    if (!response.ok) {{
      preview.style.display = "none";
      error.textContent = answer.error || ("Error " + response.status);
      return;
    }}
    for (const p of answer.predictions) {{
      const pct = (100 * p.confidence).toFixed(1);
      const row = document.createElement("div");
      row.className = "row prediction";
      row.innerHTML = '<span class="label"></span><div class="track"><div class="bar"></div></div>'
        + '<span class="pct"></span>';
      row.querySelector(".label").textContent = p.label;
      row.querySelector(".bar").style.width = pct + "%";
      row.querySelector(".pct").textContent = pct + "%";
      result.appendChild(row);
    }}
  }} catch (e) {{
    status.textContent = "";
    error.textContent = "The server did not answer: " + e;
  }}
}});
</script>
</body>
</html>
"""
)


def create_app(
    classifier=None,
    model=None,
    top_k=5,
    max_upload_mb=DEFAULT_MAX_UPLOAD_MB,
    max_concurrent=1,
    timeout_s=CLIENT_TIMEOUT_S,
):
    """The demo as an ASGI application.

    Args:
        classifier: a ready `inference.Classifier`. Defaults to None: one is
            loaded from `model`.
        model: a model path for `Classifier`. Defaults to None: the trained
            or shipped model.
        top_k: classes shown per image. Defaults to 5.
        max_upload_mb: the largest upload accepted, in megabytes (10^6 bytes).
            Defaults to 10.
        max_concurrent: uploads decoded and classified at once; the others wait
            their turn. Each large picture takes about its decoded size in memory
            (350 MB for 9,400 x 9,400 RGBA), so this bounds the server's peak.
            Defaults to 1: `cifar-demo` stays under 1.5 GB with 20 such uploads at once
            (`tests/test_web.py`), small pictures take milliseconds each.

        timeout_s: an upload that sends nothing for this many seconds is dropped (408).
            Defaults to `CLIENT_TIMEOUT_S`; `server_config` applies it to request headers.

    Returns:
        A `starlette.applications.Starlette` app that adds `X-Content-Type-Options:
        nosniff` to every response; serve it with uvicorn.
    """
    import asyncio

    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, JSONResponse
    from starlette.routing import Route

    checks.number(max_upload_mb, "max_upload_mb", positive=True)
    checks.number(timeout_s, "timeout_s", positive=True)
    max_concurrent = checks.whole_number(max_concurrent, "max_concurrent", minimum=1)
    decode_slots = asyncio.Semaphore(max_concurrent)  # uploads decoded at once; the rest wait
    clf = classifier if classifier is not None else Classifier(model)
    top_k = clf.check_top_k(top_k)
    page = _render_page(clf, top_k, max_upload_mb)
    security_headers = _security_headers(page)

    async def index(request):
        return HTMLResponse(page, headers=security_headers)

    async def health(request):
        return JSONResponse({"status": "ok", "model": str(clf.path), "format": clf.format})

    predict = _predict_endpoint(clf, top_k, max_upload_mb, decode_slots, timeout_s)
    app = Starlette(
        routes=[
            Route("/", index),
            Route("/healthz", health),
            Route("/api/predict", predict, methods=["POST"]),
        ],
        middleware=[Middleware(_NoSniff)],
    )
    # No redirects: Starlette's "/healthz/" -> "/healthz" redirect is built from the Host
    # header the client sent, so anyone could make the demo point a browser elsewhere.
    app.router.redirect_slashes = False
    return app


def _render_page(clf, top_k, max_upload_mb) -> str:
    """`PAGE` filled in for this classifier, every inserted text HTML-escaped."""
    return PAGE.format(
        top_k=top_k,
        classes=html.escape(", ".join(clf.class_names)),
        max_mb=max_upload_mb,
        model=html.escape(f"{clf.format}, {clf.path or 'in memory'}"),
    )


def _security_headers(page: str) -> dict:
    """The headers of the page's response (nosniff is added to every response by `_NoSniff`).

    The page's only script and style are inline: the Content-Security-Policy allows exactly
    those (by hash), the preview of the chosen file (blob:), and requests to this server;
    nothing else.
    """

    def _sha256(tag):
        body = page.split(f"<{tag}>", 1)[1].split(f"</{tag}>", 1)[0]
        return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"

    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src {_sha256('script')}; style-src {_sha256('style')}; "
            "img-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "Referrer-Policy": "no-referrer",
    }


async def _read_upload(request, max_bytes: int, idle_s: float) -> tuple[bytearray, int]:
    """The request body, up to `max_bytes`, and its full size (`size > max_bytes`: too large).

    Beyond `max_bytes` the rest is read and discarded up to `DRAIN_LIMIT_BYTES`, so the
    browser gets the 413 answer instead of a reset connection.

    Raises:
        TimeoutError: no byte arrived for `idle_s` seconds.
        starlette.requests.ClientDisconnect: the client went away.
    """
    import asyncio

    body, size = bytearray(), 0
    chunks = request.stream().__aiter__()
    while True:
        try:
            chunk = await asyncio.wait_for(chunks.__anext__(), idle_s)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:  # the builtin TimeoutError from Python 3.11 on
            raise TimeoutError(f"no data for {idle_s:g} s") from None
        size += len(chunk)
        if size <= max_bytes:
            body += chunk
        elif size > DRAIN_LIMIT_BYTES:
            break
    return body, size


# A form upload holds the picture and perhaps a few fields; more parts than this is not a
# picture being sent, and MIME parsing of many tiny parts takes seconds of CPU.
MAX_FORM_PARTS = 8


def _form_file(content_type: str, body: bytes) -> bytes | None:
    """The first file of a `multipart/form-data` body, or None if it holds none.

    The body is already within the upload limit; Python's own MIME parser splits it (in a
    worker thread: it is CPU work) once the body has at most `MAX_FORM_PARTS` parts.
    """
    boundary = content_type.partition("boundary=")[2].split(";")[0].strip().strip('"')
    if not boundary or bytes(body).count(b"--" + boundary.encode("latin-1", "replace")) > (
        MAX_FORM_PARTS + 1
    ):
        return None
    head = b"Content-Type: " + content_type.encode("latin-1", "replace") + b"\r\n\r\n"
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + bytes(body))
    if not message.is_multipart():
        return None
    for part in message.iter_parts():
        if part.get_filename() is not None:
            return part.get_payload(decode=True) or None
    return None


def _predict_endpoint(clf, top_k, max_upload_mb, decode_slots, idle_s=CLIENT_TIMEOUT_S):
    """The `POST /api/predict` handler: one uploaded image in, its top-k classes out."""
    from starlette.responses import JSONResponse

    in_flight = [0]  # uploads read or waiting to be classified (one event loop: no lock)
    max_bytes = int(max_upload_mb * 1e6)

    async def predict(request):
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > DRAIN_LIMIT_BYTES:
            return JSONResponse({"error": _too_large(max_upload_mb)}, status_code=413)
        if in_flight[0] >= MAX_UPLOADS_IN_FLIGHT:
            busy = "The demo is busy with other uploads: try again in a moment."
            return JSONResponse({"error": busy}, status_code=503, headers={"Retry-After": "5"})
        in_flight[0] += 1
        try:  # counted until answered: each holds up to max_bytes until then
            error, status, preds = await _classify_upload(
                request, clf, top_k, max_bytes, max_upload_mb, decode_slots, idle_s
            )
        finally:
            in_flight[0] -= 1
        if error is not None:
            return JSONResponse({"error": error}, status_code=status)
        return JSONResponse(
            {
                "predictions": [
                    {"label": p.label, "class_index": p.class_index, "confidence": p.confidence}
                    for p in preds
                ]
            }
        )

    return predict


def _too_large(max_upload_mb) -> str:
    return (
        f"The file is larger than the {max_upload_mb:g} MB limit. Shrink it or choose another "
        "picture (the model only looks at 32 x 32 pixels anyway)."
    )


async def _classify_upload(request, clf, top_k, max_bytes, max_upload_mb, decode_slots, idle_s):
    """(error message, HTTP status, None) for a bad upload, else (None, 200, predictions)."""
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect

    try:
        body, size = await _read_upload(request, max_bytes, idle_s)
    except TimeoutError:
        print(f"cifar-demo: dropped an upload that stalled for {idle_s:g} s", file=sys.stderr)
        return "The upload stalled: send it again.", 408, None
    except ClientDisconnect:
        print("cifar-demo: a client went away during its upload", file=sys.stderr)
        return "The client went away.", 400, None
    if size > max_bytes:
        return _too_large(max_upload_mb), 413, None
    if size == 0:
        return "The upload was empty: choose an image file.", 400, None
    content_type = request.headers.get("content-type", "")
    try:
        async with decode_slots:  # bounds the memory: a large image decodes to ~350 MB
            if content_type.lower().startswith("multipart/form-data"):  # curl -F, HTML forms
                body = await run_in_threadpool(_form_file, content_type, body)
                if body is None:
                    no_file = "The form held no file: send the picture as a file field"
                    return f"{no_file} (curl -F file=@cat.jpg).", 400, None
            preds = await run_in_threadpool(lambda: clf.predict([bytes(body)], top_k=top_k)[0])
    except ImageError as err:
        return f"That file is not a picture the model can read: {err}.", 400, None
    return None, 200, preds


class _NoSniff:
    """ASGI middleware: every response says `X-Content-Type-Options: nosniff`."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        async def send_with_header(message):
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() != b"x-content-type-options"
                ]
                message = {
                    **message,
                    "headers": headers + [(b"x-content-type-options", b"nosniff")],
                }
            await send(message)

        await self.app(scope, receive, send_with_header if scope["type"] == "http" else send)


def server_config(app, host="127.0.0.1", port=8000, timeout_s=CLIENT_TIMEOUT_S):
    """The uvicorn configuration of the demo: what it needs against slow or stalled clients.

    Besides the upload timeout of `create_app`: request headers must arrive within
    `timeout_s` of connecting (`_TimedHeaders`), idle keep-alive connections close after 5 s,
    and at most 64 connections are served at once (the rest get 503).
    """
    import uvicorn

    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        http=_timed_headers(timeout_s),
        timeout_keep_alive=5,
        limit_concurrency=64,
    )


def _timed_headers(timeout_s):
    """uvicorn's h11 protocol, closing a connection whose headers have not all arrived in time.

    uvicorn bounds the size of unfinished headers but not their time: a client that sends
    half a request line keeps its connection, and a slot of `limit_concurrency`, forever.
    """
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class _TimedHeaders(H11Protocol):
        """Closes the connection when a request's headers have not all arrived in time:
        `timeout_s` after it opened, or after the previous response (keep-alive)."""

        def connection_made(self, transport):
            super().connection_made(transport)
            self._header_timer = None
            self._arm()

        def on_response_complete(self):
            super().on_response_complete()
            self._arm()

        def connection_lost(self, exc):
            if self._header_timer is not None:
                self._header_timer.cancel()
            super().connection_lost(exc)

        def _arm(self):
            if self._header_timer is not None:
                self._header_timer.cancel()
            self._header_timer = self.loop.call_later(timeout_s, self._headers_too_slow)

        def _headers_too_slow(self):
            self._header_timer = None
            # IDLE: h11 has not seen a whole request line and headers since the last response.
            if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
                self.transport.close()

    return _TimedHeaders


def free_port(host="127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the system picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_in_background(app, host="127.0.0.1", port=None, timeout=30):
    """Serves an app from a background thread, for a notebook or a script.

        with web.run_in_background(web.create_app()) as url:
            ...  # open url in a browser, or send requests to it

    Args:
        app: an ASGI app (`create_app`).
        host: the address. Defaults to "127.0.0.1" (this machine only).
        port: the port. Defaults to None: a free one.
        timeout: seconds to wait for the server to start. Defaults to 30.

    Yields:
        The page's address, "http://host:port/".
    """
    import uvicorn

    if port is None:
        port = free_port(host)
    server = uvicorn.Server(server_config(app, host, port))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(
                f"the demo server did not start on {host}:{port} (is the port in use?)"
            )
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout)


def find_chromium():
    """The path of a Chromium or Chrome browser on this machine, or None."""
    import shutil

    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def screenshot_upload(url, image_path, save_to, chromium=None, width=720, height=620):
    """Opens the demo in headless Chromium, uploads a picture, saves a screenshot.

    Runs Playwright in a worker thread, so it also works inside Jupyter (whose
    event loop Playwright's synchronous API refuses to share).

    Args:
        url: the page's address (`run_in_background` yields it).
        image_path: the picture to upload.
        save_to: the PNG to write.
        chromium: the browser executable. Defaults to None: `find_chromium()`.
        width: window width in pixels. Defaults to 720.
        height: window height in pixels. Defaults to 620.

    Returns:
        The labels shown, most likely first.

    Raises:
        RuntimeError: when Playwright or a Chromium browser is missing (the
            message says how to install them) or the browser fails.
    """
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    chromium = chromium or find_chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        raise RuntimeError("screenshots need Playwright: pip install playwright") from None
    if chromium is None:
        raise RuntimeError("no Chromium browser found: on Debian/Ubuntu, apt-get install chromium")
    save_to = Path(save_to)
    save_to.parent.mkdir(parents=True, exist_ok=True)

    def shoot():
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True)
            try:
                page = browser.new_page(viewport={"width": width, "height": height})
                page.goto(url)
                page.set_input_files("#file", str(image_path))
                page.locator(".prediction, #error:not(:empty)").first.wait_for(timeout=30_000)
                page.screenshot(path=str(save_to))
                return page.locator(".prediction .label").all_inner_texts()
            finally:
                browser.close()

    from playwright.sync_api import Error as PlaywrightError

    with ThreadPoolExecutor(1) as pool:
        try:
            return pool.submit(shoot).result()
        except PlaywrightError as err:  # the browser would not start, or the page failed
            raise RuntimeError(f"the browser at {chromium} failed: {err}") from err


def main(argv=None) -> int:
    """`cifar-demo`: serve the page with uvicorn until interrupted (Ctrl+C)."""
    parser = argparse.ArgumentParser(
        prog="cifar-demo", description="Serve the CIFAR-10 upload-and-classify page."
    )
    parser.add_argument(
        "--model",
        help="a .keras file, a SavedModel folder or a .tflite file (default: trained or shipped)",
    )
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1: this machine only)",
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per image (default 5)")
    parser.add_argument(
        "--max-upload-mb",
        type=float,
        default=DEFAULT_MAX_UPLOAD_MB,
        help=f"largest upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})",
    )
    parser.add_argument(
        "--max-concurrent",
        type=int,
        default=1,
        help="uploads decoded at once; each large picture takes ~350 MB (default 1)",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=CLIENT_TIMEOUT_S,
        help="drop a client that sends nothing for this long (default %(default)g s)",
    )
    args = parser.parse_args(argv)
    if not 0 < args.timeout_s < float("inf"):
        parser.error(f"--timeout-s must be a positive number of seconds; received {args.timeout_s}")
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be from 0 to 65535; received {args.port}")
    # Pillow keeps images in 16 MB blocks, which glibc serves from per-thread heaps and keeps
    # after they are freed: each worker thread would hold on to its largest picture (6 GB
    # for 20 threads in a measurement). 64 MB blocks are mapped and unmapped directly.
    from PIL import Image

    Image.core.set_block_size(64 << 20)
    try:
        app = create_app(
            model=args.model,
            top_k=args.top_k,
            max_upload_mb=args.max_upload_mb,
            max_concurrent=args.max_concurrent,
            timeout_s=args.timeout_s,
        )
    except ValueError as err:
        print(f"cifar-demo: {err}", file=sys.stderr)
        return 2
    import uvicorn

    print(f"Serving on http://{args.host}:{args.port}  (Ctrl+C stops)", flush=True)
    uvicorn.Server(server_config(app, args.host, args.port, args.timeout_s)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
