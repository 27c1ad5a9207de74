"""The docker files as an operator meets them, checked without a docker daemon (part of
`make test`): docker-compose.yml, config/docker.yaml, the Dockerfile, deploy/build-image.sh
and the docs' `docker-compose exec` examples must agree with each other. What only a running
engine can show (the image builds, the cluster comes up healthy) is in test_compose.py
(`make docker-test`)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ambry.common.config import load_config
from ambry.frontend.s3.config import s3_config_of

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
DOCKER_YAML = ROOT / "config" / "docker.yaml"
DOCKERFILE = ROOT / "Dockerfile"
BUILD_IMAGE = ROOT / "deploy" / "build-image.sh"


def _compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def _dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(e.split("=", 1) for e in env)
    return {k: str(v) for k, v in env.items()}


def _published(service: dict[str, Any]) -> dict[int, str]:
    """container port -> the published host:port spec."""
    out = {}
    for p in service.get("ports") or []:
        host, _, container = str(p).rpartition(":")
        out[int(container)] = host
    return out


def test_compose_publishes_rest_and_s3_of_every_frontend_on_loopback() -> None:
    # broke: S3 was off in compose (1175/1185 not published, no s3: section)
    cfg = load_config(DOCKER_YAML)
    assert s3_config_of(cfg).access_keys, "config/docker.yaml has no S3 key pair"
    services = _compose()["services"]
    host_ports = []
    for fe in cfg.frontends:
        svc = services[fe.host]
        published = _published(svc)
        assert fe.s3_port is not None, fe
        assert set(published) == {fe.port, fe.s3_port}, (fe, published)
        for spec in published.values():
            assert spec.startswith("127.0.0.1:"), spec  # loopback only
            host_ports.append(spec)
    assert len(set(host_ports)) == len(host_ports), host_ports


def test_docker_yaml_is_what_its_header_command_writes_plus_the_edits_it_lists(
        tmp_path: Path) -> None:
    # broke: the header's generator command wrote an s3: section that the file did not have
    header = DOCKER_YAML.read_text().splitlines()[0]
    m = re.search(r"`ambry (admin build-clustermap .*?) -o config/docker\.yaml`", header)
    assert m, header
    out = tmp_path / "generated.yaml"
    args = m.group(1).split() + ["-o", str(out)]
    r = subprocess.run([sys.executable, "-m", "ambry.cli", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    generated = yaml.safe_load(out.read_text())
    shipped = yaml.safe_load(DOCKER_YAML.read_text())
    for key in ("cluster", "data_dir", "datacenters", "nodes", "partitions"):
        assert shipped[key] == generated[key], key
    assert [{k: v for k, v in f.items() if k != "s3_port"} for f in shipped["frontends"]] \
        == generated["frontends"]
    # the hand edits the header lists: S3 keys are a subset of the generated ones
    gen_keys = {k["access_key"]: k for k in generated["s3"]["access_keys"]}
    for k in shipped["s3"]["access_keys"]:
        assert gen_keys[k["access_key"]] == k
    for a in shipped["accounts"]:
        assert a in generated["accounts"], a


def test_every_service_has_log_rotation_limits_and_a_healthcheck_port_of_its_role() -> None:
    # broke: no log rotation and no resource limits in the compose file
    cfg = load_config(DOCKER_YAML)
    services = _compose()["services"]
    assert set(services) == {n.host for n in cfg.cluster_map.nodes} | \
        {f.host for f in cfg.frontends}
    for name, svc in services.items():
        logging = svc.get("logging") or {}
        assert logging.get("driver") == "json-file", name
        assert {"max-size", "max-file"} <= set(logging.get("options") or {}), name
        assert svc.get("mem_limit") and svc.get("cpus"), name
        port = int(_env(svc)["AMBRY_HEALTH_PORT"])
        if svc["command"][0] == "server":
            assert port == cfg.cluster_map.node(svc["command"][-1]).http_port, name
        else:
            assert port == cfg.frontend_of(svc["command"][-1]).port, name


def test_no_anonymous_volumes_frontends_keep_no_data() -> None:
    # broke: the image's VOLUME gave every container (frontends too) an anonymous volume
    # that leaked on each recreate
    assert not [args for word, args in _dockerfile() if word == "VOLUME"]
    doc = _compose()
    named = set(doc.get("volumes") or {})
    for name, svc in doc["services"].items():
        for v in svc.get("volumes") or []:
            source = str(v).split(":", 1)[0]
            assert source.startswith("./") or source in named, (name, v)
        if svc["command"][0] == "frontend":
            assert not [v for v in svc.get("volumes") or [] if str(v).split(":")[0] in named]


def test_image_defaults_its_config_and_checks_health_without_python() -> None:
    # broke: `ambry admin` in a container fell back to config/local.yaml (not there), and
    # the HEALTHCHECK started Python + parsed the YAML every 5 s in every container
    instructions = _dockerfile()
    env = " ".join(args for word, args in instructions if word == "ENV")
    m = re.search(r"AMBRY_CONFIG=(\S+)", env)
    assert m, env
    copies = [args.split() for word, args in instructions if word == "COPY"]
    assert ["config/docker.yaml", m.group(1)] in copies
    health = next(args for word, args in instructions if word == "HEALTHCHECK")
    assert "python" not in health.lower(), health
    cmd = json.loads(health.split(" CMD ", 1)[1])
    probe = next(c for c in copies if c[-1] == cmd[0])
    assert probe[0] == "deploy/healthcheck.sh" and (ROOT / probe[0]).exists()
    assert "!deploy/healthcheck.sh" in (ROOT / ".dockerignore").read_text().splitlines()
    r = subprocess.run(["bash", "-n", str(ROOT / probe[0])], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr


def test_home_made_base_image_never_takes_the_official_python_name() -> None:
    # broke: deploy/build-image.sh tagged its debootstrap image python:3.11-slim, shadowing
    # the official image of that name for everything else on the docker host
    froms = [args.split()[0] for word, args in _dockerfile() if word == "FROM"]
    assert froms and all(f == "${AMBRY_BASE}" for f in froms), froms
    script = BUILD_IMAGE.read_text()
    own = re.search(r"^OWN_BASE=(\S+)$", script, re.MULTILINE)
    assert own and not own.group(1).startswith("python:"), own
    imports = re.findall(r"docker import .*?- \"\$(\w+)\"", script, re.DOTALL)
    assert imports == ["BASE"], imports
    # BASE is OWN_BASE on the debootstrap path (the branch that runs debootstrap)
    branch = script[script.rindex("else\n    BASE=", 0, script.index("debootstrap --variant")):]
    assert branch.startswith("else\n    BASE=$OWN_BASE"), branch[:80]
    assert '--build-arg AMBRY_BASE="$BASE"' in script
    r = subprocess.run(["bash", "-n", str(BUILD_IMAGE)], capture_output=True, text=True,
                       check=False)
    assert r.returncode == 0, r.stderr


def test_docs_and_script_agree_on_what_the_image_is_built_from() -> None:
    # broke: docs/operations.md said the working tree, the script built HEAD
    script = BUILD_IMAGE.read_text()
    assert re.search(r"^SOURCE=\$\{AMBRY_SOURCE:-HEAD\}$", script, re.MULTILINE)
    ops = " ".join((ROOT / "docs" / "operations.md").read_text().split())
    assert "builds the image from the **committed `HEAD`**" in ops
    assert "built from the working tree as it is" not in ops
    assert "`AMBRY_SOURCE=worktree` the working tree" in ops


def test_compose_exec_examples_run_without_a_tty() -> None:
    # broke: `docker-compose exec` examples without -T fail in scripts ("the input device
    # is not a TTY")
    files = [COMPOSE, ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "deploy").glob("*.sh"))]
    seen = 0
    for f in files:
        for line in f.read_text().splitlines():
            for m in re.finditer(r"docker(?:-compose| compose) exec\b([^`\n]*)", line):
                seen += 1
                assert re.search(r"(^|\s)-T\b", m.group(1)), f"{f.name}: {line.strip()}"
    assert seen > 0


def test_image_carries_the_erasure_coding_extra() -> None:
    # broke: the image installed plain `ambry`, so a node of a partition with an `ec:` policy
    # died at its first encode (pyeclib missing) inside the container
    runs = " ".join(args for word, args in _dockerfile() if word == "RUN")
    assert "'ambry[ec]'" in runs, runs
    assert "ambry.ec.codec" in runs  # the install stage proves the codec loads
    script = BUILD_IMAGE.read_text()
    wheel_lines = [ln for ln in script.splitlines() if "pip wheel" in ln]
    assert wheel_lines and all("[ec]" in ln for ln in wheel_lines), wheel_lines
