"""The JSON schemas and the config dataclasses must describe the same keys, types and defaults."""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Literal, Union

import pytest
import yaml

from medlens import config as C
from medlens.errors import ConfigError


def _schema_types(prop: dict) -> set[str]:
    t = prop.get("type")
    return set(t) if isinstance(t, list) else {t} if t else set()


def _expected_types(tp) -> set[str]:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return set().union(*(_expected_types(a) for a in typing.get_args(tp)))
    if tp is type(None):
        return {"null"}
    if origin is Literal:
        return {"string"}
    if origin is list:
        return {"array"}
    if origin is dict or dataclasses.is_dataclass(tp):
        return {"object"}
    return {{int: "integer", float: "number", str: "string", bool: "boolean"}[tp]}


def _walk(cls, schema: dict, path: str):
    assert schema.get("additionalProperties") is False, f"{path}: additionalProperties must be false"
    assert "required" in schema, f"{path}: every object lists its required keys"
    props = schema["properties"]
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert set(props) == set(fields), (
        f"{path}: schema keys {sorted(props)} != dataclass fields {sorted(fields)}"
    )
    required = {
        n
        for n, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert set(schema["required"]) == required, f"{path}: required keys differ"
    hints = typing.get_type_hints(cls)
    for name, f in fields.items():
        prop, key = props[name], f"{path}.{name}".lstrip(".")
        assert prop.get("description"), f"{key}: no description"
        assert _schema_types(prop) == _expected_types(hints[name]), f"{key}: types differ"
        tp = hints[name]
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        literal = (
            tp
            if typing.get_origin(tp) is Literal
            else next((a for a in args if typing.get_origin(a) is Literal), None)
        )
        if literal is not None:
            allowed = set(typing.get_args(literal)) | ({None} if type(None) in typing.get_args(tp) else set())
            enum = (
                prop["items"]["enum"] if typing.get_origin(tp) is list else prop["enum"]
            )  # a list of choices
            assert set(enum) == allowed, f"{key}: enum differs"
        if dataclasses.is_dataclass(tp):
            _walk(tp, prop, key)
            continue
        if typing.get_origin(tp) is dict and dataclasses.is_dataclass(typing.get_args(tp)[1]):
            _walk(typing.get_args(tp)[1], prop["additionalProperties"], key + ".<name>")
        if f.default is not dataclasses.MISSING:
            assert prop.get("default", "<absent>") == f.default, f"{key}: default differs"
        elif f.default_factory is not dataclasses.MISSING:
            assert prop.get("default", "<absent>") == f.default_factory(), f"{key}: default differs"


@pytest.mark.parametrize(
    "cls, schema_file",
    [(C.PipelineConfig, "config.schema.yaml"), (C.ExperimentConfig, "experiment.schema.yaml")],
)
def test_schema_matches_dataclasses(repo, cls, schema_file):
    schema = yaml.safe_load((repo / "workflow" / "schemas" / schema_file).read_text())
    _walk(cls, schema, "")


def test_unknown_key_names_the_dotted_path():
    with pytest.raises(
        ConfigError, match=r"demo\.yaml: encoder\.lrr: unknown key 'lrr'; expected one of .*\blearning_rate\b"
    ):
        C.from_dict(C.ExperimentConfig, {"datasets": ["a"], "encoder": {"lrr": 1}}, source="demo.yaml")


def test_wrong_type_names_the_key_and_the_type():
    with pytest.raises(
        ConfigError, match=r"x\.yaml: split\.train: 'a lot' has the wrong type; expected float"
    ):
        C.from_dict(C.ExperimentConfig, {"datasets": ["a"], "split": {"train": "a lot"}}, source="x.yaml")


def test_missing_required_key():
    with pytest.raises(ConfigError, match=r"x\.yaml: datasets: missing required key"):
        C.from_dict(C.ExperimentConfig, {}, source="x.yaml")


def test_integers_are_accepted_for_floats_but_booleans_are_not_integers():
    cfg = C.from_dict(C.ExperimentConfig, {"datasets": ["a"], "split": {"train": 1, "val": 0, "test": 0}})
    assert cfg.split.train == 1.0 and isinstance(cfg.split.train, float)
    with pytest.raises(ConfigError, match="split.seed"):
        C.from_dict(C.ExperimentConfig, {"datasets": ["a"], "split": {"seed": True}})


def test_schema_validation_reports_the_key_path(repo, tmp_path):
    schema = repo / "workflow" / "schemas" / "experiment.schema.yaml"
    with pytest.raises(ConfigError, match=r"e\.yaml: evaluate\.zero_shot\.colour: unknown key 'colour'"):
        C.validate_against_schema(
            {"datasets": ["a"], "evaluate": {"zero_shot": {"colour": 1}}}, schema, source="e.yaml"
        )
    with pytest.raises(
        ConfigError, match=r"e\.yaml: encoder\.per_device_train_batch_size: 'big' is not of type 'integer'"
    ):
        C.validate_against_schema(
            {"datasets": ["a"], "encoder": {"per_device_train_batch_size": "big"}}, schema, source="e.yaml"
        )


def test_unknown_preset_lists_the_available_ones():
    with pytest.raises(ConfigError, match=r"encoder\.preset: unknown preset 'vit_b'; expected one of .*tiny"):
        C.resolve_preset("encoder", {"preset": "vit_b"}, source="demo.yaml")


def test_experiment_keys_override_the_preset_key_by_key():
    merged = C.resolve_preset(
        "decoder", {"preset": "tiny_captioner", "trainer": {"max_steps": 700}}, source="x.yaml"
    )
    cfg = C.from_dict(C.DecoderConfig, merged)
    assert cfg.trainer.max_steps == 700
    preset = C.load_yaml(C.PRESETS_DIR / "decoder" / "tiny_captioner.yaml")
    assert cfg.trainer.learning_rate == preset["trainer"]["learning_rate"]  # still the preset's value
    assert cfg.resources.mem_mb == 4000


def test_checkpoints_that_miss_the_evaluations_fail_when_the_config_is_built():
    with pytest.raises(
        ConfigError, match="decoder.trainer.save_steps: save_steps 100 is not a multiple of eval_steps 300"
    ):
        C.from_dict(C.TrainerConfig, {"save_steps": 100, "eval_steps": 300})
    assert C.from_dict(
        C.TrainerConfig, {"save_steps": 100, "eval_steps": 300, "load_best_model_at_end": False}
    )


def test_presets_are_held_to_the_schema_bounds_too(tmp_path, repo, monkeypatch):
    # a value out of bounds reaches the config through a preset as well as through the experiment file
    from medlens import config as C

    real = C.resolve_preset

    def bad_preset(kind, section, *, source):
        out = real(kind, section, source=source)
        return {**out, "per_device_train_batch_size": 0} if kind == "encoder" else out

    monkeypatch.setattr(C, "resolve_preset", bad_preset)
    with pytest.raises(
        C.ConfigError,
        match=r"demo\.yaml \(with its presets\): encoder\.per_device_train_batch_size: 0 is less than",
    ):
        C.load_experiment(
            repo / "config" / "experiments" / "demo.yaml",
            schema_path=repo / "workflow" / "schemas" / "experiment.schema.yaml",
        )


def test_a_resource_name_cannot_walk_out_of_resources_or_list_other_folders():
    from medlens.resources import resource_path

    with pytest.raises(
        ConfigError, match=r"'\.\./\.\./\.\./etc/x\.yaml' is not the name of a shipped resource"
    ):
        resource_path("prompts", "../../../etc/x.yaml")
    with pytest.raises(
        ConfigError, match=r"resource 'prompts/nope\.yaml' not found .*expected one of chexzero\.yaml"
    ):
        resource_path("prompts", "nope.yaml")


@pytest.mark.parametrize(
    "old, new",
    [
        ("lr", "learning_rate"),
        ("steps", "max_steps"),
        ("grad_clip", "max_grad_norm"),
        ("eval_every", "eval_steps"),
        ("checkpoint_every", "save_steps"),
    ],
)
def test_an_old_training_setting_name_is_told_its_new_one(repo, old, new):
    # the encoder's settings carry the Hugging Face Trainer's names, like the decoder's
    schema = repo / "workflow" / "schemas" / "experiment.schema.yaml"
    for check in (
        lambda d: C.validate_against_schema(d, schema, source="x.yaml"),
        lambda d: C.from_dict(C.ExperimentConfig, d, source="x.yaml"),
    ):
        with pytest.raises(
            ConfigError,
            match=rf"x\.yaml: encoder\.{old}: '{old}' is now called '{new}' \(the "
            rf"Hugging Face Trainer's name\); expected {new}",
        ):
            check({"datasets": ["a"], "encoder": {old: 1}})


def test_stages_are_checked_against_what_the_experiment_needs():
    with pytest.raises(ConfigError, match=r"stages: .*expected 'encoder', 'decoder' or both, each once"):
        C.from_dict(
            C.ExperimentConfig, {"datasets": ["a"], "stages": ["encoder", "encoder"]}, source="x.yaml"
        )
    with pytest.raises(
        ConfigError, match=r"decoder\.init_from_encoder: the captioner starts from the trained encoder"
    ):
        C.from_dict(C.ExperimentConfig, {"datasets": ["a"], "stages": ["decoder"]}, source="x.yaml")
    with pytest.raises(
        ConfigError, match=r"evaluate\.external_datasets: external datasets are evaluated by "
    ):
        C.from_dict(
            C.ExperimentConfig,
            {
                "datasets": ["a"],
                "stages": ["decoder"],
                "decoder": {"init_from_encoder": False},
                "evaluate": {"external_datasets": ["b"]},
            },
            source="x.yaml",
        )
    cfg = C.from_dict(
        C.ExperimentConfig,
        {"datasets": ["a"], "stages": ["decoder"], "decoder": {"init_from_encoder": False}},
        source="x.yaml",
    )
    assert cfg.stages == ["decoder"]


# --------------------------------------------------------------------------------------------
# mistakes that used to pass the load and fail hours later, or silently change what ran


def _tiny(repo):
    return yaml.safe_load((repo / "tests" / "config" / "tiny" / "experiments" / "tiny.yaml").read_text())


def _load(repo, tmp_path, data=None, *, raw=None, name="exp.yaml"):
    path = tmp_path / name
    if raw is not None:
        path.write_bytes(raw)
    else:
        path.write_text(yaml.safe_dump(data, sort_keys=False))
    return C.load_experiment(path, schema_path=repo / "workflow" / "schemas" / "experiment.schema.yaml")


def test_a_training_dataset_cannot_also_be_external(repo, tmp_path):
    # it would be evaluated and reported as "external" although the encoder trained on its rows
    data = _tiny(repo)
    data["evaluate"]["external_datasets"] = ["synthetic_ext", "synthetic_cxr"]
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: evaluate\.external_datasets\[1\]: 'synthetic_cxr' is also a training dataset, so its "
        r"rows would be reported as external; expected datasets not in datasets \(synthetic_cxr\)",
    ):
        _load(repo, tmp_path, data)


