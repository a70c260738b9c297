"""Keep TensorFlow's C++ start-up chatter out of notebooks, before TensorFlow is imported.

TensorFlow's C++ runtime writes straight to file descriptor 2, below Python: on a machine
without a GPU every notebook would open with lines such as

    WARNING: All log messages before absl::InitializeLog() is called are written to STDERR
    I0000 00:00:1795832878.367533 8897 port.cc:153] oneDNN custom operations are on. ...
    E0000 00:00:1795832880.703725 8897 cuda_platform.cc:52] failed call to cuInit: ...

They are harmless, but they read like errors to a learner. Two of them (the pre-absl
`I0000` lines and the TFLite interpreter's `INFO:` line) ignore `TF_CPP_MIN_LOG_LEVEL`, so an
environment variable alone cannot hide them. This module does two things, once, when
`cifar_utils` is imported (`cifar_utils/__init__.py` calls `quiet_tensorflow()`):

1. `TF_CPP_MIN_LOG_LEVEL` defaults to "1" (TensorFlow's C++ INFO lines off; warnings and
   errors still shown). A value you set yourself is kept.
2. In a Jupyter kernel only, file descriptor 2 goes through a filter that drops the lines
   matching `NOISE` (each one a known, harmless message, listed below with why) and passes
   every other line through unchanged. Outside a kernel nothing is filtered: a command's
   stderr stays a plain file descriptor, so a crash's last words are never held in a pipe.

Set `CIFAR_TF_LOGS=1` before importing `cifar_utils` to see everything TensorFlow prints.
"""

from __future__ import annotations

import atexit
import os
import re
import select
import sys
import threading

SHOW_ALL_ENV_VAR = "CIFAR_TF_LOGS"

# Each pattern matches one whole line that is known to be harmless. Anything else passes.
NOISE = tuple(re.compile(p) for p in (
    # absl's notice that it was not initialised yet; it precedes every line below.
    r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
    # C++ INFO lines printed before absl is initialised, so TF_CPP_MIN_LOG_LEVEL cannot hide
    # them: oneDNN is on, no CUDA driver, the CPU's instruction sets.
    r"^I\d{4} [\d:.]+\s+\d+ (port|cudart_stub|cpu_feature_guard)\.cc:\d+\] ",
    # cpu_feature_guard's second line ("To enable the following instructions: AVX2 ...").
    r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\.$",
    # No CUDA driver on a CPU-only machine (error 303); `device.describe_devices()` says "GPU: none".
    r"^E\d{4} [\d:.]+\s+\d+ cuda_platform\.cc:\d+\] failed call to cuInit: .*\(303\)$",
    # tf.data's Python side sets an attribute this TensorFlow build's C++ op does not declare;
    # the message itself says unknown attributes are ignored.
    r"^E\d{4} [\d:.]+\s+\d+ node_def_util\.cc:\d+\] NodeDef mentions attribute use_unbounded_threadpool ",
    # The TFLite converter's and interpreter's progress lines (written by C++, not by us).
    r"^fully_quantize: \d+, inference_type: \d+, input_inference_type: \w+, output_inference_type: \w+$",
    r"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.$",
))

_installed = False  # one filter per process, even if this module is reloaded


def is_noise(line: str) -> bool:
    """Whether one line of stderr is a known, harmless TensorFlow message.

    Args:
        line: one line, with or without its newline.

    Returns:
        True when the line matches one of `NOISE`.
    """
    line = line.rstrip("\r\n")
    return any(p.search(line) for p in NOISE)


def _in_jupyter_kernel() -> bool:
    app = sys.modules.get("ipykernel.kernelapp")
    return app is not None and app.IPKernelApp.initialized()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data):]


def _forward(read_fd: int, write_fd: int, idle_seconds: float = 0.2) -> None:
    """Copies lines from `read_fd` to `write_fd`, dropping the noise, until end of file.

    A line without its newline yet is passed on once nothing new has arrived for
    `idle_seconds` (a prompt, a progress bar, ipykernel's own end-of-stream marker), so
    nothing waits on the filter. If writing fails, fd 2 is pointed back at `write_fd`'s
    target when that is still possible, and the pipe is drained so no writer can block.
    """
    pending = b""
    try:
        while True:
            ready, _, _ = select.select([read_fd], [], [], idle_seconds if pending else None)
            if not ready:  # idle with a partial line: pass it on as it is
                _write_all(write_fd, pending)
                pending = b""
                continue
            chunk = os.read(read_fd, 65536)
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            kept = [line + b"\n" for line in lines if not is_noise(line.decode("utf-8", "replace"))]
            if kept:
                _write_all(write_fd, b"".join(kept))
        if pending and not is_noise(pending.decode("utf-8", "replace")):
            _write_all(write_fd, pending)
    except OSError:
        try:
            os.dup2(write_fd, 2)  # give fd 2 back its original target
        except OSError:
            pass
        try:
            while os.read(read_fd, 65536):  # keep draining whatever is still in flight
                pass
        except OSError:
            pass
    finally:
        os.close(read_fd)


def install_filter() -> bool:
    """Routes file descriptor 2 through the noise filter for the rest of the process.

    Idempotent. At exit the original descriptor is restored and the filter drains, so
    nothing written before exit is lost.

    Returns:
        True if the filter is (now) installed.
    """
    global _installed
    if _installed or getattr(sys, "_cifar_utils_tf_log_filter", False):
        return True
    try:
        original = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
    except OSError:  # no usable descriptor 2 (some embedded interpreters): leave it alone
        return False
    thread = threading.Thread(target=_forward, args=(read_fd, original), name="tf-log-filter",
                              daemon=True)
    thread.start()

    def restore():
        os.dup2(original, 2)  # closes the pipe's last write end: the thread sees end of file
        thread.join(timeout=2)

    atexit.register(restore)
    _installed = True
    sys._cifar_utils_tf_log_filter = True
    return True


def quiet_tensorflow() -> None:
    """Applies this module's two measures; call before TensorFlow is imported.

    Does nothing when the environment variable `CIFAR_TF_LOGS` is "1".
    """
    if os.environ.get(SHOW_ALL_ENV_VAR, "").strip() == "1":
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if _in_jupyter_kernel():
        install_filter()
