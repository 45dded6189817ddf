"""deploy/k8s: render the kustomizations offline, validate every object against the
Kubernetes OpenAPI schemas shipped in the ``kubernetes-validate`` package (strict: unknown
fields fail), and check the references between objects and the gateway config they carry."""

from __future__ import annotations

import base64
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from deploy_render import (K8S, REPO, command_list, containers, flag, parse_gateway_config, pod_specs, served_names,
                           render_kustomization, split_image)

# Every kustomization a user may apply (the base alone lacks the Secrets on purpose).
OVERLAYS = [K8S / "overlays" / "example"]
NAMESPACE = "tierwise"
# The oldest and the newest Kubernetes minor the manifests are validated for.
K8S_VERSIONS = ["1.30.0", "1.37.0"]


@pytest.fixture(scope="module", params=OVERLAYS, ids=lambda p: str(p.relative_to(K8S)))
def objs(request) -> list[dict]:
    return render_kustomization(request.param)


def by_kind(objs: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def component(objs: list[dict], name: str) -> list[dict]:
    return [o for o in objs if o["kind"] == "Deployment"
            and o["spec"]["template"]["metadata"]["labels"].get("app.kubernetes.io/component") == name]


def secret_value(objs: list[dict], name: str, key: str) -> str:
    secret = by_kind(objs, "Secret")[name]
    if key in secret.get("stringData", {}):
        return secret["stringData"][key]
    return base64.b64decode(secret["data"][key]).decode()


def container_env(objs: list[dict], c: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for src in c.get("envFrom", []):
        if "secretRef" in src:
            s = by_kind(objs, "Secret")[src["secretRef"]["name"]]
            env.update({k: base64.b64decode(v).decode() for k, v in s.get("data", {}).items()})
            env.update(s.get("stringData", {}))
        if "configMapRef" in src:
            env.update(by_kind(objs, "ConfigMap")[src["configMapRef"]["name"]].get("data", {}))
    for e in c.get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
        elif "secretKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["secretKeyRef"]
            env[e["name"]] = secret_value(objs, ref["name"], ref["key"])
        elif "configMapKeyRef" in e.get("valueFrom", {}):
            ref = e["valueFrom"]["configMapKeyRef"]
            env[e["name"]] = by_kind(objs, "ConfigMap")[ref["name"]]["data"][ref["key"]]
    return env


def container_port(c: dict, port: int | str) -> int | None:
    for p in c.get("ports", []):
        if port in (p.get("name"), p["containerPort"]):
            return p["containerPort"]
    return None


def test_base_renders_and_refuses_unknown_kustomize_keys(tmp_path):
    assert render_kustomization(K8S / "base")
    (tmp_path / "kustomization.yaml").write_text("resources: []\npatches: [{path: p.yaml}]\n")
    with pytest.raises(NotImplementedError):
        render_kustomization(tmp_path)


def test_every_manifest_in_k8s_is_rendered():
    """A manifest added to deploy/k8s but not listed in a kustomization would never be applied."""
    listed: set[Path] = set()
    for kfile in K8S.rglob("kustomization.yaml"):
        k = yaml.safe_load(kfile.read_text())
        listed.add(kfile)
        for res in k.get("resources", []):
            listed.add((kfile.parent / res).resolve())
        for gen in [*k.get("configMapGenerator", []), *k.get("secretGenerator", [])]:
            for item in [*gen.get("files", []), *gen.get("envs", [])]:
                listed.add((kfile.parent / item.split("=", 1)[-1]).resolve())
    for f in K8S.rglob("*"):
        if f.is_file() and f.suffix in {".yaml", ".yml", ".json", ".example"}:
            assert f.resolve() in listed or f in listed, f"{f.relative_to(REPO)} is in no kustomization"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_objects_validate_against_kubernetes_schemas(objs, version):
    import kubernetes_validate

    errors = []
    for o in objs:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            errors.append(f"{o['kind']}/{o['metadata']['name']}: {e.message} at {list(e.path)}")
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_broken_manifest(objs):
    """The validator really runs: a typo in a field name and a wrong type both fail."""
    import kubernetes_validate

    dep = dict(by_kind(objs, "Deployment")["tierwise-gateway"])
    typo = yaml.safe_load(yaml.safe_dump(dep))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, K8S_VERSIONS[-1], strict=True)
    wrong = yaml.safe_load(yaml.safe_dump(dep))
    wrong["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "8000"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, K8S_VERSIONS[-1], strict=True)


def test_everything_in_one_namespace(objs):
    assert NAMESPACE in by_kind(objs, "Namespace")
    for o in objs:
        if o["kind"] != "Namespace":
            assert o["metadata"].get("namespace") == NAMESPACE, f"{o['kind']}/{o['metadata']['name']}"


def test_deployment_selectors_match_their_pods(objs):
    for kind in ("Deployment", "Job"):
        for name, d in by_kind(objs, kind).items():
            labels = d["spec"]["template"]["metadata"].get("labels", {})
            sel = d["spec"].get("selector", {}).get("matchLabels", {})
            assert sel.items() <= labels.items(), f"{kind}/{name}"


def test_services_select_pods_and_target_their_ports(objs):
    deployments = by_kind(objs, "Deployment").values()
    for name, svc in by_kind(objs, "Service").items():
        sel = svc["spec"].get("selector")
        assert sel, f"Service/{name} has no selector"
        matched = [d for d in deployments if sel.items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert matched, f"Service/{name} selects no Deployment's pods"
        assert len(matched) == 1, f"Service/{name} selects several Deployments: {[d['metadata']['name'] for d in matched]}"
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for d in matched:
                assert any(container_port(c, target) for c in d["spec"]["template"]["spec"]["containers"]), \
                    f"Service/{name} targets port {target!r} that Deployment/{d['metadata']['name']} does not expose"


def test_gateway_has_several_replicas_behind_an_hpa(objs):
    [gw] = component(objs, "gateway")
    hpas = [h for h in by_kind(objs, "HorizontalPodAutoscaler").values()
            if h["spec"]["scaleTargetRef"]["name"] == gw["metadata"]["name"]]
    assert len(hpas) == 1
    ref = hpas[0]["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"]) == ("apps/v1", "Deployment")
    assert hpas[0]["spec"]["minReplicas"] >= 2
    assert hpas[0]["spec"]["maxReplicas"] > hpas[0]["spec"]["minReplicas"]
    # A CPU utilisation target needs CPU requests on every container.
    for m in hpas[0]["spec"]["metrics"]:
        if m["type"] == "Resource":
            res = m["resource"]["name"]
            for c in gw["spec"]["template"]["spec"]["containers"]:
                assert res in c.get("resources", {}).get("requests", {}), f"{c['name']} has no {res} request"
    # The HPA owns the replica count; a fixed one would fight it on every apply.
    assert "replicas" not in gw["spec"] or gw["spec"]["replicas"] >= hpas[0]["spec"]["minReplicas"]
    svcs = [s for s in by_kind(objs, "Service").values()
            if s["spec"]["selector"].items() <= gw["spec"]["template"]["metadata"]["labels"].items()]
    assert svcs, "no Service in front of the gateway"
    for pdb in by_kind(objs, "PodDisruptionBudget").values():
        if pdb["spec"]["selector"]["matchLabels"].items() <= gw["spec"]["template"]["metadata"]["labels"].items():
            assert pdb["spec"]["minAvailable"] < hpas[0]["spec"]["minReplicas"], "PDB would block every drain"


def test_readiness_on_health(objs):
    for comp in ("gateway", "tier"):
        deps = component(objs, comp)
        assert deps, f"no {comp} Deployment"
        for d in deps:
            for c in d["spec"]["template"]["spec"]["containers"]:
                probe = c.get("readinessProbe", {}).get("httpGet")
                assert probe and probe["path"] == "/health", f"{d['metadata']['name']}/{c['name']}"
                assert container_port(c, probe["port"]), f"{d['metadata']['name']}: probe port {probe['port']!r}"
    # The gateway's liveness must not be /health: a tier outage would restart every gateway.
    for d in component(objs, "gateway"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            assert c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/health"


def test_prometheus_scrape_annotations(objs):
    for comp in ("gateway", "tier"):
        for d in component(objs, comp):
            tpl = d["spec"]["template"]
            ann = tpl["metadata"].get("annotations", {})
            assert ann.get("prometheus.io/scrape") == "true", d["metadata"]["name"]
            assert ann.get("prometheus.io/path") == "/metrics", d["metadata"]["name"]
            assert any(container_port(c, int(ann["prometheus.io/port"])) for c in tpl["spec"]["containers"])


def test_tiers_request_gpus_and_read_models_from_the_pvc(objs):
    tiers = component(objs, "tier")
    assert {d["spec"]["template"]["metadata"]["labels"]["tierwise.dev/tier"] for d in tiers} >= {"teacher", "student"}
    pvcs = by_kind(objs, "PersistentVolumeClaim")
    for d in tiers:
        name = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        [vllm] = spec["containers"]
        res = vllm["resources"]
        assert int(res["limits"]["nvidia.com/gpu"]) >= 1, name
        assert res["requests"].get("nvidia.com/gpu", res["limits"]["nvidia.com/gpu"]) == res["limits"]["nvidia.com/gpu"]
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in spec["volumes"] if "persistentVolumeClaim" in v}
        assert claims, f"{name} mounts no PersistentVolumeClaim"
        mounts = {m["mountPath"]: m for m in vllm["volumeMounts"] if m["name"] in claims}
        args = command_list(vllm.get("command")) + command_list(vllm.get("args"))
        model = flag(args, "--model")
        assert model and any(model.startswith(p.rstrip("/") + "/") for p in mounts), f"{name}: --model {model} not on the PVC"
        assert all(m.get("readOnly") for m in mounts.values()), f"{name} should mount the weights read-only"
        assert d["spec"]["template"]["metadata"]["labels"]["tierwise.dev/tier"] in served_names(args), name
        for claim in claims.values():
            assert claim in pvcs, f"{name}: PVC {claim} is not rendered"
    # Something fills the PVC: the Job running `distill assemble --cache <its mount>`.
    jobs = [j for j in by_kind(objs, "Job").values()
            if any("distill" in command_list(c.get("command")) and "assemble" in command_list(c.get("command"))
                   for c in j["spec"]["template"]["spec"]["containers"])]
    assert len(jobs) == 1
    jspec = jobs[0]["spec"]["template"]["spec"]
    [asm] = jspec["containers"]
    jclaims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in jspec["volumes"] if "persistentVolumeClaim" in v}
    cache = flag(command_list(asm["command"]), "--cache")
    [m] = [m for m in asm["volumeMounts"] if m["mountPath"] == cache]
    assert jclaims[m["name"]] in pvcs and not m.get("readOnly")


def test_referenced_configmaps_secrets_and_claims_exist(objs):
    cms, secrets, pvcs = by_kind(objs, "ConfigMap"), by_kind(objs, "Secret"), by_kind(objs, "PersistentVolumeClaim")
    for o in objs:
        for spec in pod_specs(o):
            where = f"{o['kind']}/{o['metadata']['name']}"
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    assert v["configMap"]["name"] in cms, f"{where}: ConfigMap {v['configMap']['name']}"
                if "secret" in v:
                    assert v["secret"]["secretName"] in secrets, f"{where}: Secret {v['secret']['secretName']}"
                if "persistentVolumeClaim" in v:
                    assert v["persistentVolumeClaim"]["claimName"] in pvcs, where
            for c in containers(spec):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref and not ref.get("optional"):
                        assert ref["name"] in secrets, f"{where}: Secret {ref['name']}"
                        assert ref["key"] in secrets[ref["name"]].get("data", {}) | secrets[ref["name"]].get("stringData", {}), \
                            f"{where}: Secret {ref['name']} has no key {ref['key']}"
                    ref = e.get("valueFrom", {}).get("configMapKeyRef")
                    if ref and not ref.get("optional"):
                        assert ref["key"] in cms[ref["name"]]["data"], where
                for src in c.get("envFrom", []):
                    if "secretRef" in src and not src["secretRef"].get("optional"):
                        assert src["secretRef"]["name"] in secrets, f"{where}: Secret {src['secretRef']['name']}"
                    if "configMapRef" in src and not src["configMapRef"].get("optional"):
                        assert src["configMapRef"]["name"] in cms, where
                names = {v["name"] for v in spec.get("volumes", [])}
                for m in c.get("volumeMounts", []):
                    assert m["name"] in names, f"{where}/{c['name']}: volume {m['name']}"


def test_images_are_pinned(objs):
    for o in objs:
        for spec in pod_specs(o):
            for c in containers(spec):
                _, tag, digest = split_image(c["image"])
                assert digest or (tag and tag != "latest"), f"{o['metadata']['name']}/{c['name']}: {c['image']}"
                if c["image"].split("/")[-2:-1] == ["tierwise"]:
                    repo_name = split_image(c["image"])[0].rsplit("/", 1)[-1]
                    assert (REPO / "deploy" / "docker" / f"{repo_name}.Dockerfile").exists(), c["image"]


def gateway_config(objs: list[dict]):
    """The gateway's config as the pod sees it: the ConfigMap file at --config, env from Secrets."""

    [gw] = component(objs, "gateway")
    spec = gw["spec"]["template"]["spec"]
    [c] = spec["containers"]
    argv = command_list(c.get("command")) + command_list(c.get("args"))
    assert argv[:4] == ["python", "-m", "gateway", "serve"], argv
    config_path = flag(argv, "--config")
    assert config_path
    mount = next(m for m in c["volumeMounts"] if config_path.startswith(m["mountPath"].rstrip("/") + "/"))
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    cm = by_kind(objs, "ConfigMap")[volume["configMap"]["name"]]
    key = config_path[len(mount["mountPath"].rstrip("/")) + 1:]
    raw = yaml.safe_load(cm["data"][key])
    env = container_env(objs, c)
    cfg = parse_gateway_config(raw, env)
    return cfg, raw, env, int(flag(argv, "--port") or cfg.server.port), c


def test_configmap_holds_a_config_the_gateway_accepts(objs):
    cfg, raw, env, port, c = gateway_config(objs)
    assert container_port(c, port), "the gateway listens on a port the container does not declare"
    assert cfg.ledger.url == env["TIERWISE_LEDGER_URL"] and cfg.ledger.url.startswith(("postgresql://", "postgresql+psycopg://")), \
        "several replicas need the shared Postgres ledger from the Secret, not SQLite"
    assert "{env:TIERWISE_LEDGER_URL}" in yaml.safe_dump(raw), "the database URL must come from the Secret, not the ConfigMap"
    # The state dir must be writable: a mounted emptyDir (the root filesystem is read-only).
    assert any(m["mountPath"] == cfg.state_dir for m in c["volumeMounts"]), cfg.state_dir


def test_config_tiers_point_at_the_tier_services(objs):
    cfg, *_ = gateway_config(objs)
    services = by_kind(objs, "Service")
    deployments = by_kind(objs, "Deployment").values()
    assert all(t.kind == "url" for t in cfg.model_list), "in Kubernetes each tier is its own Deployment: use url:"
    for tier in cfg.model_list:
        u = urlsplit(tier.url.base_url)
        assert u.scheme == "http" and u.path.rstrip("/") == "/v1", tier.url.base_url
        host = u.hostname
        parts = host.split(".")
        assert len(parts) == 1 or parts[1] == NAMESPACE, f"{host}: another namespace"
        assert parts[2:] in ([], ["svc"], ["svc", "cluster", "local"]), host
        svc = services.get(parts[0])
        assert svc, f"tier {tier.model_name}: no Service {parts[0]}"
        port = next((p for p in svc["spec"]["ports"] if p["port"] == (u.port or 80)), None)
        assert port, f"Service {parts[0]} has no port {u.port}"
        [dep] = [d for d in deployments if svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        [vllm] = dep["spec"]["template"]["spec"]["containers"]
        argv = command_list(vllm.get("command")) + command_list(vllm.get("args"))
        assert (tier.url.upstream_model or tier.model_name) in served_names(argv), \
            f"tier {tier.model_name}: Deployment/{dep['metadata']['name']} serves another model name"
        # The Dockerfile's ENTRYPOINT carries --port; it must be the port the Service targets.
        image = split_image(vllm["image"])[0].rsplit("/", 1)[-1]
        from deploy_render import DOCKER, dockerfile_instructions
        import json
        [entry] = [json.loads(a) for i, a in dockerfile_instructions(DOCKER / f"{image}.Dockerfile") if i == "ENTRYPOINT"]
        assert container_port(vllm, port["targetPort"]) == int(flag(entry, "--port")), tier.model_name


def test_auth_keys_from_secrets_and_shared_limits(objs):
    cfg, raw, env, _, c = gateway_config(objs)
    assert cfg.auth.enabled, "a deployed gateway keeps API keys on"
    admin = next((e for e in c.get("env", []) if e["name"] == cfg.auth.admin_key_env), None)
    assert admin and "secretKeyRef" in admin.get("valueFrom", {}), "the bootstrap admin key must come from a Secret"
    assert env[cfg.auth.admin_key_env]
    u = urlsplit(cfg.limits.redis_url or "")
    assert u.scheme == "redis", "several replicas need shared (Redis) rate limits"
    svc = by_kind(objs, "Service").get(u.hostname.split(".")[0])
    assert svc and any(p["port"] == (u.port or 6379) for p in svc["spec"]["ports"]), cfg.limits.redis_url


def test_config_tiers_match_the_defaults(objs):
    """Same tier names, aliases and roles as gateway/defaults.yaml: clients don't change models."""
    from gateway.config import load_config

    cfg, *_ = gateway_config(objs)
    defaults = load_config(None)
    assert [(t.model_name, t.aliases, t.role, t.fallbacks) for t in cfg.model_list] == \
        [(t.model_name, t.aliases, t.role, t.fallbacks) for t in defaults.model_list]
    assert (cfg.router.strong_tier, cfg.router.weak_tier) == (defaults.router.strong_tier, defaults.router.weak_tier)
    assert cfg.router.artifact == defaults.router.artifact


def test_python_renderer_matches_kubectl_kustomize():
    """Where kubectl is installed, our offline renderer must produce what kustomize produces."""
    kubectl = shutil.which("kubectl")
    if not kubectl:
        pytest.skip("kubectl not installed: the offline renderer is the only check")
    for overlay in OVERLAYS:
        out = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        theirs = [d for d in yaml.safe_load_all(out.stdout) if d]
        ours = render_kustomization(overlay)
        # Generated names carry a content hash there: map them back to the plain names.
        plain = {o["metadata"]["name"] for o in ours if o["kind"] in ("ConfigMap", "Secret")}
        rename = {}
        for d in theirs:
            base = d["metadata"]["name"].rsplit("-", 1)[0]
            if d["kind"] in ("ConfigMap", "Secret") and base in plain:
                rename[d["metadata"]["name"]] = base

        def norm(x):
            if isinstance(x, dict):
                return {k: norm(v) for k, v in x.items()}
            if isinstance(x, list):
                return [norm(v) for v in x]
            return rename.get(x, x) if isinstance(x, str) else x

        def decoded(o):
            # kustomize wraps long base64 values at 76 characters: compare the decoded bytes.
            if o["kind"] == "Secret":
                o = {**o, "data": {k: base64.b64decode(v) for k, v in o.get("data", {}).items()}}
            return o

        key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
        assert sorted((decoded(norm(o)) for o in theirs), key=key) == sorted(map(decoded, ours), key=key)
