import json

import pytest

from pocketlm.model.config import ModelConfig
from pocketlm.model.presets import resolve_config
from pocketlm.errors import UserError
from pocketlm.model.presets import PRESETS, get_preset


def test_defaults_derive_head_dim_and_kv_heads():
    cfg = ModelConfig(hidden_size=256, num_heads=8)
    assert cfg.head_dim == 32 and cfg.num_kv_heads == 8


@pytest.mark.parametrize("kw, needle", [
    (dict(hidden_size=100, num_heads=3), "does not divide hidden_size"),
    (dict(num_heads=8, num_kv_heads=3, hidden_size=256), "must divide num_heads"),
    (dict(hidden_size=0), "must be positive"),
    (dict(num_layers=-2), "must be positive"),
    (dict(activation="tanh"), "unknown activation"),
    (dict(vocab_size=1.5), "must be an integer"),
    (dict(rope_theta=0), "rope_theta"),
])
def test_validation_messages(kw, needle):
    with pytest.raises(UserError, match=needle):
        ModelConfig(**kw)


@pytest.mark.parametrize("name", list(PRESETS))
def test_hf_dict_round_trip(name):
    cfg = get_preset(name)
    if not cfg.gated_mlp:
        pytest.skip("plain MLP has no HF form")
    back = ModelConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict())))
    assert back == cfg


def test_yaml_and_json_round_trip(tmp_path):
    cfg = get_preset("phonelm-1.5b")
    for suffix in (".yaml", ".json"):
        path = tmp_path / f"c{suffix}"
        cfg.save(path)
        assert ModelConfig.from_file(path) == cfg


def test_hf_config_transformers_v4_and_v5_forms():
    base = get_preset("tiny").to_hf_dict()
    v5 = dict(base)
    theta = v5.pop("rope_theta")
    v5["rope_parameters"] = {"rope_type": "default", "rope_theta": theta * 2}
    assert ModelConfig.from_hf_dict(v5).rope_theta == theta * 2


def test_plain_mlp_refuses_hf_export():
    with pytest.raises(UserError, match="non-gated"):
        ModelConfig(gated_mlp=False).to_hf_dict()


def test_resolve_config_errors(tmp_path):
    with pytest.raises(UserError, match="unknown preset"):
        resolve_config("no-such-preset")
    with pytest.raises(UserError, match="not found"):
        resolve_config(str(tmp_path / "missing.yaml"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="malformed JSON"):
        resolve_config(str(bad))
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="malformed YAML"):
        resolve_config(str(bad_yaml))
    unknown = tmp_path / "u.yaml"
    unknown.write_text("hidden_size: 64\nnum_heads: 4\nwidth: 3\n")
    with pytest.raises(UserError, match="unknown config field.*width"):
        resolve_config(str(unknown))
