-- macl audit: the DuckDB statements behind `macl audit`, in the order they run.
--
-- Inputs (registered by `macl audit`, or created by the preamble `macl audit --sql` prints):
--   items            catalog/items.parquet (item_idx is dense 1..N)
--   image_sources    (image_uri, sha256): sha256 of the current bytes of each catalog image
--   features         every readable feature part (hive partitions modality=/view=) + `filename`
--   part_metadata    (file_name, key, value): Parquet key-value metadata of those parts
--   part_dims        (part, dim): the embedding dimension each part stores
--   expected_groups  (modality, view, sample): what the features config asks for
-- Parameters: $n_items (catalog size) and $limit (how many examples a list keeps).
-- Each statement starts with a `-- name:` line; the audit reads them from this file.

-- name: catalog_sources
-- The current source hash of every item, as extraction computes it: sha256 of the UTF-8
-- `text` column, and sha256 of the image file's bytes.
CREATE OR REPLACE TEMP TABLE catalog_sources AS
SELECT i.item_idx, i.item_id, sha256(i.text) AS text_sha256, s.sha256 AS image_sha256
FROM items AS i
LEFT JOIN image_sources AS s ON s.image_uri = i.image_uri;

-- name: feature_flags
-- Every feature row with its verdicts. NaN/Inf and all-zero vectors are found through the
-- squared norm: a NaN/Inf (or null) element makes it non-finite, and only an all-zero vector
-- makes it 0. The native float32 dot product decides every row whose result is finite and
-- positive (then no element is NaN, Inf or null, and one is not zero); the rest -- null
-- elements (the dot product refuses them: TRY makes that NULL), NaN/Inf, zero, and float32
-- overflow or underflow -- are summed exactly in DOUBLE, element by element.
CREATE OR REPLACE TEMP VIEW feature_flags AS
SELECT f.filename AS part, f.modality, f.view, f.sample, f.item_idx, f.item_id, f.status,
       f.reason, len(f.embedding) AS dim,
       CASE WHEN f.sq_norm32 > 0 AND isfinite(f.sq_norm32) THEN f.sq_norm32::DOUBLE
            ELSE list_sum(list_transform(f.embedding,
                                         lambda x: coalesce(x::DOUBLE * x, 'NaN'::DOUBLE)))
       END AS sq_norm,
       c.item_idx IS NULL AS orphan,
       c.item_id <> f.item_id AS id_mismatch,
       c.item_idx IS NOT NULL AND f.source_sha256 IS DISTINCT FROM
           CASE f.modality WHEN 'text' THEN c.text_sha256
                           WHEN 'image' THEN c.image_sha256 END AS stale,
       f.status NOT IN ('ok', 'missing', 'error')
           OR (f.status = 'ok' AND f.embedding IS NULL)
           OR (f.status <> 'ok' AND (f.embedding IS NOT NULL OR f.reason IS NULL)) AS invalid
FROM (SELECT *, TRY(list_dot_product(embedding, embedding)) AS sq_norm32
      FROM features) AS f
LEFT JOIN catalog_sources AS c ON c.item_idx = f.item_idx;

-- name: group_stats
-- The one full scan of a clean store. Per (modality, view, sample): row counts, embedding
-- dimensions, bitmaps (bit i-1 = item i) of the catalog items that have a row and of those
-- that have an `ok` row.
CREATE OR REPLACE TEMP TABLE group_stats AS
SELECT modality, view, sample,
       count(*) AS rows,
       count(*) FILTER (status = 'ok') AS ok,
       count(*) FILTER (status = 'missing') AS missing,
       count(*) FILTER (status = 'error') AS error,
       count(*) FILTER (invalid) AS invalid,
       count(*) FILTER (NOT isfinite(sq_norm)) AS non_finite,
       count(*) FILTER (sq_norm = 0) AS all_zero,
       count(*) FILTER (orphan) AS orphans,
       count(*) FILTER (id_mismatch) AS id_mismatch,
       count(*) FILTER (stale) AS stale,
       min(dim) AS min_dim,
       max(dim) AS max_dim,
       bitstring_agg(item_idx, 1, $n_items) FILTER (NOT orphan) AS present,
       bitstring_agg(item_idx, 1, $n_items) FILTER (NOT orphan AND status = 'ok') AS covered
FROM feature_flags
GROUP BY modality, view, sample;

-- name: coverage_table
-- Coverage of every (modality, view, sample) the store holds or the config expects: catalog
-- items with an `ok` row. Duplicate rows = rows of catalog items beyond one per key.
CREATE OR REPLACE TEMP TABLE coverage AS
WITH keys AS (
    SELECT modality, view, sample FROM group_stats
    UNION
    SELECT modality, view, sample FROM expected_groups
)
SELECT k.modality, k.view, k.sample,
       $n_items::BIGINT AS items,
       coalesce(bit_count(g.covered), 0)::BIGINT AS covered,
       round(100.0 * coalesce(bit_count(g.covered), 0) / $n_items, 2) AS pct,
       coalesce(g.rows - g.orphans - bit_count(g.present), 0)::BIGINT AS duplicate_rows,
       g.covered AS covered_bits
FROM keys AS k
LEFT JOIN group_stats AS g USING (modality, view, sample);

-- name: coverage
SELECT modality, view, sample, items, covered, pct
FROM coverage
ORDER BY modality, view, sample;

