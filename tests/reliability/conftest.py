"""Fixtures for the reliability tests: an S3 server (moto) on loopback."""
from __future__ import annotations

import logging
import os
import uuid

import pytest

S3_ENV = {"AWS_ACCESS_KEY_ID": "macl-test", "AWS_SECRET_ACCESS_KEY": "macl-test",
          "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (a free port) for the session. Credentials and the
    endpoint go through the environment (``AWS_ENDPOINT_URL``), as a user would configure an
    S3-compatible store, so CLI subprocesses, Dask workers and torchrun ranks reach it too.
    Yields the endpoint URL."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket; returns ``s3://<bucket>``."""
    import boto3

    name = f"macl-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"
