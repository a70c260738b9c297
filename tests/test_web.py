"""The web demo: its endpoints in-process, then end to end in a real headless browser.

The browser test starts the documented command (`cifar-demo`) as a real server
and drives Debian's chromium with Playwright. Without a chromium it skips,
unless CIFAR_REQUIRE_BROWSER=1 (CI sets it, after installing chromium).
"""

import io
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from cifar_utils import models, web
from cifar_utils.data import CLASS_NAMES
from cifar_utils.inference import Classifier

RNG = np.random.default_rng(2)


def png_bytes(size=(40, 30)):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(
        buf, "PNG"
    )
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    keras.utils.set_random_seed(0)
    path = tmp_path_factory.mktemp("web") / "tiny.keras"
    models.build_baseline_cnn(filters=(4, 8, 8), dense_units=8).save(path)
    return path


@pytest.fixture(scope="module")
def client(model_path):
    from starlette.testclient import TestClient

    app = web.create_app(Classifier(model_path), top_k=3, max_upload_mb=0.05)
    with TestClient(app) as c:
        yield c


def test_page_and_health(client, model_path):
    page = client.get("/")
    assert page.status_code == 200 and 'type="file"' in page.text
    assert "0.05 MB" in page.text and "airplane" in page.text
    health = client.get("/healthz").json()
    assert health == {"status": "ok", "model": str(model_path), "format": "keras"}


def test_predict_an_image(client):
    answer = client.post("/api/predict", content=png_bytes())
    assert answer.status_code == 200
    preds = answer.json()["predictions"]
    assert len(preds) == 3 and [p["label"] for p in preds] == [
        CLASS_NAMES[p["class_index"]] for p in preds
    ]
    confidences = [p["confidence"] for p in preds]
    assert confidences == sorted(confidences, reverse=True) and 0 < sum(confidences) <= 1.0001


def test_errors_are_clear_and_the_server_goes_on(client):
    not_image = client.post("/api/predict", content=b"just some text, not a picture")
    assert not_image.status_code == 400 and "not a picture" in not_image.json()["error"]
    empty = client.post("/api/predict", content=b"")
    assert empty.status_code == 400 and "empty" in empty.json()["error"]
    big = client.post("/api/predict", content=b"\0" * 60_000)  # limit is 50,000 bytes
    assert big.status_code == 413 and "larger than the 0.05 MB limit" in big.json()["error"]
    assert client.post("/api/predict", content=png_bytes()).status_code == 200


def test_no_redirect_is_built_from_the_host_header(client):
    answer = client.get("/healthz/", headers={"Host": "evil.example"}, follow_redirects=False)
    assert answer.status_code == 404 and "location" not in answer.headers
    assert "evil.example" not in answer.text


