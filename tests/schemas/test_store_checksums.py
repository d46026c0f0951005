"""Feature parts carry Parquet page CRCs, so a flipped bit in their data is detectable."""
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from schemas.store import view_dir, write_feature_part

PROV = {"modality": "text", "view": "orig", "shard": 0, "cache_key": "k", "encoder": {"name": "e"},
        "view_params": {}, "seed": 0, "samples": 1, "versions": {}, "created_at": "now"}


def test_flipped_data_bit_fails_checksum_verification(workspace):
    n, dim = 64, 8
    table = pa.table({
        "item_idx": range(1, n + 1), "item_id": [f"i{i}" for i in range(n)],
        "modality": ["text"] * n, "view": ["orig"] * n, "sample": pa.array([0] * n, pa.int32()),
        "embedding": pa.array([[float(i)] * dim for i in range(n)], pa.list_(pa.float32(), dim)),
        "source_sha256": ["h"] * n, "status": ["ok"] * n, "reason": pa.nulls(n, pa.string())})
    name = write_feature_part(workspace, "text", "orig", 0, table, PROV)
    path = workspace.path(*view_dir("text", "orig"), name)
    assert pq.ParquetFile(path, page_checksum_verification=True).read().num_rows == n
    meta = pq.ParquetFile(path).metadata.row_group(0)
    emb = [meta.column(i) for i in range(meta.num_columns)
           if meta.column(i).path_in_schema.startswith("embedding")][0]
    data = bytearray(open(path, "rb").read())
    data[emb.data_page_offset + emb.total_compressed_size // 2] ^= 0x04  # inside the page body
    open(path, "wb").write(bytes(data))
    with pytest.raises(OSError, match="CRC"):
        pq.ParquetFile(path, page_checksum_verification=True).read()
