import pytest

from trainer.config import TrainConfig
from trainer.errors import ConfigError


def test_defaults_are_the_reference_schedule():
    c = TrainConfig()
    assert (c.backbone, c.rounds, c.epochs_per_round, c.batch_size) == ("resnet18_cifar", 5, 200,
                                                                        128)
    assert (c.lr, c.momentum, c.nesterov, c.weight_decay) == (0.03, 0.9, True, 5e-4)
    assert (c.tau, c.bank_momentum, c.neighbours, c.knn_k, c.knn_sigma) == (0.1, 0.5, 1, 200, 0.1)
    assert (c.crop_scale_min, c.color_jitter, c.grayscale_p) == (0.2, 0.4, 0.2)
    assert c.input_size == 32 and c.embedding_dim == 128


def test_lr_restarts_and_steps_at_80_120_160_of_200():
    c = TrainConfig()
    assert c.lr_at(0) == pytest.approx(0.03)
    assert c.lr_at(79) == pytest.approx(0.03)
    assert c.lr_at(80) == pytest.approx(0.003)
    assert c.lr_at(120) == pytest.approx(0.0003)
    assert c.lr_at(160) == pytest.approx(0.00003)
    # A short round never starts decayed.
    assert TrainConfig(epochs_per_round=2).lr_at(0) == pytest.approx(0.03)


def test_anchor_curriculum_is_r_over_R():
    c = TrainConfig()  # 5 rounds: 25 %, 50 %, 75 %, 100 %
    assert [c.anchor_count(r, 1000) for r in range(5)] == [0, 250, 500, 750, 1000]
    assert [c.anchor_count(r, 10) for r in range(5)] == [0, 2, 5, 7, 10]  # floor(N * S)
    three = TrainConfig(rounds=3)
    assert [three.anchor_count(r, 100) for r in range(3)] == [0, 50, 100]
    fixed = TrainConfig(rounds=3, anchor_rate=0.25)
    assert [fixed.anchor_count(r, 100) for r in range(3)] == [0, 25, 50]


@pytest.mark.parametrize(
    ("values", "key"),
    [
        ({"lr": -0.1}, "lr"),
        ({"rounds": 0}, "rounds"),
        ({"epochs_per_round": 0}, "epochs_per_round"),
        ({"backbone": "vgg"}, "backbone"),
        ({"tau": 0}, "tau"),
        ({"batch_size": 1}, "batch_size"),
        ({"bank_momentum": 1.0}, "bank_momentum"),
        ({"lr_milestones": [0.8, 0.4]}, "lr_milestones"),
        ({"neighbours": 0}, "neighbours"),
        ({"rounds": "five"}, "rounds"),
        ({"rounds": 2.5}, "rounds"),
        ({"nesterov": "yes"}, "nesterov"),
        ({"lr": float("nan")}, "lr"),
        ({"learning_rate": 0.1}, "learning_rate"),
        ({"device": "tpu"}, "device"),
    ],
)
def test_bad_values_are_refused_naming_the_key(values, key):
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict(values)
    assert err.value.key == key
    assert repr(key) in str(err.value)


def test_dataset_dependent_checks():
    c = TrainConfig.from_dict({"neighbours": 5, "batch_size": 8})
    with pytest.raises(ConfigError, match="neighbours"):
        c.validate_for_dataset(5)
    c.validate_for_dataset(6)  # a batch larger than the dataset just takes all of it


def test_strings_parse_as_json_or_text():
    c = TrainConfig.from_strings(["backbone=small_cnn", "lr=0.1", "rounds=3", "nesterov=false",
                                  "lr_milestones=[0.5, 0.75]"])
    assert (c.backbone, c.lr, c.rounds, c.nesterov, c.lr_milestones) == (
        "small_cnn", 0.1, 3, False, (0.5, 0.75))
    with pytest.raises(ConfigError):
        TrainConfig.from_strings(["lr"])


def test_round_trip_and_documentation():
    c = TrainConfig.from_dict({"rounds": 2})
    assert TrainConfig.from_dict(c.to_dict()) == c
    docs = TrainConfig.documentation()
    assert set(docs) == set(c.to_dict())
    assert all(info["doc"] for info in docs.values())


@pytest.mark.parametrize(
    ("values", "loose", "strict"),
    [
        ({"rounds": 2.0}, True, True),  # 2.0 is an integer in JSON
        ({"rounds": "3"}, False, False),
        ({"rounds": True}, False, False),
        ({"lr": 1}, True, True),
        ({"lr": "0.1"}, False, False),
        ({"lr": False}, False, False),
        ({"nesterov": "true"}, True, False),  # what a command line gives
        ({"nesterov": "yes"}, False, False),
        ({"nesterov": 1}, False, False),
        ({"lr_milestones": 0.5}, True, False),
        ({"lr_milestones": (0.5,)}, True, True),
        ({"lr_milestones": {0.5}}, False, False),
        ({"backbone": b"small_cnn"}, False, False),
        ({"init_from": "w\udce9.pt"}, True, True),  # a file name that is not UTF-8
        ({"init_from": "a\nb"}, False, False),
    ],
)
def test_values_keep_their_json_types(values, loose, strict):
    for mode, valid in ((False, loose), (True, strict)):
        if valid:
            TrainConfig.from_dict(values, strict=mode)
        else:
            with pytest.raises(ConfigError) as err:
                TrainConfig.from_dict(values, strict=mode)
            assert err.value.key == next(iter(values))


def test_messages_say_what_a_value_must_be():
    def message(values):
        with pytest.raises(ConfigError) as err:
            TrainConfig.from_dict(values)
        return err.value.key, err.value.message

    assert message({"rounds": 0}) == ("rounds", "must be an integer between 1 and 100 (got 0)")
    assert message({"tau": 0})[1].startswith("must be a number in (0, 10]")
    assert message({"backbone": "vgg"})[1].startswith("must be one of resnet18_cifar, small_cnn")
    assert message({"lr_milestones": [0.5, 2]})[1].startswith("must be a list of at most 32")
    assert message({"device": "tpu"})[1].startswith("must be auto, cpu, cuda or cuda:N")
    assert message({"seed": 10**5000})[1].endswith("(got an integer of about 5000 digits)")
    key, text = message({"zz": 1, "aa": 1})  # the first unknown key by name
    assert key == "aa" and text.startswith("unknown key; valid keys are: anchor_rate, backbone")


def test_batch_norm_is_over_the_global_batch_and_matters_only_on_several_processes():
    assert TrainConfig().sync_bn
    one = TrainConfig(gpus=1)
    # One process normalises over the whole batch either way: a one-process run checkpointed
    # with sync_bn false resumes under the default.
    assert TrainConfig(gpus=1, sync_bn=False).training_identity() == one.training_identity()
    assert (TrainConfig(gpus=2, sync_bn=False).training_identity()
            != TrainConfig(gpus=2).training_identity())
    assert TrainConfig(gpus=1, rounds=3).training_identity() != one.training_identity()