@pytest.mark.parametrize(
    "changes, message",
    [
        (
            {"evaluate": {"probe_datasets": ["synthetic_ext", "synthetic_cxr"]}},
            r"evaluate\.probe_datasets\[1\]: 'synthetic_cxr' is also a training dataset; its probe split would "
            r"not be held out",
        ),
        (
            {
                "stages": ["decoder"],
                "decoder": {"kind": "vlm", "model": "tiny-vlm", "preset": "paligemma_qlora"},
                "evaluate": {"probe_datasets": ["synthetic_ext"]},
            },
            r"evaluate\.probe_datasets: probe datasets probe an image tower, and this experiment trains none",
        ),
        (
            {"evaluate": {"probe_datasets": ["synthetic_ext"], "linear_probe": {"enabled": False}}},
            r"evaluate\.probe_datasets: probe datasets are set but linear probes are off",
        ),
    ],
    ids=["trained-on", "no-tower", "probes-off"],
)
def test_probe_datasets_need_a_held_out_dataset_a_tower_and_probes(changes, message):
    data = {"datasets": ["synthetic_cxr"], **changes}
    with pytest.raises(ConfigError, match=message):
        C.from_dict(C.ExperimentConfig, data, source="x.yaml")
    # a captioner-only experiment probes its own tower on them
    cfg = C.from_dict(
        C.ExperimentConfig,
        {
            "datasets": ["synthetic_cxr"],
            "stages": ["decoder"],
            "decoder": {"init_from_encoder": False},
            "evaluate": {"probe_datasets": ["synthetic_ext"]},
        },
        source="x.yaml",
    )
    assert cfg.evaluate.probe_datasets == ["synthetic_ext"]


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("datasets", [], r"datasets: \[\] should be non-empty; expected at least 1 item"),
        (
            "datasets",
            ["synthetic_cxr", "synthetic_cxr"],
            r"datasets: \['synthetic_cxr', 'synthetic_cxr'\] has non-unique elements; expected each item once",
        ),
        (
            "evaluate.external_datasets",
            ["synthetic_ext", "synthetic_ext"],
            r"evaluate\.external_datasets: .* has non-unique elements; expected each item once",
        ),
    ],
    ids=["no-dataset", "a-dataset-twice", "an-external-dataset-twice"],
)
def test_dataset_lists_are_non_empty_and_name_each_dataset_once(repo, tmp_path, key, value, message):
    data = _tiny(repo)
    section, _, leaf = key.rpartition(".")
    (data[section] if section else data)[leaf] = value
    with pytest.raises(ConfigError, match=rf"exp\.yaml: {message}"):
        _load(repo, tmp_path, data)
    # the dataclass holds the same rule when a config is built in code
    with pytest.raises(
        ConfigError, match=rf"x\.yaml: {re.escape(key)}: .* is not a list of distinct dataset"
    ):
        C.from_dict(C.ExperimentConfig, data, source="x.yaml")


