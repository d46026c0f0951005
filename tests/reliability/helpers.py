"""Helpers shared by the reliability tests: tiny features configs, part stamps, damage."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import yaml

from schemas.fs import Workspace
from schemas.store import list_views, view_dir

#: two views per modality, two items per part: small enough for the default suite
TINY_FEATURES = {"shard_size": 2, "loader_workers": 1, "prefetch_batches": 1,
                 "image": {"batch_size": 2, "device": "cpu", "views": {"orig": {}, "hflip": {}}},
                 "text": {"batch_size": 2, "device": "cpu", "views": {"orig": {}, "swap": {}}}}
#: one view per modality
ORIG_ONLY = {**TINY_FEATURES,
             "image": {**TINY_FEATURES["image"], "views": {"orig": {}}},
             "text": {**TINY_FEATURES["text"], "views": {"orig": {}}}}


def write_config(path: Path, config: dict) -> str:
    path.write_text(yaml.safe_dump(config))
    return str(path)


def stamps(ws: Workspace) -> dict[tuple[str, str, str], int | None]:
    """Every part file's modification time in ns (tells which parts a run rewrote)."""
    from schemas.store import list_parts

    return {(m, v, n): ws.fs.get_file_info(ws.path(*view_dir(m, v), n)).mtime_ns
            for m, v in list_views(ws) for n in list_parts(ws, m, v)}


def part_path(ws: Workspace, modality: str, view: str, shard: int) -> str:
    return ws.path(*view_dir(modality, view), f"part-{shard:05d}.parquet")


def _rewrite(ws: Workspace, path: str, data: bytes) -> None:
    with ws.fs.open_output_stream(path) as out:  # in place, as a failing disk would
        out.write(data)


def truncate_part(ws: Workspace, path: str) -> None:
    data = ws.fs.open_input_stream(path).read()
    _rewrite(ws, path, data[: len(data) // 2])


def flip_embedding_bit(ws: Workspace, path: str) -> None:
    """Flip one bit inside the embedding column's last data page (footer stays valid)."""
    with ws.fs.open_input_file(path) as f:
        meta = pq.ParquetFile(f).metadata.row_group(0)
        data = bytearray(f.read_at(f.size(), 0))
    emb = next(meta.column(i) for i in range(meta.num_columns)
               if meta.column(i).path_in_schema.startswith("embedding"))
    start = emb.dictionary_page_offset or emb.data_page_offset
    data[start + emb.total_compressed_size - 8] ^= 0x10
    _rewrite(ws, path, bytes(data))
