"""Offline helpers for tests/deploy: render the kustomizations, interpolate the compose file,
read Dockerfiles and their .dockerignore files. No cluster, no Docker engine, no network.

The kustomize renderer covers only what deploy/k8s uses (resources, namespace,
configMapGenerator, secretGenerator, images) and refuses any other kustomization key, so a
patch added later fails loudly here instead of being silently ignored. Generated ConfigMaps
and Secrets keep their plain names (kustomize adds a content hash and rewrites every
reference to it; the references stay consistent either way). Where ``kubectl`` is on PATH, a
test compares this renderer with ``kubectl kustomize``.
"""

from __future__ import annotations

import base64
import copy
import fnmatch
import re
from pathlib import Path
from typing import Any, Iterator

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
COMPOSE_FILE = DEPLOY / "compose.yaml"
DOCKER = DEPLOY / "docker"

SUPPORTED_KUSTOMIZE_KEYS = {"apiVersion", "kind", "resources", "namespace", "configMapGenerator",
                            "secretGenerator", "generatorOptions", "images"}
CLUSTER_SCOPED = {"Namespace", "PersistentVolume", "StorageClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition", "PriorityClass", "RuntimeClass", "IngressClass",
                  "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"}
POD_OWNERS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}


# --------------------------------------------------------------------------- kustomize

def _load_docs(path: Path) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for d in docs:
        if not isinstance(d, dict) or "kind" not in d or "apiVersion" not in d:
            raise ValueError(f"{path}: every document must be a Kubernetes object with apiVersion and kind")
    return docs


