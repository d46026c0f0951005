"""Fixtures for the reliability tests: an S3 server (moto) on loopback."""
from __future__ import annotations

import logging
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
    with pytest.MonkeyPatch.context() as mp:  # restores the environment afterwards
        for k, v in {**S3_ENV, "AWS_ENDPOINT_URL": endpoint}.items():
            mp.setenv(k, v)
        try:
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A fresh bucket; returns ``s3://<bucket>``."""
    import boto3

    name = f"macl-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"
