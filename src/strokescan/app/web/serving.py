"""waitress as ``strokescan serve`` runs it: the request body limit enforced from the Content-Length header before
any of the body is read, answered in JSON like every other API error."""

from __future__ import annotations

import json

import waitress.parser
from flask import Flask
from waitress.server import create_server
from waitress.utilities import RequestEntityTooLarge


class JsonRequestEntityTooLarge(RequestEntityTooLarge):
    """waitress's 413, as ``{"error": ...}`` with the app's no-store and nosniff headers."""

    def to_response(self, ident=None):
        body = json.dumps({"error": "the upload is over the server's size limit"}).encode()
        headers = [("Content-Type", "application/json"), ("Cache-Control", "no-store"),
                   ("X-Content-Type-Options", "nosniff")]
        return f"{self.code} {self.reason}", headers, body


def make_server(app: Flask, host: str, port: int, threads: int = 8):
    """A waitress server for ``app`` whose body limit is the app's (``MAX_CONTENT_LENGTH``): a request that
    declares more is refused after its headers, before its body is read."""
    waitress.parser.RequestEntityTooLarge = JsonRequestEntityTooLarge  # the class the parser raises
    return create_server(app, host=host, port=port, threads=threads, ident="strokescan",
                         max_request_body_size=app.config["MAX_CONTENT_LENGTH"] + 1)