def _kv_lines(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if "=" not in line:
            raise ValueError(f"{path}: not KEY=VALUE: {line!r}")
        k, v = line.split("=", 1)
        out[k.strip()] = v
    return out


def _generated(kind: str, spec: dict, base: Path) -> dict:
    unknown = set(spec) - {"name", "files", "literals", "envs", "type", "options", "behavior"}
    if unknown:
        raise NotImplementedError(f"{kind} generator keys not supported by this renderer: {sorted(unknown)}")
    data: dict[str, str] = {}
    for item in spec.get("files", []):
        key, _, rel = item.partition("=") if "=" in item else (Path(item).name, "", item)
        src = (base / rel).resolve()
        if base.resolve() not in src.parents:
            raise ValueError(f"{kind} {spec['name']}: {item} is outside the kustomization root (kustomize refuses it)")
        data[key] = src.read_text()
    for item in spec.get("literals", []):
        k, v = item.split("=", 1)
        data[k] = v
    for rel in spec.get("envs", []):
        data.update(_kv_lines(base / rel))
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": {"name": spec["name"]}}
    if kind == "Secret":
        obj["type"] = spec.get("type", "Opaque")
        obj["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
    else:
        obj["data"] = data
    return obj


def split_image(image: str) -> tuple[str, str | None, str | None]:
    """``name[:tag][@digest]`` -> (name, tag, digest); a registry port is not a tag."""
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    name, tag = image, None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = image.rsplit(":", 1)
    return name, tag, digest


def pod_specs(obj: dict) -> Iterator[dict]:
    if obj["kind"] in POD_OWNERS:
        yield obj["spec"]["template"]["spec"]
    elif obj["kind"] == "CronJob":
        yield obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    elif obj["kind"] == "Pod":
        yield obj["spec"]


def containers(pod_spec: dict) -> list[dict]:
    return [*pod_spec.get("initContainers", []), *pod_spec.get("containers", [])]


def _set_images(objs: list[dict], images: list[dict]) -> None:
    for obj in objs:
        for spec in pod_specs(obj):
            for c in containers(spec):
                name, tag, digest = split_image(c["image"])
                for rule in images:
                    if rule["name"] != name:
                        continue
                    name = rule.get("newName", name)
                    if "newTag" in rule:
                        tag, digest = str(rule["newTag"]), None
                    if "digest" in rule:
                        tag, digest = None, rule["digest"]
                    c["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def render_kustomization(path: Path) -> list[dict]:
    """Render ``path``/kustomization.yaml the way ``kubectl kustomize`` does (for the keys we use)."""
    path = Path(path)
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    unknown = set(k) - SUPPORTED_KUSTOMIZE_KEYS
    if unknown:
        raise NotImplementedError(f"{path}/kustomization.yaml uses {sorted(unknown)}: extend tests/deploy/deploy_render.py")
    objs: list[dict] = []
    for res in k.get("resources", []):
        target = path / res
        if target.is_dir():
            objs += render_kustomization(target)
        elif target.is_file():
            objs += _load_docs(target)
        else:
            raise FileNotFoundError(f"{path}/kustomization.yaml: resource {res} does not exist")
    for spec in k.get("configMapGenerator", []):
        objs.append(_generated("ConfigMap", spec, path))
    for spec in k.get("secretGenerator", []):
        objs.append(_generated("Secret", spec, path))
    objs = copy.deepcopy(objs)
    if k.get("namespace"):
        for obj in objs:
            if obj["kind"] not in CLUSTER_SCOPED:
                obj["metadata"]["namespace"] = k["namespace"]
    _set_images(objs, k.get("images", []))
    seen: set[tuple[str, str, str | None]] = set()
    for obj in objs:
        key = (obj["kind"], obj["metadata"]["name"], obj["metadata"].get("namespace"))
        if key in seen:
            raise ValueError(f"{path}: {key} is defined twice")
        seen.add(key)
    return objs


# --------------------------------------------------------------------------- compose

_VAR = re.compile(r"\$(?:\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Compose-spec variable interpolation: $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, arg = m.group(2), m.group(3) or ""
        val = env.get(name)
        if op in (":-", "-"):
            if val is None or (op == ":-" and val == ""):
                return arg
        elif op in (":?", "?"):
            if val is None or (op == ":?" and val == ""):
                raise ValueError(f"required variable {name} is missing: {arg}")
        elif op in (":+", "+"):
            return arg if val else ""
        return val or ""

    return _VAR.sub(sub, value)


def load_compose(env: dict[str, str] | None = None) -> dict:
    raw = yaml.safe_load(COMPOSE_FILE.read_text())
    data = interpolate(raw, env or {})
    # YAML merge keys (<<) are resolved by PyYAML; drop the x- extension fields as compose does
    # not (they stay valid: the spec allows ^x- keys at top level).
    return data


def command_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return value.split()
    return [str(v) for v in value]


def served_names(args: list[str]) -> set[str]:
    """Model names a vLLM command serves: ``--served-model-name`` and each ``--lora-modules NAME=DIR``."""
    names = {flag(args, "--served-model-name") or ""}
    if "--lora-modules" in args:
        for a in args[args.index("--lora-modules") + 1:]:
            if a.startswith("--"):
                break
            names.add(a.split("=", 1)[0])
    return names - {""}


def flag(args: list[str], name: str) -> str | None:
    """Value of ``--name VALUE`` or ``--name=VALUE`` in an argv list."""
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return None


# --------------------------------------------------------------------------- Dockerfiles

def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        instr, _, args = buf.partition(" ")
        out.append((instr.upper(), args.strip()))
        buf = ""
    if buf:
        raise ValueError(f"{path}: ends inside a line continuation")
    return out


def copy_sources(args: str) -> tuple[list[str], str, dict[str, str]]:
    """Sources, destination and --flags of a COPY/ADD (shell form or JSON form)."""
    import json
    import shlex

    flags: dict[str, str] = {}
    parts = shlex.split(args) if not args.lstrip().startswith("[") else None
    if parts is None:
        parts = json.loads(args)
    else:
        while parts and parts[0].startswith("--"):
            k, _, v = parts.pop(0)[2:].partition("=")
            flags[k] = v
    return parts[:-1], parts[-1], flags


def dockerignore_patterns(dockerfile: Path) -> list[str]:
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if not ignore.exists():
        ignore = REPO / ".dockerignore"
    if not ignore.exists():
        return []
    return [ln.strip() for ln in ignore.read_text().splitlines() if ln.strip() and not ln.strip().startswith("#")]


def _ignored(patterns: list[str], rel: str) -> bool:
    ignored = False
    for pat in patterns:
        neg = pat.startswith("!")
        p = pat[1:] if neg else pat
        p = p.rstrip("/")
        if p.startswith("**/"):
            hit = fnmatch.fnmatch(rel, p[3:]) or fnmatch.fnmatch(rel, p) or any(
                fnmatch.fnmatch(part, p[3:]) for part in rel.split("/"))
        else:
            parts = rel.split("/")
            # A pattern matching a parent folder covers everything under it.
            hit = any(fnmatch.fnmatch("/".join(parts[:i]), p) for i in range(1, len(parts) + 1))
        if hit:
            ignored = not neg
    return ignored


def sent_to_build(dockerfile: Path, rel: str) -> bool:
    """Whether ``rel`` (a path in the repo) reaches the build context under the .dockerignore."""
    return not _ignored(dockerignore_patterns(dockerfile), rel.rstrip("/"))


def parse_gateway_config(raw: dict, env: dict[str, str]):
    """``gateway.config.parse_config`` as the container would run it: with its environment set
    (``{env:NAME}`` placeholders), and this process's environment restored afterwards."""
    import os

    from gateway.config import parse_config

    saved = dict(os.environ)
    try:
        os.environ.update(env)
        return parse_config(raw)
    finally:
        os.environ.clear()
        os.environ.update(saved)