def test_split_shares_must_sum_to_one_when_the_config_is_read(repo, tmp_path):
    data = _tiny(repo)
    data["split"] = {"train": 0.5, "val": 0.3, "test": 0.3}
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: split: shares train 0\.5, val 0\.3, test 0\.3 do not sum to 1 \(they sum to 1\.1\); "
        r"expected shares of patients summing to 1",
    ):
        _load(repo, tmp_path, data)


def test_grouping_duplicates_is_read_and_needs_the_audit(repo, tmp_path):
    data = _tiny(repo)
    data["split"] = {"leakage": {"images": "group", "texts": "group"}}
    assert _load(repo, tmp_path, data).split.leakage.images == "group"
    data["split"] = {"leakage": {"enabled": False, "images": "group"}}
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: split\.leakage\.enabled: images: group needs the audit, which is disabled; "
        r"expected enabled: true",
    ):
        _load(repo, tmp_path, data)


@pytest.mark.parametrize("key", ["prompt", "system"])
def test_the_chat_prompt_cannot_hold_the_image_mark(repo, tmp_path, key):
    from medlens.data.chat_format import IMAGE_TOKEN

    data = _tiny(repo)
    data["chat"] = {key: f"{IMAGE_TOKEN} Describe the radiograph:"}
    with pytest.raises(
        ConfigError,
        match=rf"exp\.yaml: chat\.{key}: the {key} holds the image mark '<image>', which convert_to_chat_format "
        rf"places itself; expected text without '<image>'",
    ):
        _load(repo, tmp_path, data)


