"""requirements/lock-gateway.txt, the gateway-only image's packages: current with the full lock
and pyproject.toml, pinned as in the full lock, and free of the model-side stack. (That the
gateway serves on exactly this set is test_containers.py: the image has nothing else.)"""

from __future__ import annotations

import importlib.util

from deploy_render import REPO

spec = importlib.util.spec_from_file_location("gateway_lock", REPO / "deploy" / "gateway_lock.py")
gateway_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gateway_lock)


def test_the_gateway_lock_is_current():
    assert gateway_lock.GATEWAY_LOCK.read_text() == gateway_lock.render(), \
        "requirements/lock-gateway.txt is stale: run .venv/bin/python deploy/gateway_lock.py"


def test_gateway_lock_is_a_subset_of_the_full_lock_without_the_model_stack():
    full = gateway_lock.read_lock(gateway_lock.FULL_LOCK)
    sub = gateway_lock.read_lock(gateway_lock.GATEWAY_LOCK)
    assert sub and all(full[name] == line for name, line in sub.items())
    assert not set(sub) & (gateway_lock.FORBIDDEN | gateway_lock.REPORTS_ONLY)
    # What the serving path needs: web stack, Postgres, Redis (incl. its marker dependency on the
    # images' Python 3.11.2), litellm, the router's stack.
    for needed in ("fastapi", "uvicorn", "uvloop", "httptools", "psycopg", "psycopg-binary", "redis",
                   "async-timeout", "litellm", "scikit-learn", "skops", "sqlalchemy"):
        assert needed in sub, needed


def test_closure_follows_extras_and_markers_for_the_images_python():
    from packaging.requirements import Requirement

    names = gateway_lock.closure([Requirement("uvicorn[standard]"), Requirement("redis")])
    assert {"uvloop", "httptools", "websockets", "async-timeout"} <= names
    assert "uvloop" not in gateway_lock.closure([Requirement("uvicorn")])
