"""Fixtures: the tiny random-weight open_clip ViT and timm ViT (registered, as checkpoints),
detector folders in the reference layout, generated images, loopback HTTP and S3 servers, a
local Ray instance and headless Chromium; and how pytest-xdist's workers share the tests.
Plain helpers are in helpers.py."""

import http.server
import json
import os
import threading
from pathlib import Path

# One OpenMP thread per test process (before torch loads; a value already set is kept): the
# tests' tensors are small, and on 2 cores a second thread's waiting costs more than it gives
# (the fast suite: 59 s instead of 68 s). Ray's actors set their own thread counts.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import open_clip
import pytest
import timm
import torch
from helpers import (
    CHROMIUM,
    TIMM_MODEL,
    TINY_BACKBONE,
    TINY_CONFIG,
    TINY_MODEL,
    WORKER_ENV,
    clip_config,
    clip_head_state,
    make_image,
    resnet_state,
    write_model_folder,
)

from clipdet.models.registry import register_backbone


@pytest.fixture(scope="session")
def tiny_timm_checkpoint(tmp_path_factory) -> Path:
    """timm's test_vit with random weights, saved as ``model.state_dict()``."""
    torch.manual_seed(1)
    model = timm.create_model(TIMM_MODEL)
    path = tmp_path_factory.mktemp("tiny_timm") / "test_vit.pth"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_clip_checkpoint(tmp_path_factory) -> Path:
    """A full (image + text) open_clip checkpoint of the tiny ViT, as open_clip saves them."""
    folder = tmp_path_factory.mktemp("tiny_clip")
    config_path = folder / f"{TINY_MODEL}.json"
    config_path.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config_path)
    register_backbone(TINY_BACKBONE, TINY_MODEL)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    path = folder / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def weights_dir(tmp_path_factory, tiny_clip_checkpoint) -> Path:
    """Two CLIP heads on the tiny backbone (one with `module.` keys), a projected-feature head
    and a ResNet, in the reference layout."""
    root = tmp_path_factory.mktemp("weights")
    write_model_folder(root, "tiny_a", clip_config("tiny_a"), clip_head_state(1))
    write_model_folder(root, "tiny_b", clip_config("tiny_b"), clip_head_state(2, prefix="module."))
    write_model_folder(
        root,
        "tiny_proj",
        clip_config("tiny_proj", next_to_last=False),
        clip_head_state(3, dim=TINY_CONFIG["embed_dim"]),
    )
    write_model_folder(
        root,
        "res_tiny",
        {
            "arch": "res50nodown",
            "model_name": "res_tiny",
            "norm_type": "resnet",
            "patch_size": None,
            "weights_file": "weights.pth",
        },
        resnet_state(4),
    )
    return root


@pytest.fixture
def image_dir(tmp_path) -> Path:
    folder = tmp_path / "images"
    for i in range(5):
        make_image(folder / f"img{i}.png", size=(40 + 8 * i, 36 + 4 * i), seed=i)
    return folder


@pytest.fixture(autouse=True)
def _no_network_weights(monkeypatch):
    """Never reach the internet from a test: downloads go to an unroutable local port, and the
    Hugging Face hub is offline (its client reads HF_HUB_OFFLINE once, when imported: the
    setting it read is set too)."""
    import huggingface_hub.constants

    monkeypatch.setenv("CLIPDET_WEIGHTS_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("CLIPDET_RETRY_BACKOFF", "0")  # retries, without the waits


@pytest.fixture(scope="session")
def s3_server():
    """An S3-compatible server (moto) on 127.0.0.1 with one bucket; the AWS settings that
    reach it, also set in this process."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://{host}:{port}",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import boto3

    boto3.client("s3").create_bucket(Bucket="clipdet")
    yield env
    server.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def is_ray_test(nodeid: str) -> bool:
    """The tests on the local Ray instance live in tests/test_ray_*.py."""
    return Path(nodeid.split("::")[0]).name.startswith("test_ray_")


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are collected everywhere and skipped where there is no GPU. The
    Ray tests come first (the longest run of tests: see pytest_xdist_make_scheduler)."""
    misplaced = [
        i.nodeid for i in items if "ray_instance" in i.fixturenames and not is_ray_test(i.nodeid)
    ]
    if misplaced:
        raise pytest.UsageError(f"tests on the Ray instance belong in test_ray_*.py: {misplaced}")
    items.sort(key=lambda item: not is_ray_test(item.nodeid))  # stable: otherwise as collected
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With pytest-xdist (``make test`` runs two workers): every Ray test in one worker, one
    after another from the start (one Ray instance, whose idle workers serve the later runs;
    they use about 1.3 cores), and each other test module, whole, in whichever worker is free
    (its module fixtures built once)."""
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "ray" if is_ray_test(nodeid) else nodeid.split("::")[0]

    config.option.loadscopereorder = False  # the collection's order: the Ray tests first
    return RayTestsTogether(config, log)


@pytest.fixture
def http_root(tmp_path):
    """Serve a folder on 127.0.0.1 for the duration of a test; yields (folder, base URL, hits)."""
    root = tmp_path / "served"
    root.mkdir()
    hits = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(root), **kw)

        def log_message(self, *args):
            hits.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}", hits
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def ray_instance(s3_server):  # noqa: ARG001 -- its settings must exist before Ray starts
    """A local Ray instance, started once for the session (each start costs seconds);
    workers see the loopback S3 server's settings."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        logging_level="WARNING",
        runtime_env={"env_vars": {**WORKER_ENV, **s3_server}},
        # keep idle workers (those that ran the prepare stage have imported torch and clipdet:
        # ~4.4 s of CPU each here) for the later runs of the session, not 1 s
        _system_config={
            "num_workers_soft_limit": 4,
            "idle_worker_killing_time_threshold_ms": 900_000,
        },  # fmt: skip
    )
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is not installed (make test installs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        yield browser
        browser.close()
