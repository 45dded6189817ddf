"""requirements/lock-gateway.txt (the gateway image's packages) and lock-gateway-litellm.txt
(what the gateway-litellm image adds): current with the full lock and pyproject.toml, pinned as
in the full lock, disjoint, and free of the model-side stack. (That the gateway serves on
exactly these sets is test_containers.py: the images have nothing else.)"""

from __future__ import annotations

import importlib.util

from deploy_render import REPO

spec = importlib.util.spec_from_file_location("gateway_lock", REPO / "deploy" / "gateway_lock.py")
gateway_lock = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gateway_lock)


def test_the_gateway_locks_are_current():
    for path, text in gateway_lock.render().items():
        assert path.read_text() == text, f"{path.name} is stale: run .venv/bin/python deploy/gateway_lock.py"


def test_gateway_lock_is_a_subset_of_the_full_lock_without_the_model_stack():
    full = gateway_lock.read_lock(gateway_lock.FULL_LOCK)
    sub = gateway_lock.read_lock(gateway_lock.GATEWAY_LOCK)
    assert sub and all(full[name] == line for name, line in sub.items())
    assert not set(sub) & (gateway_lock.FORBIDDEN | gateway_lock.REPORTS_ONLY)
    # What the serving path needs: web stack, Postgres, Redis (incl. its marker dependency on the
    # images' Python 3.11.2), the router's stack; litellm is the other file's.
    for needed in ("fastapi", "uvicorn", "uvloop", "httptools", "psycopg", "psycopg-binary", "redis",
                   "async-timeout", "scikit-learn", "skops", "sqlalchemy"):
        assert needed in sub, needed
    litellm = gateway_lock.read_lock(gateway_lock.LITELLM_LOCK)
    assert {"litellm", "openai", "botocore", "tokenizers"} <= set(litellm)
    assert not set(litellm) & set(sub) and all(full[name] == line for name, line in litellm.items())
    assert not set(litellm) & gateway_lock.FORBIDDEN


def test_closure_follows_extras_and_markers_for_the_images_python():
    from packaging.requirements import Requirement

    names = gateway_lock.closure([Requirement("uvicorn[standard]"), Requirement("redis")])
    assert {"uvloop", "httptools", "websockets", "async-timeout"} <= names
    assert "uvloop" not in gateway_lock.closure([Requirement("uvicorn")])
