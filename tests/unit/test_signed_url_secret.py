"""The signed-URL secret: placeholders and short keys are refused, a dev cluster generates one.

The schema's default was ``change-me`` and the shipped configs carried
``local-development-secret``; both were accepted silently, so on any cluster that kept them
anyone could sign a URL (a GET of any blob id, a POST into any container) that the frontend
honoured.
"""

from __future__ import annotations

import stat
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from click.testing import CliRunner

from ambry.cli.cluster import frontend, with_signed_url_secret
from ambry.common.config import config_from_dict
from ambry.common.errors import InvalidArgument
from ambry.common.urlsecret import ENV_VAR, MIN_SECRET_CHARS, read_or_create_secret_file
from ambry.frontend.app import make_app
from ambry.frontend.signing import EXPIRES_PARAM, SIGNATURE_PARAM, _signature

GOOD = "Vq3c0mQ7yN1xW9pL2sT6uR8eA4dF5gH0jK7zX2cB"  # 40 characters, not a placeholder


def _raw(frontend_section: dict[str, Any], data_root: Path) -> dict[str, Any]:
    return {
        "data_dir": str(data_root),
        "datacenters": [{"name": "dc1", "id": 1}],
        "nodes": [{"id": "n1", "datacenter": "dc1", "host": "127.0.0.1", "port": 1,
                   "http_port": 2}],
        "partitions": {"count": 1},
        "cluster": {"replicas_per_datacenter": 1},
        "frontends": [{"datacenter": "dc1", "host": "127.0.0.1", "port": 3, "s3_port": 0}],
        "frontend": frontend_section,
    }


@pytest.mark.parametrize("secret", ["change-me", "local-development-secret", "CHANGE-ME",
                                    "change-me-before-going-to-production-please"])
def test_placeholder_signed_url_secret_is_refused_at_config_load(tmp_path: Path,
                                                                   secret: str) -> None:
    # broke: signed_url_secret: change-me was accepted, so anyone could forge signed URLs
    with pytest.raises(InvalidArgument, match="placeholder") as e:
        config_from_dict(_raw({"signed_url_secret": secret}, tmp_path))
    assert "frontend.signed_url_secret" in e.value.message
    assert "token_urlsafe" in e.value.message  # says how to make a good one


def test_short_or_repetitive_signed_url_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match=f"at least {MIN_SECRET_CHARS}"):
        config_from_dict(_raw({"signed_url_secret": "s3cr3t-but-short"}, tmp_path))
    with pytest.raises(InvalidArgument, match="random"):
        config_from_dict(_raw({"signed_url_secret": "ab" * 32}, tmp_path))
    cfg = config_from_dict(_raw({"signed_url_secret": GOOD}, tmp_path))
    assert with_signed_url_secret(cfg).frontend.signed_url_secret == GOOD


def test_frontend_refuses_to_start_without_a_secret(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # broke: a config without a secret ran with the schema default "change-me"
    monkeypatch.delenv(ENV_VAR, raising=False)
    import yaml

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_raw({}, tmp_path / "data")))
    res = CliRunner().invoke(frontend, ["--config", str(path), "--datacenter", "dc1"])
    assert res.exit_code != 0
    assert "no signed-URL secret" in res.output, res.output
    # a weak one from the environment is refused as well, naming where it came from
    res = CliRunner().invoke(frontend, ["--config", str(path), "--datacenter", "dc1"],
                             env={ENV_VAR: "change-me"})
    assert res.exit_code != 0 and f"${ENV_VAR}" in res.output, res.output


def test_dev_config_generates_one_secret_on_first_start_and_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    data = tmp_path / "data"
    cfg = config_from_dict(_raw({"signed_url_secret_file": "signed-url-secret",
                                 "signed_url_secret_generate": True}, data))
    first = with_signed_url_secret(cfg).frontend.signed_url_secret
    path = data / "signed-url-secret"
    assert len(first) >= MIN_SECRET_CHARS and path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert with_signed_url_secret(cfg).frontend.signed_url_secret == first  # kept
    assert not [p for p in data.iterdir() if p.name.endswith(".tmp")]
    # another data dir, another secret: never a value shared by every fresh cluster
    other = config_from_dict(_raw({"signed_url_secret_file": "signed-url-secret",
                                   "signed_url_secret_generate": True}, tmp_path / "d2"))
    assert with_signed_url_secret(other).frontend.signed_url_secret != first
    # the environment wins over the file
    monkeypatch.setenv(ENV_VAR, GOOD)
    assert with_signed_url_secret(cfg).frontend.signed_url_secret == GOOD


def test_missing_secret_file_is_an_error_unless_generating_and_a_weak_file_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    cfg = config_from_dict(_raw({"signed_url_secret_file": str(tmp_path / "absent")}, tmp_path))
    with pytest.raises(InvalidArgument, match="does not exist"):
        with_signed_url_secret(cfg)
    weak = tmp_path / "weak"
    weak.write_text("change-me\n")
    with pytest.raises(InvalidArgument, match="placeholder"):
        read_or_create_secret_file(weak, create=True)  # an existing file is never replaced
    assert weak.read_text() == "change-me\n"
    with pytest.raises(InvalidArgument, match="signed_url_secret_file"):
        config_from_dict(_raw({"signed_url_secret_generate": True}, tmp_path))


async def test_app_without_a_secret_honours_no_signed_url(tmp_path: Path) -> None:
    # an empty HMAC key would let anyone sign: an app built without a secret refuses signed
    # URLs with a 403 (a 500 before: verify_url treats an empty key as a programmer error)
    cfg = config_from_dict(_raw({}, tmp_path))
    assert cfg.frontend.signed_url_secret == ""
    path = "/AAEAAQABAAEAAAAAAAAAAKOW4MY9yJXfjxxjcd0htJs"
    expires = str(int(time.time()) + 600)
    forged = _signature(b"", "GET", path, {EXPIRES_PARAM: expires})
    async with TestClient(TestServer(make_app(cfg, "dc1"))) as client:
        r = await client.get("/signedUrl", headers={"x-ambry-url-type": "POST",
                                                    "x-ambry-service-id": "t",
                                                    "x-ambry-content-type": "a/b"})
        assert r.status == 403, await r.text()
        assert "no signed_url_secret" in await r.text()
        r = await client.get(path, params={EXPIRES_PARAM: expires, SIGNATURE_PARAM: forged})
        assert r.status == 403, await r.text()