def test_captioner_heads_must_divide_its_width(repo, tmp_path):
    data = _tiny(repo)
    data["decoder"]["num_heads"] = (
        3  # hidden_size 64: GPT-2 refused it in train_decoder, after the encoder trained
    )
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: decoder\.num_heads: num_heads 3 does not divide hidden_size 64; expected a divisor of "
        r"hidden_size .*: 2, 4, 8, 16, 32, 64",
    ):
        _load(repo, tmp_path, data)
    # through a preset too: lapvqa_captioner's width with the experiment's head count
    data["decoder"] = {"preset": "tiny_captioner", "num_heads": 5}
    with pytest.raises(ConfigError, match=r"decoder\.num_heads: num_heads 5 does not divide hidden_size 192"):
        _load(repo, tmp_path, data)


@pytest.mark.parametrize(
    "section, key, value",
    [
        ("encoder", "learning_rate", float("nan")),
        ("encoder", "learning_rate", float("inf")),
        ("decoder.trainer", "num_train_epochs", float("inf")),
        ("split", "train", float("nan")),
    ],
    ids=["nan", "inf", "inf-epochs", "nan-share"],
)
def test_every_number_is_finite(repo, tmp_path, section, key, value):
    # NaN compares false with every schema bound, so .nan passed `exclusiveMinimum: 0`
    data = _tiny(repo)
    node = data
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    with pytest.raises(
        ConfigError,
        match=rf"exp\.yaml: {re.escape(section)}\.{key}: -?{value!r} is not a finite number; "
        "expected a finite number",
    ):
        _load(repo, tmp_path, data)


@pytest.mark.parametrize(
    "section, steps",
    [
        ("encoder", {"max_steps": 24, "warmup_steps": 25}),
        ("decoder.trainer", {"max_steps": 24, "warmup_steps": 100}),
    ],
)
def test_a_warmup_longer_than_the_run_is_refused(repo, tmp_path, section, steps):
    data = _tiny(repo)
    node = data
    for part in section.split("."):
        node = node[part]
    node.update(steps)
    with pytest.raises(
        ConfigError,
        match=rf"exp\.yaml: {re.escape(section)}\.warmup_steps: warmup_steps {steps['warmup_steps']} is more than "
        rf"max_steps 24: the run would end still warming up; expected at most max_steps \(24\) warmup steps",
    ):
        _load(repo, tmp_path, data)
    node["max_steps"] = -1 if section == "decoder.trainer" else None  # epochs decide: nothing to compare
    if section == "encoder":
        node["num_train_epochs"] = 1.0
    assert _load(repo, tmp_path, data)


# --------------------------------------------------------------------------------------------
# the YAML files themselves


def test_a_repeated_key_is_refused_with_both_lines(repo, tmp_path):
    # YAML keeps the last of two `encoder:` blocks: the first one's learning_rate was silently dropped
    raw = b"datasets: [synthetic_cxr]\nencoder:\n  learning_rate: 0.1\nencoder:\n  max_steps: 5\n"
    with pytest.raises(
        ConfigError,
        match=r"exp\.yaml: encoder: repeated key \(lines 2 and 4\); YAML would silently keep only the last; "
        r"expected each key once in its mapping",
    ):
        _load(repo, tmp_path, raw=raw)
    # nested keys are named by their path, in config.yaml's dataset definitions too
    (tmp_path / "config.yaml").write_text(
        "run: [tiny]\ndatasets:\n  a:\n    source: synthetic_cxr\n  b:\n    source: manifest\n"
        "  a:\n    source: path\n"
    )
    with pytest.raises(ConfigError, match=r"config\.yaml: datasets\.a: repeated key \(lines 3 and 7\)"):
        C.load_yaml(tmp_path / "config.yaml")


