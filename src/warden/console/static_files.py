"""Static files of the console with long cache lifetimes: vendored files carry their
version in their name, ours a ``?v=`` of their content (``web.asset_version``)."""

from __future__ import annotations

import os
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

_YEAR = "public, max-age=31536000, immutable"


class CachedStaticFiles(StaticFiles):
    def file_response(self, full_path: str | os.PathLike[str], stat_result: os.stat_result, scope: Scope,
                      status_code: int = 200) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers["cache-control"] = _YEAR
        response.headers["x-content-type-options"] = "nosniff"
        return response