def test_security_headers(client):
    import base64
    import hashlib
    import re

    page = client.get("/")
    assert page.headers["x-content-type-options"] == "nosniff"
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "'unsafe-inline'" not in policy
    script = re.search(r"<script>(.*?)</script>", page.text, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy  # the page's own script is allowed, nothing else
    for answer in (
        client.get("/healthz"),
        client.post("/api/predict", content=b"x"),
        client.get("/nowhere"),
    ):
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_an_image_with_a_broken_exif_block_is_classified(client):
    """Issue 23, item 12: broken EXIF was a 400 for PNG and WebP, ignored for JPEG."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(
        buffer, "PNG", exif=b"Exif\x00\x00garbage!"
    )
    answer = client.post("/api/predict", content=buffer.getvalue())
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == 3


def test_a_form_upload_is_read_as_the_picture_it_holds(client):
    """Issue 23, item 12: what `curl -F file=@cat.png` and an HTML form send."""
    picture = png_bytes()
    form = client.post(
        "/api/predict",
        files={"file": ("cat.png", picture, "image/png")},
        data={"note": "a field before or after the file is ignored"},
    )
    raw = client.post("/api/predict", content=picture)
    assert form.status_code == 200 and form.json() == raw.json()
    empty = client.post(
        "/api/predict",
        data={"note": "no file"},
        headers={"Content-Type": "multipart/form-data; boundary=x"},
    )
    assert empty.status_code == 400 and "no file" in empty.json()["error"]
    # Thousands of tiny parts are not a picture: refused before any MIME parsing.
    parts = b"--x\r\nA: b\r\n\r\n\r\n" * 2000 + b"--x--\r\n"
    many = client.post(
        "/api/predict", content=parts, headers={"Content-Type": "multipart/form-data; boundary=x"}
    )
    assert many.status_code == 400 and "no file" in many.json()["error"]


def test_bad_settings(model_path):
    with pytest.raises(ValueError, match="max_upload_mb"):
        web.create_app(classifier=object(), max_upload_mb=0)
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="max_concurrent must be a whole number >= 1"):
            web.create_app(classifier=object(), max_concurrent=bad)
    with pytest.raises(ValueError, match="top_k must be between 1 and 10; received 11"):
        web.create_app(Classifier(model_path), top_k=11)  # the classifier's own check


# ----------------------------------------------------------------------------- browser


def browser_or_skip():
    chromium = web.find_chromium()
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None:
        if os.environ.get("CIFAR_REQUIRE_BROWSER") == "1":
            pytest.fail("CIFAR_REQUIRE_BROWSER=1 but chromium or playwright is missing")
        pytest.skip("needs Debian's chromium (apt-get install chromium) and playwright")
    return chromium


@pytest.fixture
def server(model_path):
    port = web.free_port()
    cmd = [
        str(Path(sys.executable).with_name("cifar-demo")),
        "--model",
        str(model_path),
        "--port",
        str(port),
        "--top-k",
        "3",
        "--max-upload-mb",
        "0.05",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"cifar-demo exited early:\n{proc.stdout.read()}")
        try:
            urllib.request.urlopen(url + "healthz", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("cifar-demo did not answer within 120 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_upload_in_a_real_browser(server, tmp_path):
    chromium = browser_or_skip()
    from playwright.sync_api import expect, sync_playwright

    picture = tmp_path / "cat.png"
    picture.write_bytes(png_bytes((120, 90)))
    text = tmp_path / "notes.jpg"
    text.write_text("not a picture")
    huge = tmp_path / "huge.png"
    huge.write_bytes(png_bytes((400, 400)))  # ~480 KB, over the 0.05 MB limit
    assert huge.stat().st_size > 50_000

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page()
        page.goto(server)
        expect(page.locator("h1")).to_have_text("What is in this picture?")

        page.set_input_files("#file", str(picture))
        rows = page.locator(".prediction")
        expect(rows).to_have_count(3, timeout=30_000)
        labels = rows.locator(".label").all_inner_texts()
        assert set(labels) <= set(CLASS_NAMES) and len(set(labels)) == 3
        percents = [float(t.rstrip("%")) for t in rows.locator(".pct").all_inner_texts()]
        assert percents == sorted(percents, reverse=True) and sum(percents) <= 100.1
        width = rows.first.locator(".bar").evaluate("e => e.style.width")
        assert width == f"{percents[0]}%"

        page.set_input_files("#file", str(text))
        expect(page.locator("#error")).to_contain_text("not a picture", timeout=30_000)
        expect(rows).to_have_count(0)

        page.set_input_files("#file", str(huge))
        expect(page.locator("#error")).to_contain_text(
            "larger than the 0.05 MB limit", timeout=30_000
        )

        page.set_input_files("#file", str(picture))  # the server keeps serving
        expect(rows).to_have_count(3, timeout=30_000)
        expect(page.locator("#error")).to_have_text("")
        assert rows.locator(".label").all_inner_texts() == labels  # same picture, same answer
        browser.close()


def test_run_in_background_serves_and_stops(model_path):
    import json
    import urllib.error

    app = web.create_app(Classifier(model_path), top_k=2, max_upload_mb=0.05)
    with web.run_in_background(app) as url:
        request = urllib.request.Request(url + "api/predict", data=png_bytes(), method="POST")
        answer = json.load(urllib.request.urlopen(request, timeout=30))
        assert len(answer["predictions"]) == 2
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(
                urllib.request.Request(url + "api/predict", data=b"no", method="POST")
            )
        assert err.value.code == 400
    with pytest.raises(OSError):
        urllib.request.urlopen(url + "healthz", timeout=2)


def test_screenshot_upload(model_path, tmp_path):
    chromium = browser_or_skip()
    picture = tmp_path / "p.png"
    picture.write_bytes(png_bytes())
    app = web.create_app(Classifier(model_path), top_k=4)
    with web.run_in_background(app) as url:
        labels = web.screenshot_upload(url, picture, tmp_path / "shot.png", chromium=chromium)
    assert len(labels) == 4 and set(labels) <= set(CLASS_NAMES)
    with Image.open(tmp_path / "shot.png") as shot:
        assert shot.size == (720, 620)


def test_screenshot_without_a_working_browser_is_a_clear_error(tmp_path):
    pytest.importorskip("playwright")
    fake = tmp_path / "not-a-browser"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="failed"):
        web.screenshot_upload(
            "http://127.0.0.1:9/", tmp_path / "x.png", tmp_path / "s.png", chromium=str(fake)
        )


# ----------------------------------------------------------------------------- memory under upload


@pytest.fixture(scope="module")
def large_rgba_png(tmp_path_factory):
    """9,400 x 9,400 RGBA (88 million pixels, just under PIL's limit): ~350 MB decoded."""
    from PIL import Image

    path = tmp_path_factory.mktemp("large") / "large.png"
    image = Image.new("RGBA", (9_400, 9_400), (40, 90, 160, 200))
    image.paste((220, 180, 40, 255), (2_000, 2_000, 7_000, 7_000))  # something to see
    image.save(path, compress_level=1)
    del image
    return path


@pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads the server's peak memory from /proc"
)
def test_twenty_concurrent_large_uploads_keep_the_servers_memory_bounded(
    model_path, large_rgba_png
):
    from concurrent.futures import ThreadPoolExecutor

    body = large_rgba_png.read_bytes()
    assert len(body) < 5e6
    port = web.free_port()
    cmd = [
        str(Path(sys.executable).with_name("cifar-demo")),
        "--model",
        str(model_path),
        "--port",
        str(port),
        "--top-k",
        "3",
        "--max-upload-mb",
        "5",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, f"cifar-demo exited early:\n{proc.stdout.read()}"
            try:
                urllib.request.urlopen(url + "healthz", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "cifar-demo did not answer within 120 s"
                time.sleep(0.5)

        def upload(_):
            request = urllib.request.Request(url + "api/predict", data=body, method="POST")
            with urllib.request.urlopen(request, timeout=600) as answer:
                return answer.status, json.load(answer)

        with ThreadPoolExecutor(20) as pool:
            answers = list(pool.map(upload, range(20)))
        status = Path(f"/proc/{proc.pid}/status").read_text()
        peak_kb = int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:"))
        )
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(
        "cifar-demo peak memory after 20 concurrent 9,400 x 9,400 RGBA uploads: "
        f"{peak_kb / 1e6:.2f} GB"
    )
    assert [s for s, _ in answers] == [200] * 20  # every request answered
    assert all(len(doc["predictions"]) == 3 for _, doc in answers)
    assert peak_kb < 1.5e6, f"the server's peak memory was {peak_kb / 1e6:.2f} GB"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--max-upload-mb", "inf"],
            "max_upload_mb must be a positive finite number; received inf",
        ),
        (
            ["--max-upload-mb", "nan"],
            "max_upload_mb must be a positive finite number; received nan",
        ),
        (["--port", "70000"], "--port must be from 0 to 65535; received 70000"),
    ],
)
def test_cifar_demo_bad_arguments_are_one_line_and_exit_2(argv, message, capsys):
    """Issue 23, item 11: infinity and a port out of range were tracebacks, NaN a riddle."""
    try:
        code = web.main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("cifar-demo")  # argparse's usage comes first


