"""Typed config: YAML round trip, unknown keys and wrong types rejected, --set through types."""
import pytest

from trainer.config import MODELS, ConfigError, RunConfig, parse_override, resolve_config


def test_round_trip_yaml():
    cfg = resolve_config("macl", None, ["train.epochs=7", "loss.alpha=0.25",
                                        "eval.ks=[5, 10]", "train.select_metric=mrr@10"])
    again = RunConfig.from_yaml(cfg.to_yaml())
    assert again == cfg
    assert again.train.epochs == 7 and again.loss.alpha == 0.25 and again.eval.ks == [5, 10]
    assert again.sha256() == cfg.sha256()


@pytest.mark.parametrize("model", MODELS)
def test_every_preset_resolves(model):
    cfg = resolve_config(model)
    assert cfg.model == model


def test_unknown_top_level_key_rejected():
    with pytest.raises(ConfigError, match="unknown key.*'trian'"):
        RunConfig.from_dict({"trian": {}})


def test_unknown_nested_key_rejected():
    with pytest.raises(ConfigError, match=r"train\.epoch"):
        RunConfig.from_dict({"train": {"epoch": 3}})


def test_unknown_key_in_set_rejected():
    with pytest.raises(ConfigError, match="loss.gamma"):
        resolve_config("macl", None, ["loss.gamma=1"])


def test_unknown_key_in_config_file_names_the_file(tmp_path):
    f = tmp_path / "my.yaml"
    f.write_text("arch:\n  dims: 32\n")
    with pytest.raises(ConfigError, match="my.yaml.*arch.dims"):
        resolve_config("sasrec", f)


def test_set_values_go_through_the_types():
    cfg = resolve_config("sasrec", None, ["train.lr=1e-3", "train.epochs=4", "data.protocol=x",
                                          "train.select_on_test=true", "data.attributes=[brand]"])
    assert cfg.train.lr == pytest.approx(1e-3) and isinstance(cfg.train.lr, float)
    assert cfg.train.epochs == 4 and cfg.data.protocol == "x"
    assert cfg.train.select_on_test is True and cfg.data.attributes == ["brand"]
    with pytest.raises(ConfigError, match="train.epochs.*integer"):
        resolve_config("sasrec", None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="train.epochs.*integer"):
        resolve_config("sasrec", None, ["train.epochs=2.5"])
    with pytest.raises(ConfigError, match="loss.negatives.*one of"):
        resolve_config("macl", None, ["loss.negatives=easy"])
    with pytest.raises(ConfigError, match="true or false"):
        resolve_config("sasrec", None, ["train.progress=1"])


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="divisible"):
        resolve_config("sasrec", None, ["arch.dim=10", "arch.heads=4"])
    with pytest.raises(ConfigError, match="select_metric"):
        resolve_config("sasrec", None, ["train.select_metric=hr@50"])
    with pytest.raises(ConfigError, match="paper_code"):
        resolve_config("sasrec", None, ["arch.paper_code=true"])
    with pytest.raises(ConfigError, match="--model"):
        resolve_config("sasrec", None, ["model=macl"])


def test_parse_override_reads_yaml_values():
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])
    assert parse_override("x=null") == (["x"], None)
    with pytest.raises(ConfigError):
        parse_override("novalue")
