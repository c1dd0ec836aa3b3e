"""GET /openapi.json: the OpenAPI 3.1 description of the API, served as kept in the repository.

The description is ``service/openapi.json``, beside this module, so the image carries it with
the code. It is read once, at import: a build that lost the file fails at start-up, not on the
first request for it. ``tests/test_openapi.py`` checks that it agrees with the routes and fuzzes
the service against it.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response

DESCRIPTION_FILE = Path(__file__).with_name("openapi.json")
DESCRIPTION = DESCRIPTION_FILE.read_bytes()

bp = Blueprint("openapi", __name__)


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(DESCRIPTION, mimetype="application/json")
