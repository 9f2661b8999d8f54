"""tools/install.py: uv gets what pip is configured with (indexes, wheel folders, constraints,
CA bundle), pip's best-version rule, and pip takes over where uv fails."""

import subprocess
import sys

from tools import install

PIP_CONFIG = """\
:env:.find-links='/opt/wheels'
global.cert='/etc/ssl/certs/ca.crt'
global.constraint='/etc/pip/constraints.txt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/more/simple'
global.find-links='/opt/wheels'
global.timeout='60'
install.no-index='false'
not a setting line
"""


def _pip_config(monkeypatch, text: str) -> None:
    real = subprocess.run

    def fake(command, *args, **kwargs):
        if command[1:] == ["-m", "pip", "config", "list"]:
            return subprocess.CompletedProcess(command, 0, stdout=text, stderr="")
        return real(command, *args, **kwargs)

    monkeypatch.setattr(install.subprocess, "run", fake)


def test_uv_gets_pips_indexes_wheel_folders_constraints_and_ca_bundle(monkeypatch):
    _pip_config(monkeypatch, PIP_CONFIG)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    command, env = install.uv_command("requirements-dev.txt")
    assert command[:5] == [sys.executable, "-m", "uv", "pip", "install"]
    assert command[command.index("--index-strategy") + 1] == "unsafe-best-match"
    pairs = list(zip(command, command[1:], strict=False))
    assert ("--extra-index-url", "file:///opt/pypi/simple") in pairs
    assert ("--extra-index-url", "file:///opt/more/simple") in pairs
    assert command.count("--find-links") == 1  # set twice in pip's config, passed once
    assert ("--constraint", "/etc/pip/constraints.txt") in pairs
    assert "--no-index" not in command and "--index-url" not in command
    assert command[-2:] == ["-r", "requirements-dev.txt"]
    assert env["SSL_CERT_FILE"] == "/etc/ssl/certs/ca.crt"


def test_without_pip_settings_uv_uses_its_defaults(monkeypatch):
    _pip_config(monkeypatch, "")
    command, _ = install.uv_command("r.txt")
    assert not {"--extra-index-url", "--find-links", "--constraint", "--no-index"} & set(command)


def test_pip_installs_where_uv_fails(monkeypatch, caplog):
    ran = []

    def run(command, env=None):
        ran.append(command)
        return command != ["uv", "pip"]  # uv itself installs; its install of the list fails

    monkeypatch.setattr(install, "run", run)
    monkeypatch.setattr(install, "uv_command", lambda requirements: (["uv", "pip"], None))
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: None)  # the byte-compiling
    monkeypatch.setattr(sys, "argv", ["install.py", "-r", "r.txt"])
    assert install.main() == 0
    assert ran[-1][-4:] == ["--quiet", "--no-compile", "-r", "r.txt"]
    assert "pip installs it instead" in caplog.text
