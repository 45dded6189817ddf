"""deploy/compose.yaml: validate it against the Compose Specification JSON schema (the copy
vendored in the ``check-jsonschema`` package; and with ``docker compose config`` where the
compose plugin is installed), then check what the schema cannot: references between
services, volumes and configs, the files they name, the gateway config it mounts, and that
Prometheus and Grafana are wired to the gateway and the project's dashboard."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from deploy_render import (COMPOSE_FILE, DEPLOY, DOCKER, REPO, command_list, dockerfile_instructions, flag, served_names, load_compose,
                           parse_gateway_config)

DASHBOARD = DEPLOY / "grafana" / "tierwise-dashboard.json"


@pytest.fixture(scope="module")
def compose() -> dict:
    # As `docker compose config` sees it with no variables set: every ${VAR:-default} applies.
    return load_compose({})


def compose_schema() -> dict:
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec and spec.submodule_search_locations, "pip install check-jsonschema (it vendors the compose-spec schema)"
    path = Path(next(iter(spec.submodule_search_locations))) / "builtin_schemas" / "vendor" / "compose-spec.json"
    return json.loads(path.read_text())


def schema_errors(doc: dict) -> list[str]:
    import jsonschema

    schema = compose_schema()
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in cls(schema).iter_errors(doc)]


def test_compose_validates_against_the_compose_spec_schema(compose):
    errors = schema_errors(compose)
    assert not errors, "\n".join(errors)


def test_schema_validation_catches_a_broken_compose_file(compose):
    broken = json.loads(json.dumps(compose))
    broken["services"]["gateway"]["depends_on"]["ledger-db"]["condition"] = "service_happy"
    broken["services"]["teacher"]["healthcheck"]["retries"] = "three"
    broken["services"]["redis"]["imagee"] = "redis"
    assert len(schema_errors(broken)) >= 3


def test_docker_compose_config_accepts_it():
    """The real parser, where the compose plugin exists (not on the project's CI machines)."""
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("`docker compose` is not installed: the schema test is the CI check")
    out = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


def test_depends_on_and_healthchecks(compose):
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on", {})
        deps = {d: {"condition": "service_started"} for d in deps} if isinstance(deps, list) else deps
        for dep, opts in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert dep != name
            cond = opts.get("condition", "service_started")
            if cond == "service_healthy":
                assert "healthcheck" in services[dep] or _image_has_healthcheck(services[dep]), f"{dep} has no healthcheck"
            if cond == "service_completed_successfully":
                assert services[dep].get("restart", "no") == "no", f"{dep} must be one-shot"
    # No cycles.
    graph = {n: set(s.get("depends_on", {})) for n, s in services.items()}
    done: set[str] = set()

    def visit(n: str, path: tuple[str, ...]) -> None:
        assert n not in path, f"depends_on cycle: {' -> '.join(path + (n,))}"
        if n not in done:
            for d in graph[n]:
                visit(d, path + (n,))
            done.add(n)

    for n in graph:
        visit(n, ())


def _image_has_healthcheck(svc: dict) -> bool:
    build = svc.get("build")
    if not build:
        return False
    return any(i == "HEALTHCHECK" for i, _ in dockerfile_instructions(REPO / build["dockerfile"]))


def test_volumes_configs_and_builds_resolve(compose):
    volumes = compose.get("volumes", {})
    configs = compose.get("configs", {})
    used_volumes, used_configs = set(), set()
    for name, svc in compose["services"].items():
        for v in svc.get("volumes", []):
            src = v.split(":")[0] if isinstance(v, str) else v.get("source")
            if src.startswith((".", "/")):
                assert (DEPLOY / src).resolve().parent.exists(), f"{name}: bind source {src}"
            else:
                assert src in volumes, f"{name}: volume {src} is not declared"
                used_volumes.add(src)
        for c in svc.get("configs", []):
            src = c if isinstance(c, str) else c["source"]
            assert src in configs, f"{name}: config {src} is not declared"
            used_configs.add(src)
        if "build" in svc:
            ctx = (DEPLOY / svc["build"]["context"]).resolve()
            assert ctx == REPO, f"{name}: the Dockerfiles expect the repository root as build context"
            assert (ctx / svc["build"]["dockerfile"]).is_file(), f"{name}: {svc['build']['dockerfile']}"
        image = svc.get("image", "")
        assert image and ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: pin the image tag"
    assert used_volumes == set(volumes), f"unused volumes: {set(volumes) - used_volumes}"
    assert used_configs == set(configs), f"unused configs: {set(configs) - used_configs}"
    # One image tag, one build: two services building the same tag differently would race.
    builds: dict[str, dict] = {}
    for name, svc in compose["services"].items():
        if "build" in svc:
            assert builds.setdefault(svc["image"], svc["build"]) == svc["build"], name


def _healthcheck_exe_ok(svc: dict) -> bool:
    """A compose healthcheck on a built image runs the interpreter the Dockerfile's own uses."""
    test = svc.get("healthcheck", {}).get("test")
    if not test or "build" not in svc or test[0] != "CMD":
        return True
    ours = [json.loads(a.split("CMD", 1)[1]) for i, a in dockerfile_instructions(REPO / svc["build"]["dockerfile"])
            if i == "HEALTHCHECK"]
    return not ours or ours[0][0] == test[1]


def test_healthchecks_use_what_the_image_has(compose):
    for name, svc in compose["services"].items():
        assert _healthcheck_exe_ok(svc), name


def test_config_files_exist(compose):
    missing = [c["file"] for c in compose["configs"].values() if not (DEPLOY / c["file"]).is_file()]
    assert not missing, f"compose would refuse to start: missing {missing} (relative to deploy/)"


def config_target(svc: dict, compose: dict, target: str) -> Path:
    for c in svc.get("configs", []):
        if c.get("target") == target:
            return DEPLOY / compose["configs"][c["source"]]["file"]
    raise AssertionError(f"nothing mounted at {target}")


def vllm_port(svc: dict) -> int:
    [entry] = [json.loads(a) for i, a in dockerfile_instructions(REPO / svc["build"]["dockerfile"]) if i == "ENTRYPOINT"]
    return int(flag(entry, "--port"))


def gateway_config(compose: dict):

    gw = compose["services"]["gateway"]
    argv = command_list(gw["command"])
    assert argv[:4] == ["python", "-m", "gateway", "serve"], argv
    path = config_target(gw, compose, flag(argv, "--config"))
    raw = yaml.safe_load(path.read_text())
    env = {k: str(v) for k, v in gw.get("environment", {}).items()}
    cfg = parse_gateway_config(raw, env)
    return cfg, argv, env


def test_gateway_config_parses_and_uses_the_compose_services(compose):
    cfg, argv, env = gateway_config(compose)
    services = compose["services"]
    # The published port reaches the port the gateway listens on.
    port = int(flag(argv, "--port"))
    assert any(str(p).split(":")[-1] == str(port) for p in services["gateway"]["ports"])
    # Ledger: the Postgres service, with its user, password and database.
    assert cfg.ledger.url == env["TIERWISE_LEDGER_URL"]
    u = urlsplit(cfg.ledger.url)
    assert u.scheme in ("postgresql", "postgresql+psycopg")
    db = services[u.hostname]
    assert db["image"].startswith("postgres:")
    denv = db["environment"]
    assert (u.username, u.password, u.path.lstrip("/")) == (denv["POSTGRES_USER"], denv["POSTGRES_PASSWORD"], denv["POSTGRES_DB"])
    assert "ledger-db" in services["gateway"]["depends_on"]
    # Tiers: each a vLLM service serving the tier's model name on the URL's port.
    assert all(t.kind == "url" for t in cfg.model_list), "each vLLM tier is its own container: use url:"
    for tier in cfg.model_list:
        t = urlsplit(tier.url.base_url)
        assert t.path.rstrip("/") == "/v1"
        svc = services.get(t.hostname)
        assert svc, f"tier {tier.model_name}: no service {t.hostname}"
        assert (tier.url.upstream_model or tier.model_name) in served_names(command_list(svc["command"]))
        assert t.port == vllm_port(svc), f"tier {tier.model_name}: port {t.port}"
        model = flag(command_list(svc["command"]), "--model")
        assert any(model.startswith(v.split(":")[1] + "/") for v in svc["volumes"]), f"{t.hostname}: --model {model}"


def test_auth_and_shared_limits(compose):
    cfg, argv, env = gateway_config(compose)
    services = compose["services"]
    assert cfg.auth.enabled, "a deployed gateway keeps API keys on"
    assert cfg.auth.admin_key_env in env, f"compose does not pass {cfg.auth.admin_key_env} to the gateway"
    u = urlsplit(cfg.limits.redis_url or "")
    assert u.scheme == "redis" and u.hostname in services, "limits.redis_url must name the compose Redis service"
    assert services[u.hostname]["image"].startswith("redis:") and (u.port or 6379) == 6379
    assert u.hostname in services["gateway"]["depends_on"]


def test_gateway_config_tiers_match_the_defaults(compose):
    from gateway.config import load_config

    cfg, *_ = gateway_config(compose)
    defaults = load_config(None)
    assert [(t.model_name, t.aliases, t.role, t.price, t.fallbacks) for t in cfg.model_list] == \
        [(t.model_name, t.aliases, t.role, t.price, t.fallbacks) for t in defaults.model_list]
    assert cfg.router.model_dump() == defaults.router.model_dump()


def test_models_are_assembled_into_the_volume_the_tiers_read(compose):
    services = compose["services"]
    models = services["models"]
    argv = command_list(models["command"])
    assert argv[:4] == ["python", "-m", "distill", "assemble"]
    cache = flag(argv, "--cache")
    [vol] = [v.split(":")[0] for v in models["volumes"] if v.split(":")[1] == cache]
    # service -> the assembled dir it serves (the teacher service: the base, its adapter beside it)
    for service, model_dir in (("teacher", "base-teacher"), ("student", "student")):
        svc = services[service]
        assert svc["depends_on"]["models"]["condition"] == "service_completed_successfully"
        mounts = {v.split(":")[0]: v.split(":")[1] for v in svc["volumes"]}
        argv = command_list(svc["command"])
        assert vol in mounts and flag(argv, "--model") == f"{mounts[vol]}/{model_dir}"
        if "--lora-modules" in argv:
            assert argv[argv.index("--lora-modules") + 1] == f"teacher={mounts[vol]}/teacher-adapter"


def test_prometheus_scrapes_the_gateway(compose):
    prom = compose["services"]["prometheus"]
    cfg = yaml.safe_load(config_target(prom, compose, "/etc/prometheus/prometheus.yml").read_text())
    assert flag(command_list(prom["command"]), "--config.file") == "/etc/prometheus/prometheus.yml"
    port = flag(command_list(compose["services"]["gateway"]["command"]), "--port")
    targets = {(t, job.get("metrics_path", "/metrics"))
               for job in cfg["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    assert (f"gateway:{port}", "/metrics") in targets
    for t, _ in targets:
        assert t.split(":")[0] in compose["services"], f"Prometheus scrapes unknown host {t}"


def test_grafana_provisions_the_project_dashboard(compose):
    graf = compose["services"]["grafana"]
    provider = yaml.safe_load(config_target(graf, compose, "/etc/grafana/provisioning/dashboards/tierwise.yaml").read_text())
    [p] = provider["providers"]
    dash_dir = p["options"]["path"].rstrip("/")
    dashboards = [c for c in graf["configs"] if str(c["target"]).startswith(dash_dir + "/")]
    assert dashboards, f"nothing mounted under the provider path {dash_dir}"
    for c in dashboards:
        src = (DEPLOY / compose["configs"][c["source"]]["file"]).resolve()
        assert src == DASHBOARD.resolve(), f"{src} is not deploy/grafana/tierwise-dashboard.json"
    ds = yaml.safe_load(config_target(graf, compose, "/etc/grafana/provisioning/datasources/prometheus.yaml").read_text())
    [source] = ds["datasources"]
    u = urlsplit(source["url"])
    assert u.hostname == "prometheus" and u.port == 9090 and source["type"] == "prometheus"


def test_dashboard_is_provisionable():
    """The dashboard must load from a file provider: valid JSON, no import-only ${DS_*} inputs,
    and Prometheus panels that use the provisioned datasource (uid `prometheus`) or a variable."""
    if not DASHBOARD.is_file():
        pytest.fail(f"{DASHBOARD.relative_to(REPO)} is missing: compose mounts it into Grafana")
    dash = json.loads(DASHBOARD.read_text())
    assert "__inputs" not in dash, "exported-for-sharing dashboards (__inputs) do not load from provisioning"
    variables = {v["name"] for v in dash.get("templating", {}).get("list", []) if v.get("type") == "datasource"}
    allowed = {"prometheus"} | {f"${{{v}}}" for v in variables} | {f"${v}" for v in variables}

    def walk(x):
        if isinstance(x, dict):
            d = x.get("datasource")
            if isinstance(d, dict) and d.get("type") == "prometheus" and "uid" in d:
                assert d["uid"] in allowed, f"datasource uid {d['uid']!r} is not provisioned (use 'prometheus')"
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(dash)


def _merge(base, over):
    """Compose's merge of an override file, for mappings (enough for compose.gpu.yaml)."""
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: _merge(base.get(k), v) if k in base else v for k, v in over.items()} | \
            {k: v for k, v in base.items() if k not in over}
    return over


def test_gpu_override_layers_cleanly(compose):
    from deploy_render import interpolate

    gpu = interpolate(yaml.safe_load((DEPLOY / "compose.gpu.yaml").read_text()), {})
    assert set(gpu["services"]) <= set(compose["services"]), "the override only changes existing services"
    merged = _merge(compose, gpu)
    errors = schema_errors(merged)
    assert not errors, "\n".join(errors)
    for name in gpu["services"]:
        svc = merged["services"][name]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert any("gpu" in d.get("capabilities", []) and d.get("driver") == "nvidia" for d in devices)
        assert (REPO / svc["build"]["dockerfile"]).is_file()
        ins = dockerfile_instructions(REPO / svc["build"]["dockerfile"])
        [entry] = [json.loads(a) for i, a in ins if i == "ENTRYPOINT"]
        assert flag(entry, "--dtype") == "bfloat16"
        assert _healthcheck_exe_ok(svc), f"{name}: healthcheck runs a program its image's HEALTHCHECK does not use"
        # Same port and model-name contract as the CPU tier, so the gateway config is unchanged.
        assert vllm_port(svc) == vllm_port(compose["services"][name])


def test_standins_override_replaces_only_services_of_the_stack_with_images_the_script_builds(compose):
    """deploy/compose.standins.yaml (podman-compose on machines with no registry): a valid
    compose file whose services all exist in compose.yaml, whose stand-in images are the ones
    scripts/build_images.sh standins builds, and whose mounts are files of deploy/."""
    override = yaml.safe_load((DEPLOY / "compose.standins.yaml").read_text())
    assert not schema_errors(override)
    assert set(override["services"]) <= set(compose["services"])
    script = (REPO / "scripts" / "build_images.sh").read_text()
    images = [s["image"] for s in override["services"].values() if "image" in s]
    assert images and all(image in script for image in images)
    for service in override["services"].values():
        for mount in service.get("volumes", []):
            source, target = mount.split(":")[:2]
            assert (DEPLOY / source).is_file(), source
    # The official images the stand-ins replace are still what compose.yaml itself runs.
    assert compose["services"]["ledger-db"]["image"].startswith("postgres:")
