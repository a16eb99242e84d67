"""The query routes' fixed cost: FastAPI resolves every dependency of a route on every request
(about 20 us apiece on a 2-core machine), and these routes answer hundreds of requests a
second, so they take their shared parts as one (service/deps.py, `QueryToolsDep`)."""

from __future__ import annotations

from fastapi.dependencies.models import Dependant

from service.app import create_app
from service.routing import iter_route_contexts
from tests.service.conftest import make_settings

QUERY_ROUTES = {"/embed", "/search", "/classify", "/neighbours/{item_id:path}"}


def _resolved(dependant: Dependant) -> list[str]:
    """Every dependency FastAPI resolves for a request, sub-dependencies included."""
    out = []
    for sub in dependant.dependencies:
        out.append(getattr(sub.call, "__name__", type(sub.call).__name__))
        out += _resolved(sub)
    return out


def test_a_query_route_resolves_its_guard_its_tools_and_its_registry_only(tmp_path,
                                                                          models_template):
    app = create_app(make_settings(tmp_path, models_template), enqueue=lambda j: None)
    seen = set()
    for route in iter_route_contexts(app.routes):
        path = getattr(route, "path", "")
        root = path.removeprefix("/collections/{collection}")
        if root not in QUERY_ROUTES:
            continue
        seen.add(path)
        # The guard (require_read and the bearer scheme it reads), the tools, the registry;
        # a collection's routes also check the collection's name.
        most = 4 if path == root else 5
        names = _resolved(route.dependant)
        assert len(names) <= most, (path, names)
    assert len(seen) == 2 * len(QUERY_ROUTES), seen