def test_yaml_merge_keys_and_aliases_are_not_repeats(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("base: &b {x: 1, y: 2}\nuse:\n  <<: *b\n  x: 3\nagain: *b\n")
    assert C.load_yaml(path) == {"base": {"x": 1, "y": 2}, "use": {"x": 3, "y": 2}, "again": {"x": 1, "y": 2}}


def test_the_loader_builds_plain_data_only(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("a: !!python/object/apply:os.system ['echo owned']\n")
    with pytest.raises(ConfigError, match=r"p\.yaml: not valid YAML \(could not determine a constructor"):
        C.load_yaml(path)


@pytest.mark.parametrize(
    "raw, message",
    [
        (
            b"# r\xe9sum\xe9\ndatasets: [synthetic_cxr]\n",
            r"byte 0xe9 at byte position 3 \(line 1\) is not UTF-8",
        ),
        (
            "datasets: [synthetic_cxr]\n".encode("utf-16"),
            r"byte 0xff at byte position 0 \(line 1\) is not UTF-8 \(the file starts with a UTF-16 byte-order mark\)",
        ),
        (b"datasets: [synthetic_cxr]\ndescription: caf\xe9\n", r"byte 0xe9 at byte position 42 \(line 2\)"),
    ],
    ids=["latin-1-comment", "utf-16", "latin-1-value"],
)
def test_a_file_that_is_not_utf8_names_the_byte(repo, tmp_path, raw, message):
    with pytest.raises(ConfigError, match=rf"exp\.yaml: {message}.*; expected a UTF-8 text file"):
        _load(repo, tmp_path, raw=raw)


def test_a_prompt_set_that_is_not_utf8_is_a_config_error(tmp_path):
    from medlens.evaluate.zero_shot import load_prompt_templates

    path = tmp_path / "prompts.yaml"
    path.write_bytes(b"Cardiomegaly:\n  positive: [enlarged heart \xe9]\n")
    with pytest.raises(
        ConfigError, match=r"prompts\.yaml: byte 0xe9 at byte position 42 \(line 2\) is not UTF-8"
    ):
        load_prompt_templates(path)


def test_a_yte_template_is_refused(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text("__use_yte__: true\nrun: [tiny]\n")
    with pytest.raises(
        ConfigError,
        match=r"config\.yaml: __use_yte__: medlens configs are data, not templates: YTE would run the Python code "
        r"this file holds; expected plain YAML without __use_yte__",
    ):
        C.load_yaml(path)


def test_a_check_of_the_built_config_names_the_file():
    # __post_init__ checks know their key; from_dict adds the file they came from
    with pytest.raises(
        ConfigError, match=r"^x\.yaml: decoder\.trainer\.save_steps: save_steps 100 is not a multiple"
    ):
        C.from_dict(
            C.ExperimentConfig,
            {"datasets": ["a"], "decoder": {"trainer": {"save_steps": 100, "eval_steps": 300}}},
            source="x.yaml",
        )


@pytest.mark.parametrize(
    "section, key, value, message",
    [
        ("encoder", "image_mean", [0.5, 0.5], r"encoder\.image_mean: .*; expected at least 3 items"),
        ("encoder", "image_std", [0.2, 0.2, 0.2, 0.2], r"encoder\.image_std: .*; expected at most 3 items"),
        ("evaluate.zero_shot", "labels", [], r"evaluate\.zero_shot\.labels: .*; expected at least 1 item"),
        (
            "evaluate.zero_shot",
            "labels",
            ["Cardiomegaly", ""],
            r"evaluate\.zero_shot\.labels\.1: .*; expected a non-empty string",
        ),
        (
            "evaluate.linear_probe",
            "c_grid",
            [],
            r"evaluate\.linear_probe\.c_grid: .*; expected at least 1 item",
        ),
    ],
    ids=["two-channel-mean", "four-channel-std", "no-labels", "empty-label", "no-c"],
)
def test_lists_a_stage_cannot_use_are_refused_when_the_config_is_read(
    repo, tmp_path, section, key, value, message
):
    data = _tiny(repo)
    node = data
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[key] = value
    with pytest.raises(ConfigError, match=r"exp\.yaml: " + message):
        _load(repo, tmp_path, data)


def test_an_encoder_run_needs_a_length(repo, tmp_path):
    data = _tiny(repo)
    data.setdefault("encoder", {}).update(max_steps=None, num_train_epochs=None)
    with pytest.raises(
        ConfigError, match=r"encoder\.max_steps: neither max_steps nor num_train_epochs is set"
    ):
        _load(repo, tmp_path, data)


# --------------------------------------------------------------------------------------------
# keys that are set but never read


@pytest.mark.parametrize(
    "edit, key, problem, expected",
    [
        (
            lambda d: d.update(stages=["encoder"]),
            "decoder.preset",
            "this experiment has no decoder stage",
            "no decoder, or 'decoder' in stages",
        ),
        (
            lambda d: d.update(stages=["decoder"], decoder={"preset": "lapvqa_captioner"}, encoder={}),
            "evaluate.external_datasets",
            "external datasets are evaluated by evaluate_encoder",
            "an empty list, or 'encoder' in stages",
        ),
        (
            lambda d: d.update(stages=["encoder"], decoder={}, chat={"prompt": "Describe:"}),
            "chat.prompt",
            "this experiment has no decoder stage",
            "no chat, or 'decoder' in stages",
        ),
        (
            lambda d: d.update(stages=["encoder"], decoder={}, evaluate={"report_metrics": ["bertscore"]}),
            "evaluate.report_metrics",
            "this experiment has no decoder stage",
            "no evaluate.report_metrics, or 'decoder' in stages",
        ),
        (
            lambda d: d["encoder"].update(momentum=0.5),
            "encoder.momentum",
            "encoder.optim is 'adamw_torch'",
            "no momentum: optim adamw_torch does not use it",
        ),
        (
            lambda d: d["encoder"].update(optim="sgd", adam_beta2=0.95),
            "encoder.adam_beta2",
            "encoder.optim is 'sgd'",
            "no adam_beta2",
        ),
        (
            lambda d: d["encoder"].update(init_logit_bias=-5.0),
            "encoder.init_logit_bias",
            "encoder.loss is 'clip'",
            "no bias",
        ),
        (
            lambda d: d["encoder"].update(num_train_epochs=2),
            "encoder.num_train_epochs",
            "encoder.max_steps is 24",
            "max_steps: null to train by epochs instead",
        ),
        (
            lambda d: d["encoder"].update(warmup_ratio=0.1),
            "encoder.warmup_ratio",
            "encoder.warmup_steps is 2",
            "warmup_steps: null",
        ),
        (
            lambda d: d["encoder"].update(lock_image_unlocked_groups=2),
            "encoder.lock_image_unlocked_groups",
            "encoder.lock_image is False",
            "lock_image: true",
        ),
        (
            lambda d: d["decoder"].update(lora={"r": 4}),
            "decoder.lora",
            "decoder.kind is 'captioner'",
            "no lora: kind captioner does not use it",
        ),
        (
            lambda d: d["decoder"].update(preset="paligemma_qlora", trainer={"max_steps": 100}),
            "decoder.hidden_size",
            "decoder.kind is 'vlm'",
            "no hidden_size: kind vlm does not use it",
        ),
        (
            lambda d: d["decoder"]["trainer"].update(num_train_epochs=2),
            "decoder.trainer.num_train_epochs",
            "decoder.trainer.max_steps is 24",
            "max_steps: -1 to train by epochs (a positive max_steps overrides num_train_epochs)",
        ),
    ],
    ids=[
        "no-decoder-stage",
        "external-without-encoder",
        "chat-without-decoder",
        "report-metrics-without-decoder",
        "momentum-adamw",
        "beta-sgd",
        "bias-clip",
        "epochs-and-steps",
        "ratio-and-steps",
        "unlocked-not-locked",
        "lora-captioner",
        "width-vlm",
        "trainer-epochs-and-steps",
    ],
)
def test_a_key_the_experiment_never_reads_is_refused(repo, tmp_path, edit, key, problem, expected):
    data = _tiny(repo)
    edit(data)
    with pytest.raises(ConfigError) as err:
        _load(repo, tmp_path, data)
    assert (err.value.file, err.value.key) == (str(tmp_path / "exp.yaml"), key)
    assert problem in err.value.problem and expected in err.value.expected


def test_a_preset_key_the_experiment_overrides_into_disuse_passes(repo, tmp_path):
    # siglip_base trains 2 epochs; an experiment that sets max_steps chose steps (max_steps wins)
    data = _tiny(repo)
    data["encoder"] = {"preset": "siglip_base", "max_steps": 10, "pretrained": None}
    # lapvqa_captioner trains 10 epochs: overridden the same way
    data["decoder"] = {"preset": "lapvqa_captioner", "trainer": {"max_steps": 5, "warmup_steps": 1}}
    cfg = _load(repo, tmp_path, data)
    assert cfg.encoder.max_steps == 10 and cfg.decoder.trainer.max_steps == 5


def test_an_unread_key_in_a_preset_names_the_preset_file(repo, tmp_path, monkeypatch):
    presets = tmp_path / "presets"
    for kind in ("encoder", "decoder"):
        (presets / kind).mkdir(parents=True)
        for p in (C.PRESETS_DIR / kind).glob("*.yaml"):
            (presets / kind / p.name).write_text(p.read_text())
    (presets / "encoder" / "tiny.yaml").write_text(
        (C.PRESETS_DIR / "encoder" / "tiny.yaml").read_text() + "momentum: 0.9\n"
    )
    monkeypatch.setattr(C, "PRESETS_DIR", presets)
    with pytest.raises(ConfigError) as err:
        _load(repo, tmp_path, _tiny(repo))
    assert (err.value.file, err.value.key) == (str(presets / "encoder" / "tiny.yaml"), "encoder.momentum")
    (presets / "encoder" / "tiny.yaml").write_text("momentm: 0.9\n")  # a typo is named in its own file too
    with pytest.raises(ConfigError) as err:
        _load(repo, tmp_path, _tiny(repo))
    assert (err.value.file, err.value.key) == (str(presets / "encoder" / "tiny.yaml"), "encoder.momentm")


@pytest.mark.parametrize("encoder", sorted(p.stem for p in (C.PRESETS_DIR / "encoder").glob("*.yaml")))
def test_every_shipped_preset_sets_only_keys_it_reads(repo, tmp_path, encoder):
    for decoder in sorted(p.stem for p in (C.PRESETS_DIR / "decoder").glob("*.yaml")):
        data = {"datasets": ["synthetic_cxr"], "encoder": {"preset": encoder}, "decoder": {"preset": decoder}}
        assert _load(repo, tmp_path, data).decoder.preset == decoder


# The side each shipped VLM's processor resizes to (its preprocessor_config.json on the Hub, which tests
# cannot read): Mllama's image tile, PaliGemma-224's square.
VLM_INPUT_SIDE = {"meta-llama/Llama-3.2-11B-Vision-Instruct": 560, "google/paligemma-3b-pt-224": 224}


@pytest.mark.parametrize("path", sorted((C.PACKAGE_DIR.parents[1] / "config" / "experiments").glob("*.yaml")))
def test_shipped_experiments_store_images_at_least_as_large_as_their_towers_read(repo, path):
    # a film stored smaller than the tower's input is upsampled: detail the seed's model saw is lost
    # (Llama 3.2 Vision read the knee, skin and SLAKE images at 448 px, upsampled to its 560 px tiles)
    pipeline = C.load_pipeline(C.load_yaml(repo / "config" / "config.yaml"))
    exp = C.load_experiment(path, schema_path=repo / "workflow" / "schemas" / "experiment.schema.yaml")
    sizes = [exp.encoder.image_size] if "encoder" in exp.stages else []
    if "decoder" in exp.stages and exp.decoder.kind == "captioner" and exp.decoder.image_size:
        sizes.append(exp.decoder.image_size)
    if "decoder" in exp.stages and exp.decoder.kind == "vlm":
        sizes.append(VLM_INPUT_SIDE[exp.decoder.model])
    for name in exp.datasets:
        assert pipeline.datasets[name].store_size >= max(sizes, default=0), (path.name, name)


@pytest.mark.parametrize(
    "stages, section, key",
    [
        (["encoder", "decoder"], "encoder", "encoder.report_to[1]"),
        (["encoder", "decoder"], "decoder.trainer", "decoder.trainer.report_to[1]"),
    ],
    ids=["encoder", "decoder"],
)
def test_a_tracker_whose_package_is_missing_is_refused_when_the_config_is_read(
    repo, tmp_path, monkeypatch, stages, section, key
):
    # without it accelerate drops the encoder's curves, and the Trainer stops after the model has loaded
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name: None if name == "wandb" else find_spec(name)
    )
    data = _tiny(repo)
    data["stages"] = stages
    target = data["decoder"]["trainer"] if section == "decoder.trainer" else data["encoder"]
    target["report_to"] = ["tensorboard", "wandb"]
    with pytest.raises(ConfigError) as e:
        _load(repo, tmp_path, data)
    assert str(e.value).startswith(f"{tmp_path / 'exp.yaml'}: {key}: the tracker 'wandb' is not installed")
    assert "pip install wandb" in str(e.value)
    # installed trackers pass (a stage the experiment does not train may not be configured at all: unread keys)
    target["report_to"] = ["tensorboard"]
    _load(repo, tmp_path, data)


def test_under_a_container_trackers_are_looked_up_in_the_images_lock_not_on_this_host(
    repo, tmp_path, monkeypatch
):
    # --sdm apptainer: wandb installed on the submit host passed, and the job in the image (no wandb) failed
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: object() if n == "wandb" else find_spec(n))
    data = _tiny(repo)
    data["encoder"]["report_to"] = ["tensorboard", "wandb"]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    C.load_experiment(path)  # on this host: installed
    lock = repo / "requirements.lock"
    with pytest.raises(ConfigError) as e:
        C.load_experiment(path, image_lock=lock)
    assert str(e.value).startswith(
        f"{path}: encoder.report_to[1]: the tracker 'wandb' is not in {lock}, the lock the jobs' container "
        "image is built from (--sdm apptainer); expected a tracker the image holds (tensorboard), or wandb "
        "added to pyproject.toml, `make lock` and the image rebuilt"
    )
    data["encoder"]["report_to"] = ["tensorboard"]  # in the lock
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    monkeypatch.setattr(importlib.util, "find_spec", lambda n: None)  # absent here does not matter then
    assert C.load_experiment(path, image_lock=lock).encoder.report_to == ["tensorboard"]


def test_an_error_about_the_merged_config_names_the_layer_that_set_the_key():
    layers = [
        ("config/config.yaml", {"run": ["demo"], "datasets": {"a": {"source": "path", "path": "/x"}}}),
        ("site.yaml", {"datasets": {"a": {"path": "/y"}, "b": {"languages": ["en"]}}}),
        ("--config", {"run": ["dmeo"], "datasets": {"a": {"store_sise": 3}}}),
    ]

    def blamed(key, file="site.yaml"):
        with pytest.raises(ConfigError) as e, C.naming_the_layer(layers):
            raise ConfigError("bad", file=file, key=key, expected="good")
        return e.value.file

    assert blamed("run") == "--config"
    assert blamed("datasets.a.store_sise") == "--config"
    assert blamed("datasets.a.path") == "site.yaml"
    assert blamed("datasets.a.source") == "config/config.yaml"
    assert blamed("datasets.b.languages[0]") == blamed("datasets.b.languages.0") == "site.yaml"
    assert blamed("datasets.c.source") == "site.yaml"  # set by no layer: the file the error named
    assert blamed("run", file="experiments/x.yaml") == "experiments/x.yaml"  # not a layer: untouched
    with pytest.raises(ConfigError, match=r"^--config: run: bad; expected good$"), C.naming_the_layer(layers):
        raise ConfigError("bad", file="site.yaml", key="run", expected="good")


def test_an_unknown_dataset_adapter_is_refused_when_the_config_is_read(repo):
    # was: found by prepare_datasets, after the download
    from medlens.data.sources import list_adapters

    assert sorted(typing.get_args(C.AdapterName)) == list_adapters()  # the names the config accepts
    config = {"run": ["demo"], "datasets": {"nih": {"source": "kaggle", "adapter": "nih_sample"}}}
    with pytest.raises(
        ConfigError,
        match=r"^c\.yaml: datasets\.nih\.adapter: 'nih_sample' is not one of .*'nih_chest_xray_sample'",
    ):
        C.validate_against_schema(
            config, repo / "workflow" / "schemas" / "config.schema.yaml", source="c.yaml"
        )
    with pytest.raises(
        ConfigError, match=r"^c\.yaml: datasets\.nih\.adapter: unknown 'nih_sample'; expected one of"
    ):
        C.load_pipeline(config, source="c.yaml")
    config["datasets"]["nih"]["adapter"] = "nih_chest_xray_sample"
    assert C.load_pipeline(config, source="c.yaml").datasets["nih"].adapter == "nih_chest_xray_sample"


@pytest.mark.parametrize("name", ["../../../home/user/notes", "a/b", ".hidden", ""])
def test_a_dataset_name_cannot_lead_outputs_out_of_results(repo, name):
    # a dataset's name is part of its output paths (results/raw/<name>/, results/prepared/<name>.parquet): with
    # `../` in it, prepare_datasets replaced (and Snakemake first deleted) files outside results/
    config = {"run": ["demo"], "datasets": {name: {"source": "synthetic_cxr"}}}
    with pytest.raises(ConfigError, match=rf"^c\.yaml: datasets: '{re.escape(name)}' does not match"):
        C.validate_against_schema(
            config, repo / "workflow" / "schemas" / "config.schema.yaml", source="c.yaml"
        )


@pytest.mark.parametrize("schema_file", ["config.schema.yaml", "experiment.schema.yaml"])
def test_every_number_in_the_config_has_a_lower_bound(repo, schema_file):
    # docs/reliability.md promises it; the jobs' resources had none (gpus: -1, runtime: 5 passed)
    unbounded = {".encoder.init_logit_bias"}  # SigLIP's bias is negative, of any size

    def walk(node, path):
        types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        bounded = "minimum" in node or "exclusiveMinimum" in node
        if {"integer", "number"} & set(types) and not bounded and path not in unbounded:
            yield path
        for key, child in node.get("properties", {}).items():
            yield from walk(child, f"{path}.{key}")
        for key in ("additionalProperties", "items"):
            if isinstance(node.get(key), dict):
                yield from walk(node[key], f"{path}.<{key}>")

    schema = yaml.safe_load((repo / "workflow" / "schemas" / schema_file).read_text())
    assert list(walk(schema, "")) == []


def test_a_training_job_asks_for_more_time_than_slurms_early_signal(repo, tmp_path):
    data = _tiny(repo)
    data["encoder"]["resources"] = {"runtime": 5}
    with pytest.raises(ConfigError, match=r"encoder\.resources\.runtime: 5 is less than the minimum of 11"):
        _load(repo, tmp_path, data)