-- name: lacking
-- Catalog items without an `ok` row: the first $limit of every group that lacks some.
SELECT c.modality, c.view, c.sample, i.item_idx, i.item_id
FROM coverage AS c
CROSS JOIN items AS i
WHERE c.covered < c.items
  AND (c.covered_bits IS NULL OR get_bit(c.covered_bits, (i.item_idx - 1)::INTEGER) = 0)
QUALIFY row_number() OVER (PARTITION BY c.modality, c.view, c.sample ORDER BY i.item_idx) <= $limit
ORDER BY c.modality, c.view, c.sample, i.item_idx;

-- name: quality
SELECT g.modality, g.view, g.sample, g.rows, g.ok, g.missing, g.error, g.invalid,
       g.non_finite, g.all_zero, c.duplicate_rows AS duplicates, g.orphans, g.id_mismatch,
       g.stale, g.min_dim, g.max_dim
FROM group_stats AS g
JOIN coverage AS c USING (modality, view, sample)
ORDER BY g.modality, g.view, g.sample;

-- name: problems
-- The first $limit items of each kind of bad row. `macl audit` skips this second scan when
-- group_stats counted no bad row.
SELECT problem, modality, view, sample, items
FROM (
    UNPIVOT (
        SELECT modality, view, sample,
               min(item_idx, $limit) FILTER (invalid) AS invalid,
               min(item_idx, $limit) FILTER (NOT isfinite(sq_norm)) AS non_finite,
               min(item_idx, $limit) FILTER (sq_norm = 0) AS all_zero,
               min(item_idx, $limit) FILTER (orphan) AS orphan,
               min(item_idx, $limit) FILTER (id_mismatch) AS id_mismatch,
               min(item_idx, $limit) FILTER (stale) AS stale
        FROM feature_flags
        WHERE invalid OR NOT isfinite(sq_norm) OR sq_norm = 0 OR orphan OR id_mismatch OR stale
        GROUP BY modality, view, sample
    )
    ON invalid, non_finite, all_zero, orphan, id_mismatch, stale
    INTO NAME problem VALUE items
)
ORDER BY problem, modality, view, sample;

-- name: duplicates
-- Keys with more than one row, the first $limit per group, and the parts that hold them.
SELECT f.modality, f.view, f.sample, f.item_idx, count(*) AS rows,
       list_sort(list(f.filename)) AS parts
FROM features AS f
SEMI JOIN (SELECT modality, view, sample FROM coverage WHERE duplicate_rows > 0) AS d
    USING (modality, view, sample)
GROUP BY f.modality, f.view, f.sample, f.item_idx
HAVING count(*) > 1
QUALIFY row_number() OVER (PARTITION BY f.modality, f.view, f.sample ORDER BY f.item_idx) <= $limit
ORDER BY f.modality, f.view, f.sample, f.item_idx;

-- name: reasons
-- Why rows are not `ok`. Quoted values and the detail after ': ' are folded so that reasons
-- that differ only by file name count together; `example` keeps one verbatim. Reads only the
-- small status and reason columns; `macl audit` skips it when group_stats counted no
-- missing/error row.
SELECT modality, view, status,
       regexp_replace(regexp_replace(reason, '''[^'']*''', '''...''', 'g'), ':\s.*$', '')
           AS reason,
       sum(n)::BIGINT AS rows,
       min(reason) AS example
FROM (
    SELECT modality, view, status, coalesce(reason, '(no reason)') AS reason, count(*) AS n
    FROM features
    WHERE status IN ('missing', 'error')
    GROUP BY ALL
)
GROUP BY ALL
ORDER BY rows DESC, modality, view, status, reason;

-- name: parts
-- Provenance of every part, from its Parquet key-value metadata `macl.info` (JSON).
CREATE OR REPLACE TEMP VIEW parts AS
SELECT file_name AS part,
       info ->> 'modality' AS modality,
       info ->> 'view' AS view,
       (info ->> 'shard')::BIGINT AS shard,
       info -> 'encoder' ->> 'name' AS encoder,
       info -> 'encoder' ->> 'weights_sha256' AS weights_sha256,
       (info -> 'encoder' ->> 'dim')::BIGINT AS declared_dim,
       (info -> 'view_params')::VARCHAR AS view_params,
       (info ->> 'seed')::BIGINT AS seed,
       (info ->> 'samples')::BIGINT AS samples,
       info ->> 'cache_key' AS cache_key
FROM (SELECT file_name, decode(value)::JSON AS info
      FROM part_metadata
      WHERE decode(key) = 'macl.info');

-- name: encoders
-- One row per (modality, encoder, weights): declared and stored dimensions, views, parts.
-- Two rows for one modality, or two dimensions on one row, are findings.
SELECT p.modality, p.encoder, p.weights_sha256, p.declared_dim,
       list_sort(list_distinct(list(d.dim))) AS stored_dims,
       list_sort(list_distinct(list(p.view))) AS views,
       count(*) AS parts
FROM parts AS p
LEFT JOIN part_dims AS d USING (part)
GROUP BY p.modality, p.encoder, p.weights_sha256, p.declared_dim
ORDER BY p.modality, p.encoder, p.weights_sha256, p.declared_dim;

-- name: provenance
-- How each view was made, per its parts: two rows for one view mean its parts disagree.
SELECT modality, view, encoder, weights_sha256, view_params, seed, samples,
       count(*) AS parts
FROM parts
GROUP BY ALL
ORDER BY modality, view, encoder, weights_sha256, view_params, seed, samples;
