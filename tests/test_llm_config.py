"""Config: documented fields, YAML round trip, --set coercion, validation messages, presets."""

from __future__ import annotations

import dataclasses

import pytest

from llm.config import build as C
from llm.config.presets import PRESETS, get_preset


def test_every_field_has_a_docstring():
    docs = C.field_docs()
    assert set(docs) == set(C.FIELDS)
    assert all(len(d) > 10 for d in docs.values())


def test_yaml_round_trip(tmp_path):
    cfg = C.build_config(
        preset="tiny", overrides=["method=dapo", "debug_inject_nan_logp_at_steps=[3, 5]"]
    )
    C.save_yaml(cfg, tmp_path / "config.yaml")
    assert C.build_config(config_file=str(tmp_path / "config.yaml")) == cfg


@pytest.mark.parametrize(
    "item, key, value",
    [
        ("lr=1e-6", "lr", 1e-6),
        ("lr=3", "lr", 3.0),
        ("group_size=4", "group_size", 4),
        ("group_size=4.0", "group_size", 4),
        ("no_is=yes", "no_is", True),
        ("no_is=false", "no_is", False),
        ("eps_high=null", "eps_high", None),
        ("dynamic_sampling=true", "dynamic_sampling", True),
        ("debug_inject_nan_logp_at_steps=2,4", "debug_inject_nan_logp_at_steps", [2, 4]),
        ("instruction=Answer: x", "instruction", "Answer: x"),
    ],
)
def test_set_coerces_to_the_field_type(item, key, value):
    cfg = C.apply_overrides(C.TrainConfig(), C.parse_set([item]), where="--set")
    assert getattr(cfg, key) == value


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["metod=grpo"], "did you mean 'method'"),
        (["method=tic-grpo"], "did you mean 'tic_grpo'"),
        (["method=no_is"], "no_is=true"),
        (["minibatch_size=48"], "minibatch_size=48 must divide the rollout batch N"),
        (["minibatch_size=64", "microbatch_size=24"], "microbatch_size=24 must divide"),
        (["group_size=1"], "set group_size >= 2"),
        (["ref_model=/x", "beta=0"], "set beta > 0 or ref_model=''"),
        (["beta=-1"], "beta=-1.0 must be >= 0"),
        (["lr=abc"], "lr: cannot read 'abc' as float"),
        (["group_size=2.5"], "cannot read '2.5' as int"),
        (["no_is=maybe"], "cannot read 'maybe' as bool"),
        (["optimizer=adam"], "did you mean 'adamw'"),
        (["reward=mathh"], "did you mean 'math'"),
        (["temperature=0"], "temperature=0.0 must be > 0"),
        (["top_p=1.5"], "top_p=1.5 must be in (0, 1]"),
        (["eps_low=1.0"], "eps_low=1.0 must be in [0, 1)"),
        (["advantage_mode=zscore"], "advantage_mode='zscore' is not one of"),
        (["train_data=/no/such/file.parquet"], "does not exist"),
        (["optimizer=sgd", "weight_decay=0.1"], "weight_decay applies to adamw only"),
        (["overlong_buffer=9"], "overlong_buffer=9 must be in [0, max_new_tokens=4]"),
    ],
)
def test_invalid_configs_say_what_to_change(overrides, expected):
    with pytest.raises(C.ConfigError) as info:
        C.build_config(preset="tiny", overrides=overrides)
    assert expected in str(info.value)


def test_all_problems_are_reported_at_once():
    with pytest.raises(C.ConfigError) as info:
        C.build_config(preset="tiny", overrides=["metod=x", "lr=-1", "top_p=2"])
    assert len(info.value.problems) == 3


def test_method_defaults_come_from_the_methods_table():
    from ticgrpo import METHODS

    for name, row in METHODS.items():
        cfg = C.build_config(preset="tiny", overrides=[f"method={name}"])
        assert (cfg.eps_low, cfg.eps_high) == (row.eps_low, row.eps_high)
        assert cfg.advantage_mode == row.advantage_mode and cfg.aggregation == row.aggregation
        assert cfg.dynamic_sampling == (name == "dapo")
    cfg = C.build_config(preset="tiny", overrides=["method=dapo", "eps_high=0.3"])
    assert cfg.eps_high == 0.3 and cfg.overlong_buffer == 0  # 4 // 5


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_are_valid(name):
    cfg = C.apply_overrides(C.TrainConfig(), get_preset(name), where=name)
    cfg = C.validate(cfg, check_paths=False)
    n = cfg.prompts_per_step * cfg.group_size
    assert n % (cfg.minibatch_size or n) == 0


