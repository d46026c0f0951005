import pytest

from pipeline.ingest import ingest
from schemas.errors import ContractError
from schemas.fs import Workspace
from tests.pipeline.ingest_helpers import catalog, events, tiny_image, write_csv

GENRES = ["genre_unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
          "Documentary", "Drama", "Fantasy", "FilmNoir", "Horror", "Musical", "Mystery",
          "Romance", "SciFi", "Thriller", "War", "Western"]
ITEMS = ["movie_id", "title", *GENRES, "year", "overview"]


def movie(mid, title, genres, overview):
    return [mid, title, *[int(g in genres) for g in GENRES], "1995.0", overview]


def make_ml100k(root, items=None, ratings=None):
    items = items or [
        movie(1, "Toy Story (1995)", {"Animation", "Children"}, "Toys come alive."),
        movie(1, "Toy Story (1995)", {"Animation", "Children"}, "Toys come alive."),
        movie(2, "Heat (1995)", {"Crime", "SciFi"}, ""),
        movie(3, "Unrated (1995)", {"Drama"}, "Nobody saw it."),
    ]
    ratings = ratings or [[10, 1, 5, 1000], [10, 2, 3, 1600], [10, 1, 4, 9000], [11, 2, 1, 50]]
    write_csv(root / "items.csv", ITEMS, items)
    write_csv(root / "ratings.csv", ["user_id", "movie_id", "rating", "unix_timestamp"], ratings)
    tiny_image(root / "posters" / "1.jpg")
    return root


def test_ml100k_layout(tmp_path, workspace):
    s = ingest("movielens", make_ml100k(tmp_path / "ml"), workspace, progress=False)
    # 3 users' bursts: user 10 at 1000 s and 1600 s (10 min apart), then 9000 s (> 30 min gap)
    assert (s.items, s.with_image, s.with_text, s.events, s.sessions) == (2, 1, 2, 4, 3)
    items = catalog(workspace)
    assert items["1"]["text"] == ("Toy Story (1995). Genres: Animation, Children's. "
                                  "Toys come alive.")
    assert items["2"]["text"] == "Heat (1995). Genres: Crime, Sci-Fi."  # no overview
    assert items["2"]["category"] == "Crime|Sci-Fi" and items["2"]["image_uri"] is None
    assert events(workspace)[0]["timestamp"].timestamp() == 1000


def test_min_rating_and_catalog_all(tmp_path, workspace):
    s = ingest("movielens", make_ml100k(tmp_path / "ml"), workspace, min_rating=4,
               catalog="all", progress=False)
    assert (s.items, s.events) == (3, 2)


def test_ml_latest_layout(tmp_path, workspace):
    root = tmp_path / "latest"
    write_csv(root / "movies.csv", ["movieId", "title", "genres"],
              [[1, "Toy Story (1995)", "Adventure|Animation"], [5, "Odd (2000)",
                                                                "(no genres listed)"]])
    write_csv(root / "ratings.csv", ["userId", "movieId", "rating", "timestamp"],
              [[1, 1, 4.0, 964982703], [1, 5, 3.5, 964982931]])
    tiny_image(root / "posters" / "5.png", fmt="PNG")
    s = ingest("movielens", root, workspace, progress=False)
    items = catalog(workspace)
    assert (s.items, s.with_image, s.sessions) == (2, 1, 1)
    assert items["1"]["text"] == "Toy Story (1995). Genres: Adventure, Animation."
    assert items["5"]["text"] == "Odd (2000)." and items["5"]["image_uri"].endswith("5.png")


def test_bad_movielens_input(tmp_path, workspace):
    root = make_ml100k(tmp_path / "ml", ratings=[[10, 1, 5, 1000], [10, 99, 3, 1600]])
    with pytest.raises(ContractError) as err:
        ingest("movielens", root, workspace, progress=False)
    assert "ratings.csv" in str(err.value) and "item file does not list" in str(err.value)
    assert err.value.column == "movie_id" and err.value.rows == [1] and err.value.values == ["99"]

    make_ml100k(root, ratings=[[10, 1, 5, 1000], [10, 2, 3, -5]])
    with pytest.raises(ContractError) as err:
        ingest("movielens", root, workspace, progress=False)
    assert err.value.column == "unix_timestamp" and err.value.rows == [1]

    make_ml100k(root, items=[movie(1, "A (1995)", {"Drama"}, "x"), movie(1, "B (1995)", {"Drama"},
                                                                         "x")])
    with pytest.raises(ContractError, match="duplicate ids with different values"):
        ingest("movielens", root, workspace, progress=False)


@pytest.mark.data
def test_real_ml100k_mm_counts_match_its_readme(shared_data, tmp_path):
    ws = Workspace.open(tmp_path / "ws")
    s = ingest("movielens", shared_data / "ml100k_mm", ws, progress=False)
    # 1,663 rated movies, every one with a poster; 9 without overview still have title + genres
    assert (s.items, s.with_image, s.with_text) == (1_663, 1_663, 1_663)
    assert (s.events, s.sessions) == (99_815, 2_792)  # the README's 30-minute-gap sessions
    items = catalog(ws)
    for mid in ("1349", "1364", "1515", "1524", "1579", "1583", "1592", "1600", "1634"):
        r = items[mid]  # no overview in any row: text is title + genres only
        assert r["text"] == f"{r['title']}. Genres: {r['category'].replace('|', ', ')}."
    assert len(items["1"]["text"]) > 200  # Toy Story has its overview
