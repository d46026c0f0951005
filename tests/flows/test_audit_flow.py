"""The Prefect audit flow wraps the same audit and fails its run when a gate fails."""
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from benchmarks.synthetic_store import write_synthetic_store
from schemas.store import read_part_info, view_dir, write_feature_part


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory):
    """A private Prefect home and database: the ephemeral API starts once for this module."""
    home = tmp_path_factory.mktemp("prefect")
    env = {"PREFECT_HOME": str(home),
           "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/prefect.db",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def test_flow_passes_a_clean_store_and_fails_a_bad_one(prefect_home, workspace):
    from flows.audit import AuditGateFailed, audit_flow

    store = write_synthetic_store(workspace, 4, views=(("image", "orig"), ("text", "orig")),
                                  dim=3, shard_size=4, record_sha256=False)
    result = audit_flow(workspace.root, check_config=False)
    assert result["passed"] is True and result["items"] == 4

    def rewrite_item_2(**change):
        name = "part-00000.parquet"
        rows = pq.read_table(workspace.path(*view_dir("text", "orig"), name)).to_pylist()
        rows[1].update(change)
        write_feature_part(workspace, "text", "orig", 0,
                           pa.Table.from_pylist(rows, schema=pq.read_schema(
                               workspace.path(*view_dir("text", "orig"), name))),
                           read_part_info(workspace, "text", "orig", name))

    rewrite_item_2(embedding=[float("nan")] * 3)
    state = audit_flow(workspace.root, check_config=False, return_state=True)
    assert state.is_failed()
    with pytest.raises(AuditGateFailed, match="non_finite: 1 rows with NaN/Inf"):
        state.result()

    rewrite_item_2(embedding=None, status="missing", reason="empty text")
    with pytest.raises(AuditGateFailed) as failure:
        audit_flow(workspace.root, min_coverage=1.0, check_config=False, limit=1,
                   allowed_roots=[])
    assert str(failure.value).endswith("failed: coverage: below 100.00%: text/orig#0 3/4 "
                                       "(75.00%)")