def test_paper_early_preset_keeps_the_earlier_reading():
    """The earlier versions' setting (v5's is tests/test_llm_presets.py)."""
    cfg = C.validate(C.apply_overrides(C.TrainConfig(), get_preset("paper-early"), where="early"),
                     check_paths=False)  # fmt: skip
    assert cfg.prompts_per_step * cfg.group_size == 128
    assert cfg.minibatch_size == 32 and cfg.epochs_per_rollout == 4
    assert cfg.optimizer == "sgd" and "Qwen2.5-Math-1.5B" in cfg.model
    # length-sorted micro-batches bounded by the area of 4 full-length rows
    assert cfg.microbatch_tokens == 4 * (cfg.max_prompt_tokens + cfg.max_new_tokens)
    with pytest.raises(ValueError, match="did you mean 'paper'"):
        get_preset("papr")


def test_unknown_yaml_key_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.001\ngroup_sise: 4\n")
    with pytest.raises(
        C.ConfigError, match=r"c.yaml: unknown config key 'group_sise'; did you mean 'group_size'"
    ):
        C.build_config(config_file=str(path))
    path.write_text("- a list\n")
    with pytest.raises(C.ConfigError, match="expected a mapping"):
        C.build_config(config_file=str(path))


def test_config_is_a_plain_dataclass():
    assert dataclasses.is_dataclass(C.TrainConfig)
    assert C.TrainConfig().debug_inject_nan_logp_at_steps == []


@pytest.mark.parametrize(
    "item, expected",
    [
        ("lr=nan", "lr: 'nan' is not a finite number"),
        ("lr=inf", "lr: 'inf' is not a finite number"),
        ("eps_high=nan", "eps_high: 'nan' is not a finite number"),
        ("eps_low=-inf", "eps_low: '-inf' is not a finite number"),
        ("beta=inf", "beta: 'inf' is not a finite number"),
        ("max_grad_norm=nan", "max_grad_norm: 'nan' is not a finite number"),
        ("overlong_penalty=inf", "overlong_penalty: 'inf' is not a finite number"),
        ("reward_timeout_s=1e999", "reward_timeout_s: '1e999' is not a finite number"),
        ("weight_decay=nan", "weight_decay: 'nan' is not a finite number"),
        ("seed=-1", "seed=-1 must be in [0, 2**32)"),
        ("seed=4294967296", "seed=4294967296 must be in [0, 2**32)"),
        ("device=cuda:", "device='cuda:' must be auto, cpu, cuda or cuda:N"),
        ("device=cuda:first", "device='cuda:first' must be"),
        ("device=gpu", "device='gpu' must be"),
    ],
)
def test_non_finite_numbers_seeds_and_devices_are_rejected_at_config_time(item, expected):
    with pytest.raises(C.ConfigError) as info:
        C.build_config(preset="tiny", overrides=[item])
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_non_finite_values_from_a_yaml_file_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: .nan\nbeta: .inf\nseed: 100000000000000000000\n")
    with pytest.raises(C.ConfigError) as info:
        C.build_config(preset="tiny", config_file=str(path))
    text = str(info.value)
    assert "lr: nan is not a finite number" in text and "beta: inf is not a finite" in text
    assert "seed=100000000000000000000 must be in" in text


def test_a_yaml_alias_bomb_for_a_string_key_is_refused_quickly(tmp_path):
    """Lists for string keys are never turned into text (nine levels of 9× aliases would be a
    ~3·10^9-character instruction); the message describes the value without expanding it."""
    import time

    levels = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi"):
        levels.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    path = tmp_path / "bomb.yaml"
    path.write_text("\n".join(levels).replace("a: &a", "instruction: &a", 1) + "\n")
    data = C.load_yaml(path)
    t0 = time.perf_counter()
    with pytest.raises(C.ConfigError) as info:
        C.apply_overrides(C.TrainConfig(), {"instruction": data["i"]}, where=str(path))
    assert time.perf_counter() - t0 < 1.0
    assert "instruction: cannot read a list of 9 items as str" in str(info.value)
    for key, value in (("method", ["grpo"]), ("model", {"a": 1}), ("lr", [1e-6]),
                       ("debug_inject_nan_logp_at_steps", [[1, 2]])):  # fmt: skip
        with pytest.raises(C.ConfigError, match=f"{key}: cannot read"):
            C.coerce(key, value)


def test_unreadable_yaml_files_are_config_errors(tmp_path):
    deep = tmp_path / "deep.yaml"
    deep.write_text("lr: " + "[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(C.ConfigError, match="deep.yaml: nested too deeply"):
        C.load_yaml(deep)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"lr: \xff\xfe\n")
    with pytest.raises(C.ConfigError, match="binary.yaml: cannot read it as a YAML text file"):
        C.load_yaml(binary)
    with pytest.raises(C.ConfigError, match="cannot read it as a YAML text file"):
        C.load_yaml(tmp_path)
