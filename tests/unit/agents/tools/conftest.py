"""A loopback HTTP(S) server for the egress tests: a raw ASGI app under uvicorn
in a background thread, with routes for echoing, redirects, big and slow bodies."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs

import orjson
import pytest
import uvicorn


async def _app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    path = scope["path"]
    status, headers, payload = 200, [(b"content-type", b"application/json")], b""
    if path == "/echo":
        payload = orjson.dumps({
            "method": scope["method"],
            "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
            "body": body.decode(),
            "sni": scope.get("extensions", {}).get("tls", {}).get("server_name"),
        })
    elif path == "/redirect":
        status = int(query.get("status", "302"))
        headers = [(b"location", query["to"].encode())]
    elif path == "/loop":
        status, headers = 302, [(b"location", b"/loop")]
    elif path == "/big":
        headers = [(b"content-type", b"text/plain; charset=utf-8")]
        n = int(query["n"])
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for _ in range(n // 65536):
            await send({"type": "http.response.body", "body": b"a" * 65536, "more_body": True})
        await send({"type": "http.response.body", "body": b"a" * (n % 65536)})
        return
    elif path == "/slow":
        await asyncio.sleep(float(query["s"]))
        payload = b'{"slow": true}'
    elif path == "/binary":
        headers, payload = [(b"content-type", b"image/png")], b"\x89PNG" + b"\x00" * 100
    elif path == "/latin1":
        headers, payload = [(b"content-type", b"text/plain; charset=iso-8859-1")], "café".encode("latin-1")
    else:
        status, payload = 404, b'{"error": "not found"}'
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


class LoopbackServer:
    def __init__(self, ssl_files: tuple[str, str] | None = None) -> None:
        kwargs = {}
        if ssl_files:
            kwargs = {"ssl_certfile": ssl_files[0], "ssl_keyfile": ssl_files[1]}
        config = uvicorn.Config(_app, host="127.0.0.1", port=0, log_config=None, access_log=False,
                                lifespan="off", loop="asyncio", timeout_graceful_shutdown=1,
                                **kwargs)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Self:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            threading.Event().wait(0.01)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def loopback() -> Iterator[LoopbackServer]:
    with LoopbackServer() as server:
        yield server


def _self_signed(tmp: Path) -> tuple[str, str, str]:
    """A CA and a server certificate for "localhost" (what SNI must carry)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "warden test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            # Only the name: a client that verified against the IP it connects to would fail.
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


@pytest.fixture(scope="module")
def tls_loopback(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LoopbackServer, ssl.SSLContext]]:
    ca, cert, key = _self_signed(tmp_path_factory.mktemp("tls"))
    with LoopbackServer((cert, key)) as server:
        yield server, ssl.create_default_context(cafile=ca)