def _rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory from /proc")
def test_stalled_uploads_and_half_sent_headers_are_dropped(model_path):
    """Issue 23, item 2: 300 uploads stalled one byte short held 9.7 MB each for ever, a
    half-sent header kept its connection, and each aborted upload logged a traceback."""
    import socket

    port = web.free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cifar_utils.web",
            "--model",
            str(model_path),
            "--port",
            str(port),
            "--max-upload-mb",
            "1",
            "--timeout-s",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "the demo did not start"
                time.sleep(0.5)
        kept = socket.create_connection(("127.0.0.1", port))  # keep-alive: a request, then a crumb
        kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(30)
        first = b""
        while not first.endswith(b"}"):  # the whole answer: headers, then the JSON body
            first += kept.recv(4096)
        assert first.startswith(b"HTTP/1.1 200")
        kept.sendall(b"G")
        gone = socket.create_connection(("127.0.0.1", port))  # half an upload, then away
        gone.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc")
        time.sleep(0.5)
        gone.close()
        before = _rss_mb(proc.pid)
        stalled = []
        for _ in range(40):  # each sends all but the last byte of a 1,000,000-byte upload
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n")
            s.sendall(b"\0" * 999_999)
            stalled.append(s)
        for _ in range(5):  # half a request line
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(b"POST /api/pre")
            stalled.append(s)
        time.sleep(1.0)
        held = _rss_mb(proc.pid) - before
        time.sleep(4.0)  # past the 2 s timeout
        answers = []
        for s in [*stalled, kept]:
            s.settimeout(5)
            try:
                answers.append(s.recv(200))
            except ConnectionResetError:
                answers.append(b"<reset>")
            except TimeoutError:
                answers.append(b"<still open>")
            s.close()
        # Every one was answered (408 after the stall, 503 over the cap) or closed: none hangs.
        assert all(
            a == b"" or a == b"<reset>" or a.startswith((b"HTTP/1.1 408", b"HTTP/1.1 503"))
            for a in answers
        ), sorted({a[:20] for a in answers})
        assert any(a.startswith(b"HTTP/1.1 408") for a in answers)
        assert any(a.startswith(b"HTTP/1.1 503") for a in answers)  # over the in-flight cap
        assert answers[-1] in (b"", b"<reset>")  # the keep-alive crumb: closed
        assert held < web.MAX_UPLOADS_IN_FLIGHT * 1 + 100, f"held {held:.0f} MB during the stall"
        page = urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{port}/api/predict", data=png_bytes()),
            timeout=30,
        )
        assert page.status == 200  # the server goes on
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err[-3000:]
    assert "dropped an upload that stalled for 2 s" in err
    assert "a client went away during its upload" in err
