"""The standard-library HTTP helper and multipart builder the command line and the local
stack's launcher use, against a real HTTP server on localhost."""

import email.parser
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.http_calls import FilePart, HttpError, multipart, request


class _Echo(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def _answer(self, status, body, kind="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/missing":
            self._answer(404, json.dumps({"title": "Not Found", "status": 404,
                                          "detail": "no item 'x'"}).encode(),
                         "application/problem+json")
        elif self.path == "/broken":
            self._answer(502, b"bad gateway text", "text/plain")
        elif self.path == "/empty":
            self._answer(200, b"")
        else:
            self._answer(200, json.dumps({"key": self.headers.get("Authorization")}).encode())

    def do_POST(self):
        raw = self.rfile.read(int(self.headers["Content-Length"]))
        head = f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode()
        message = email.parser.BytesParser().parsebytes(head + raw)
        parts = [{"name": p.get_param("name", header="content-disposition"),
                  "filename": p.get_filename(), "type": p.get_content_type(),
                  "data": p.get_payload(decode=True).decode()} for p in message.get_payload()]
        self._answer(200, json.dumps(parts).encode())


@pytest.fixture(scope="module")
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def test_answers_and_errors(server):
    assert request("GET", f"{server}/", key="k1") == {"key": "Bearer k1"}
    assert request("GET", f"{server}/") == {"key": None}
    assert request("GET", f"{server}/empty") is None
    with pytest.raises(HttpError) as missing:
        request("GET", f"{server}/missing")
    assert missing.value.status == 404 and missing.value.detail == "no item 'x'"
    assert str(missing.value).startswith(f"GET {server}/missing -> 404: {{")
    with pytest.raises(HttpError) as broken:
        request("GET", f"{server}/broken")
    assert broken.value.detail == broken.value.reason == "Bad Gateway"
    assert str(broken.value) == f"GET {server}/broken -> 502: bad gateway text"


def test_multipart_fields_then_files(server, tmp_path):
    (tmp_path / "a.png").write_bytes(b"png bytes")
    body, kind = multipart([("prefix", "added/"), ("k", "5")],
                           [FilePart.of("files", tmp_path / "a.png"),
                            FilePart("archive", "b.zip", b"zip bytes")])
    assert kind.startswith("multipart/form-data; boundary=")
    assert request("POST", f"{server}/echo", body=body, content_type=kind) == [
        {"name": "prefix", "filename": None, "type": "text/plain", "data": "added/"},
        {"name": "k", "filename": None, "type": "text/plain", "data": "5"},
        {"name": "files", "filename": "a.png", "type": "image/png", "data": "png bytes"},
        {"name": "archive", "filename": "b.zip", "type": "application/octet-stream",
         "data": "zip bytes"}]
