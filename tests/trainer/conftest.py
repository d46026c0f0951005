"""Fixtures: one tiny synthetic shop (with and without a feature store) per test module."""
import pytest

from tests.trainer.synthetic import TINY, make_workspace


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    path = tmp_path_factory.mktemp("shop") / "ws"
    make_workspace(path)
    return str(path)


@pytest.fixture(scope="module")
def id_only_shop(tmp_path_factory):
    path = tmp_path_factory.mktemp("idshop") / "ws"
    make_workspace(path, with_store=False)
    return str(path)


@pytest.fixture
def tiny():
    return list(TINY)
