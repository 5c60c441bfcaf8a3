"""Input images for tests: real encoded PNG/JPEG/WEBP bytes, optionally with EXIF, and a local
https server that serves them (and redirects), for URL inputs."""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image as PILImage


def image_bytes(
    width: int = 64, height: int = 48, color=(200, 30, 30), fmt: str = "PNG", exif: bool = False
) -> bytes:
    image = PILImage.new("RGB", (width, height), color)
    out = io.BytesIO()
    options: dict = {}
    if exif:
        data = PILImage.Exif()
        data[0x010F] = "SpyCam"  # Make
        data[0x0131] = "secret-software"  # Software
        options["exif"] = data.tobytes()
    image.save(out, fmt, **options)
    return out.getvalue()


def mask_bytes(width: int = 64, height: int = 48) -> bytes:
    """OpenAI-style mask: the left half fully transparent (edit there), the right half opaque."""
    mask = PILImage.new("RGBA", (width, height), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, width // 2, height))
    out = io.BytesIO()
    mask.save(out, "PNG")
    return out.getvalue()


class ImageServer:
    """Serves `routes` ({path: (status, headers, body)}) on 127.0.0.1, over TLS when given."""

    def __init__(self, routes: dict[str, tuple[int, dict, bytes]], tls=None) -> None:
        self.routes = routes
        self.hits: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # http.server's naming
                server.hits.append(self.path)
                status, headers, body = server.routes.get(self.path, (404, {}, b"missing"))
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
