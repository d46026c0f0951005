"""MovieLens: the ml100k_mm layout (items.csv with genre flags + TMDB overview) and ml-latest.

ml100k_mm: ``ratings.csv`` (user_id, movie_id, rating, unix_timestamp) + ``items.csv``
(movie_id, title, 19 genre flags, overview, ...) + ``posters/<movie_id>.jpg``.
ml-latest:  ``ratings.csv`` (userId, movieId, rating, timestamp) + ``movies.csv``
(movieId, title, genres "A|B") + optional ``posters/<movieId>.<ext>``.

Every rating is an event (``min_rating`` keeps only ratings at or above it). Users rate in
bulk, so sessions are cut later by a 30-minute gap. Item text = title + genres + overview.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.ingest.base import (
    SourceData,
    catalog_ids,
    check_known_items,
    compose_text,
    events_table,
    image_index,
    key_column,
    match_rows,
    numbers,
    read_csv,
    require_file,
    source_items,
    unique_items,
)
from pipeline.sessions import SessionRule
from schemas.errors import ContractError
from schemas.validate import coerce_timestamps

FORMAT = "movielens"
ML100K_GENRES = (
    "genre_unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "FilmNoir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "SciFi",
    "Thriller",
    "War",
    "Western",
)
GENRE_NAMES = {
    "genre_unknown": None,
    "Children": "Children's",
    "FilmNoir": "Film-Noir",
    "SciFi": "Sci-Fi",
}


def load(
    source: Path,
    *,
    catalog: str = "events",
    min_rating: float | None = None,
    posters: Path | None = None,
) -> SourceData:
    source = Path(source).resolve()
    ratings_path = require_file(source / "ratings.csv", "MovieLens ratings")
    if (source / "items.csv").is_file():
        layout, item_path = "ml100k_mm", source / "items.csv"
        cols = {"user": "user_id", "item": "movie_id", "rating": "rating", "time": "unix_timestamp"}
    elif (source / "movies.csv").is_file():
        layout, item_path = "ml-latest", source / "movies.csv"
        cols = {"user": "userId", "item": "movieId", "rating": "rating", "time": "timestamp"}
    else:
        raise ContractError(str(source), "no items.csv (ml100k_mm) or movies.csv (ml-latest) found")

    ratings = read_csv(ratings_path, required=tuple(cols.values()))
    shown = str(ratings_path)
    if min_rating is not None:
        score = numbers(ratings, cols["rating"], shown)
        ratings = ratings.filter(pc.greater_equal(score, min_rating).fill_null(False))
    item_ids = key_column(ratings, cols["item"], shown)
    users = key_column(ratings, cols["user"], shown)
    when = coerce_timestamps(
        numbers(ratings, cols["time"], shown, integer=True), shown, cols["time"], unit="s"
    )

    if layout == "ml100k_mm":
        movies = read_csv(item_path, required=("movie_id", "title"))
        genre_cols = [g for g in ML100K_GENRES if g in movies.column_names]
        fields = ["title", *genre_cols, "overview"]
        movies = unique_items(
            movies, "movie_id", [f for f in fields if f in movies.column_names], str(item_path)
        )
        flags = {g: movies.column(g).to_pylist() for g in genre_cols}
        genres = [
            "|".join(
                GENRE_NAMES.get(g, g)
                for g in genre_cols
                if flags[g][i] == "1" and GENRE_NAMES.get(g, g)
            )
            for i in range(movies.num_rows)
        ]
        movies = movies.append_column("genres_joined", pa.array(genres, pa.string()))
        key = "movie_id"
    else:
        movies = read_csv(item_path, required=("movieId", "title", "genres"))
        movies = unique_items(movies, "movieId", ["title", "genres"], str(item_path))
        genres = [
            None if g in (None, "(no genres listed)") else g
            for g in movies.column("genres").to_pylist()
        ]
        movies = movies.append_column("genres_joined", pa.array(genres, pa.string()))
        key = "movieId"
    movie_ids = key_column(movies, key, str(item_path))
    check_known_items(item_ids, movie_ids, shown, cols["item"])

    ids = catalog_ids(catalog, item_ids, movie_ids)
    ids = pa.array(sorted(ids.to_pylist(), key=lambda s: (len(s), s)), pa.string())
    _, field = match_rows(ids, movies, key)
    genre_text = [
        None if g is None else g.replace("|", ", ") for g in field("genres_joined").to_pylist()
    ]
    text = compose_text(
        [("", field("title")), ("Genres", genre_text), ("", field("overview"))], len(ids)
    )

    poster_dir = Path(posters).resolve() if posters else source / "posters"
    images = image_index(poster_dir)
    paths = [images.get(i) for i in ids.to_pylist()]
    notes = []
    missing = sum(p is None for p in paths)
    if missing:
        notes.append(f"{missing:,} items have no poster: image_uri = null")
    if layout == "ml100k_mm":
        no_overview = int(np.sum(field("overview").is_null().to_numpy(zero_copy_only=False)))
        if no_overview:
            notes.append(f"{no_overview:,} items have no overview (text = title + genres)")
    unrated = len(movie_ids) - len(pc.unique(item_ids))
    if unrated and catalog == "events":
        notes.append(
            f"{unrated:,} movies have no rating and are not in the catalog "
            "(--catalog all keeps them)"
        )
    items = source_items(
        ids, title=field("title"), text=text, image_path=paths, category=field("genres_joined")
    )
    events = events_table(item_ids, user_id=users, timestamp=when)
    return SourceData(
        FORMAT,
        str(source),
        items,
        events,
        SessionRule("gap", 30.0),
        image_roots=[str(poster_dir)] if images else [],
        notes=notes,
        info={"layout": layout, "min_rating": min_rating},
    )
