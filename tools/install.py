"""Install a requirements file into the running interpreter's environment, fast.

`make test` and `make demo` run it inside the fresh venv. uv (installed first, from the
registry) unpacks torch's ~5.5 GB of wheels on all cores: 18 s here where pip takes 80 s.
uv does not read pip's configuration, so the package indexes, wheel folders and constraints
that pip is configured with (`pip config list`: files and PIP_* variables) are passed on,
with pip's rule of the best version over all indexes. Where uv cannot be installed or fails,
pip installs the same file. Either way the result is byte-compiled on every core afterwards
(the tests' subprocesses and Ray workers would otherwise compile what they import, each
time, where PYTHONDONTWRITEBYTECODE is set).

    python tools/install.py -r requirements-dev.txt
"""

import argparse
import ast
import logging
import os
import re
import subprocess
import sys
import sysconfig

logger = logging.getLogger("install")

# pip's setting -> uv's flag; a setting may hold several values, separated by spaces
FLAGS = {
    "index-url": "--index-url",
    "extra-index-url": "--extra-index-url",
    "find-links": "--find-links",
    "constraint": "--constraint",
}


def pip_settings() -> dict[str, list[str]]:
    """What pip is configured with, by setting name (``pip config list``: ``section.name='v'``
    per line, sections global, install and :env:)."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], check=False,
                            capture_output=True, text=True)  # fmt: skip
    settings: dict[str, list[str]] = {}
    for line in listed.stdout.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        if not value or name not in (*FLAGS, "cert", "no-index"):
            continue
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            continue
        for item in str(value).split():
            if item not in settings.setdefault(name, []):
                settings[name].append(item)
    return settings


def uv_command(requirements: str) -> tuple[list[str], dict[str, str]]:
    """The ``uv pip install`` command and environment that install as pip would."""
    settings = pip_settings()
    command = [sys.executable, "-m", "uv", "pip", "install", "--quiet", "--python",
               sys.executable, "--index-strategy", "unsafe-best-match"]  # fmt: skip
    for name, flag in FLAGS.items():
        for value in settings.get(name, []):
            command += [flag, value]
    if settings.get("no-index", ["0"])[0].lower() in ("1", "true", "yes", "on"):
        command.append("--no-index")
    env = dict(os.environ)
    if settings.get("cert"):  # pip's CA bundle (a registry mirror's own certificate)
        env.setdefault("SSL_CERT_FILE", settings["cert"][0])
    return [*command, "-r", requirements], env


def run(command: list[str], env=None) -> bool:
    logger.info("%s", " ".join(command))
    return subprocess.run(command, env=env, check=False).returncode == 0


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="install: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--requirement", required=True)
    args = parser.parse_args()
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    fast = run([*pip, "uv"])
    if fast:
        fast = run(*uv_command(args.requirement))
    if not fast:
        logger.warning("uv did not install %s: pip installs it instead", args.requirement)
        if not run([*pip, "--no-compile", "-r", args.requirement]):
            return 1
    # like pip, a file that does not compile (torch's Python 3.12-only helpers) is skipped;
    # the packages' own test suites (pandas', scipy's, sympy's...) are not compiled: neither
    # clipdet nor its tests import them
    site = sysconfig.get_paths()["purelib"]
    skip = re.escape(site) + r"/.+/tests?/"
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-x", skip, site],
                   check=False, stdout=subprocess.DEVNULL)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
