"""trainables.models: every kind's shapes per task, the transformer's masks, the adapters,
and every error a user's model settings can cause (one line, naming the field and value)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from trainables.config import ModelConfig
from trainables.models import ModelError, build_model, mlp

V = 12  # vocabulary of the token tests; padding id V, mask id V + 1
PAD = V
TINY = {"width": 16, "heads": 2, "depth": 2, "max_length": 16}


@pytest.fixture
def usermodels(monkeypatch):
    """``usermodels`` importable, as a user's installed package would be."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def tokens_model(task: str, length: int = 10, pad_id: int | None = PAD, **fields) -> nn.Module:
    cfg = ModelConfig(kind="transformer", **{**TINY, **fields})
    num_classes = 3 if task == "classify" else V
    return build_model(
        cfg, task=task, example_shape=(length,), num_classes=num_classes, vocab_size=V,
        pad_id=pad_id,
    )  # fmt: skip


def random_ids(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, V, (batch, length), generator=torch.Generator().manual_seed(seed))


def raises(match: str, build, *args, **kwargs) -> str:
    """Assert ``build`` raises a one-line ModelError containing ``match``; return the text."""
    with pytest.raises(ModelError) as info:
        build(*args, **kwargs)
    text = str(info.value)
    assert "\n" not in text, text
    assert match in text, text
    return text


# -- mlp ---------------------------------------------------------------------------------------


def test_mlp_keeps_its_parameter_names():
    assert list(mlp(64, [32, 16], 10).state_dict()) == [
        "0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias",
    ]  # fmt: skip


def test_mlp_flattens_images_like_a_plain_sequential():
    model = mlp(64, [32], 10)
    plain = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    plain.load_state_dict(model.state_dict())
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(model(x), plain(x.flatten(1)))


@pytest.mark.parametrize("shape", [(64,), (1, 8, 8)])
def test_build_mlp_classifies(shape):
    model = build_model(
        ModelConfig(hidden=[16]), task="classify", example_shape=shape, num_classes=10
    )
    assert model(torch.randn(4, *shape)).shape == (4, 10)


# -- cnn ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(1, 8, 8), (3, 16, 16)])
def test_cnn_classifies_images(shape):
    cfg = ModelConfig(kind="cnn", channels=[8, 16])
    model = build_model(cfg, task="classify", example_shape=shape, num_classes=10)
    assert model(torch.randn(4, *shape)).shape == (4, 10)


def test_cnn_outputs_do_not_depend_on_the_batch():
    cfg = ModelConfig(kind="cnn", channels=[8, 16, 32])
    model = build_model(cfg, task="classify", example_shape=(1, 8, 8), num_classes=10)
    x = torch.randn(6, 1, 8, 8)
    torch.testing.assert_close(model(x)[:2], model(x[:2]))


def test_cnn_refuses_flat_examples():
    cfg = ModelConfig(kind="cnn")
    raises(
        "model.kind: 'cnn' needs C x H x W inputs, the data's examples have shape (64,); "
        "set data.shape, e.g. [1, 8, 8]",
        build_model, cfg, task="classify", example_shape=(64,), num_classes=10,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_feature_models_refuse_token_ids(kind):
    raises(
        f"teacher.model.kind: '{kind}' takes float features, the data's examples are token-id",
        build_model, ModelConfig(kind=kind), task="classify", example_shape=(10,),
        num_classes=3, vocab_size=V, pad_id=PAD, where="teacher.model",
    )  # fmt: skip


# -- transformer -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("task", "shape"),
    [("masked_lm", (4, 10, V)), ("causal_lm", (4, 9, V)), ("classify", (4, 3))],
)
def test_transformer_shapes(task, shape):
    model = tokens_model(task, length=10)
    length = 9 if task == "causal_lm" else 10
    assert model(random_ids(4, length)).shape == shape


def test_causal_transformer_is_causal():
    model = tokens_model("causal_lm", length=12, depth=2).eval()
    x = random_ids(2, 11)
    j = 6
    y = x.clone()
    y[:, j] = (x[:, j] + 1) % V
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :j], b[:, :j])
    assert not torch.allclose(a[:, j:], b[:, j:])


def test_masked_lm_transformer_is_bidirectional():
    model = tokens_model("masked_lm", length=12).eval()
    x = random_ids(2, 12)
    y = x.clone()
    y[:, 8] = (x[:, 8] + 1) % V
    with torch.no_grad():
        assert not torch.allclose(model(x)[:, :8], model(y)[:, :8])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("task", ["masked_lm", "causal_lm", "classify"])
def test_padding_does_not_change_the_real_tokens_outputs(task, training):
    """A sequence padded to 12 gives, at its 7 real positions (or pooled), what the same 7
    tokens give unpadded."""
    model = tokens_model(task, length=12).train(training)
    real = random_ids(3, 7)
    padded = torch.cat([real, torch.full((3, 5), PAD)], dim=1)
    with torch.no_grad():
        short, long = model(real), model(padded)
    if task == "classify":
        torch.testing.assert_close(long, short)
    else:
        torch.testing.assert_close(long[:, :7], short)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("task", ["masked_lm", "causal_lm", "classify"])
def test_all_padding_rows_give_no_nan(task, training):
    model = tokens_model(task, length=8).train(training)
    x = random_ids(3, 8)
    x[1] = PAD
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


def test_transformer_without_padding_id():
    model = tokens_model("classify", length=8, pad_id=None)
    assert model(random_ids(2, 8)).shape == (2, 3)


def test_max_length_shorter_than_the_sequences():
    raises(
        "model.max_length: 128 is shorter than the data's sequences (256 tokens)",
        tokens_model, "masked_lm", length=256, max_length=128,
    )  # fmt: skip


def test_causal_lm_sees_one_token_fewer():
    assert tokens_model("causal_lm", length=17, max_length=16)(random_ids(1, 16)).shape == (
        1,
        16,
        V,
    )
    raises("model.max_length: 16 is shorter than the data's sequences (18 tokens",
           tokens_model, "causal_lm", length=18, max_length=16)  # fmt: skip


def test_transformer_refuses_float_features():
    cfg = ModelConfig(kind="transformer", **TINY)
    raises("model.kind: 'transformer' takes token ids, the data's examples are float features of shape (64,)",
           build_model, cfg, task="classify", example_shape=(64,), num_classes=10)  # fmt: skip


def test_transformer_refuses_2d_examples():
    cfg = ModelConfig(kind="transformer", **TINY)
    raises("model.kind: 'transformer' needs 1-D token sequences, the data's examples have shape (4, 8)",
           build_model, cfg, task="classify", example_shape=(4, 8), num_classes=3, vocab_size=V)  # fmt: skip


def test_lm_task_needs_token_data():
    raises("model: task 'masked_lm' needs token-id data",
           build_model, ModelConfig(), task="masked_lm", example_shape=(64,), num_classes=10)  # fmt: skip


# -- module ------------------------------------------------------------------------------------


def module_cfg(factory: str, **kwargs) -> ModelConfig:
    return ModelConfig(kind="module", factory=factory, kwargs=kwargs)


def build_images(cfg: ModelConfig, shape=(1, 8, 8)) -> nn.Module:
    return build_model(cfg, task="classify", example_shape=shape, num_classes=10)


def test_module_factory_with_kwargs(usermodels):
    model = build_images(module_cfg("usermodels:tiny_cnn", channels=4))
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)
    assert model.model[0].out_channels == 4
    assert all(k.startswith("model.") for k in model.state_dict())
    assert len(list(model.parameters())) == len(list(model.model.parameters()))


def test_module_logits_attribute_cut_to_the_vocabulary(usermodels):
    cfg = module_cfg("usermodels:tiny_lm", vocab=V, width=8)
    model = build_model(cfg, task="masked_lm", example_shape=(10,), num_classes=V, vocab_size=V)
    assert model(random_ids(2, 10)).shape == (2, 10, V)


def test_module_tuple_output_gives_its_first_element(usermodels):
    model = build_model(
        module_cfg("usermodels:tuple_mlp"), task="classify", example_shape=(64,), num_classes=10
    )
    x = torch.randn(2, 64)
    torch.testing.assert_close(model(x), model.model(x)[0])


@pytest.mark.parametrize(
    ("factory", "match"),
    [
        (
            "usermodels.tiny_cnn",
            "model.factory: 'usermodels.tiny_cnn' is not of the form 'package.module:function'",
        ),
        (
            "no_such_package:model",
            "model.factory: cannot import 'no_such_package:model' (ModuleNotFoundError: No module named 'no_such_package'); the factory is imported on the worker",
        ),
        (
            "usermodels.broken_import:model",
            "model.factory: cannot import 'usermodels.broken_import:model' (ModuleNotFoundError: No module named 'no_such_dependency_for_tests')",
        ),
        (
            "usermodels:missing",
            "model.factory: 'usermodels:missing': module 'usermodels' has no 'missing'",
        ),
        (
            "usermodels:NOT_A_FACTORY",
            "model.factory: 'usermodels:NOT_A_FACTORY' is a int, not a callable",
        ),
        (
            "usermodels:broken",
            "model.factory: 'usermodels:broken' raised ValueError: cannot build a model of size 3",
        ),
        (
            "usermodels:not_a_module",
            "model.factory: 'usermodels:not_a_module' returned a str, not an nn.Module",
        ),
        (
            "usermodels:wrong_classes",
            "model: the model outputs 8 classes per example, the data has 10",
        ),
        (
            "usermodels:flat_only",
            "model: the model cannot take inputs of shape (1, 8, 8): mat1 and mat2 shapes cannot be multiplied",
        ),
        ("usermodels:dict_output", "model: the model returned dict; expected a tensor"),
    ],
)
def test_module_errors(usermodels, factory, match):
    raises(match, build_images, module_cfg(factory))


def test_module_lm_with_too_few_logits(usermodels):
    cfg = module_cfg("usermodels:tiny_lm", vocab=V, width=8, outputs=6)  # 6 logits per token
    raises("model: the model outputs 6 logits per token, the vocabulary has 12",
           build_model, cfg, task="masked_lm", example_shape=(10,), num_classes=V, vocab_size=V)  # fmt: skip


def test_module_lm_whose_embedding_cannot_take_the_padding_and_mask_ids(usermodels):
    cfg = module_cfg("usermodels:tiny_lm", vocab=V - 2, width=8)  # ids up to V - 1 only
    raises("model: the model cannot take token ids up to 13 (the data's tokens 0..11, the "
           "padding id 12, the mask id 13)",
           build_model, cfg, task="masked_lm", example_shape=(10,), num_classes=V, vocab_size=V,
           pad_id=V)  # fmt: skip


def test_wrong_output_rank_names_both_shapes(usermodels):
    cfg = module_cfg("usermodels:tiny_lm", vocab=V, width=8)
    raises("task 'classify' needs (2, 3)",
           build_model, cfg, task="classify", example_shape=(10,), num_classes=3, vocab_size=V)  # fmt: skip


# -- hf ----------------------------------------------------------------------------------------

BERT = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
}
GPT2 = {"n_embd": 16, "n_layer": 1, "n_head": 2}


def hf_cfg(architecture: str, **config) -> ModelConfig:
    return ModelConfig(kind="hf", architecture=architecture, config=config)


@pytest.fixture
def transformers():
    return pytest.importorskip(
        "transformers", reason="kind 'hf' needs the [hf] extra (transformers)"
    )


@pytest.mark.parametrize(
    ("architecture", "config", "task", "shape"),
    [
        ("BertForMaskedLM", BERT, "masked_lm", (3, 10, V)),
        ("GPT2LMHeadModel", GPT2, "causal_lm", (3, 9, V)),
        ("BertForSequenceClassification", BERT, "classify", (3, 4)),
    ],
)
def test_hf_shapes(transformers, architecture, config, task, shape):
    num_classes = 4 if task == "classify" else V
    model = build_model(hf_cfg(architecture, **config), task=task, example_shape=(10,),
                        num_classes=num_classes, vocab_size=V, pad_id=PAD)  # fmt: skip
    assert model.model.config.vocab_size == V + 2
    assert model(random_ids(3, shape[1] if task != "classify" else 10)).shape == shape


def test_hf_attention_mask_hides_padding(transformers):
    model = build_model(hf_cfg("BertForMaskedLM", **BERT), task="masked_lm", example_shape=(10,),
                        num_classes=V, vocab_size=V, pad_id=PAD).eval()  # fmt: skip
    real = random_ids(2, 6)
    padded = torch.cat([real, torch.full((2, 4), PAD)], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model(padded)[:, :6], model(real), atol=1e-5, rtol=1e-4)


def test_hf_from_a_local_directory(transformers, tmp_path):
    config = transformers.GPT2Config(vocab_size=V + 2, **GPT2)
    transformers.GPT2LMHeadModel(config).save_pretrained(tmp_path)
    cfg = ModelConfig(kind="hf", path=str(tmp_path))
    model = build_model(
        cfg, task="causal_lm", example_shape=(10,), num_classes=V, vocab_size=V, pad_id=PAD
    )
    assert model.training
    assert model(random_ids(2, 9)).shape == (2, 9, V)


def test_hf_directory_with_a_small_vocabulary(transformers, tmp_path):
    transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=V, **GPT2)).save_pretrained(
        tmp_path
    )
    cfg = ModelConfig(kind="hf", path=str(tmp_path))
    raises("model.path: the model's vocab_size 12 is smaller than the 14 token ids",
           build_model, cfg, task="causal_lm", example_shape=(10,), num_classes=V, vocab_size=V)  # fmt: skip


def test_hf_unknown_architecture(transformers):
    raises("model.architecture: 'BertForEverything' is not a transformers model class",
           build_model, hf_cfg("BertForEverything"), task="masked_lm", example_shape=(10,),
           num_classes=V, vocab_size=V)  # fmt: skip


def test_hf_given_vocabulary_too_small(transformers):
    raises("model.config.vocab_size: the model's vocab_size 13 is smaller than the 14 token ids",
           build_model, hf_cfg("BertForMaskedLM", vocab_size=13, **BERT), task="masked_lm",
           example_shape=(10,), num_classes=V, vocab_size=V)  # fmt: skip


def test_hf_positions_shorter_than_the_sequences(transformers):
    raises("model.config.max_position_embeddings: 8 is shorter than the data's sequences (10 tokens)",
           build_model, hf_cfg("BertForMaskedLM", max_position_embeddings=8, **BERT),
           task="masked_lm", example_shape=(10,), num_classes=V, vocab_size=V)  # fmt: skip


def test_hf_bad_config(transformers):
    raises("model.config: cannot build BertForMaskedLM from",
           build_model, hf_cfg("BertForMaskedLM", **{**BERT, "num_attention_heads": 3}),
           task="masked_lm", example_shape=(10,), num_classes=V, vocab_size=V)  # fmt: skip


def test_hf_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` fails
    raises("model.kind: 'hf' needs the transformers package: pip install 'kd-schedule-search[hf]'",
           build_model, hf_cfg("BertForMaskedLM"), task="masked_lm", example_shape=(10,),
           num_classes=V, vocab_size=V)  # fmt: skip


# -- every kind learns -------------------------------------------------------------------------


def built(kind: str) -> tuple[nn.Module, torch.Tensor]:
    """A model of ``kind`` and a batch for it."""
    if kind == "mlp":
        return build_images(ModelConfig(hidden=[8])), torch.randn(4, 1, 8, 8)
    if kind == "cnn":
        return build_images(ModelConfig(kind="cnn", channels=[4, 8])), torch.randn(4, 1, 8, 8)
    if kind == "transformer":
        return tokens_model("causal_lm", length=10), random_ids(4, 9)
    if kind == "module":
        return build_images(module_cfg("usermodels:tiny_cnn")), torch.randn(4, 1, 8, 8)
    pytest.importorskip("transformers", reason="kind 'hf' needs the [hf] extra (transformers)")
    model = build_model(hf_cfg("BertForSequenceClassification", **BERT), task="classify",
                        example_shape=(10,), num_classes=3, vocab_size=V, pad_id=PAD)  # fmt: skip
    return model, random_ids(4, 10)


@pytest.mark.parametrize("kind", ["mlp", "cnn", "transformer", "module", "hf"])
def test_one_step_changes_the_parameters(usermodels, kind):
    model, x = built(kind)
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    (model(x) ** 2).mean().backward()
    optimizer.step()
    changed = sum(not torch.equal(p, b) for p, b in zip(model.parameters(), before, strict=True))
    assert changed > 0.5 * len(before)


def test_built_models_are_in_training_mode(usermodels):
    for kind in ("mlp", "cnn", "transformer", "module"):
        assert built(kind)[0].training


def test_hf_config_keys_that_are_not_fields_are_refused_with_the_near_ones(transformers):
    cfg = hf_cfg("GPT2LMHeadModel", **{**GPT2, "n_layers": 2})
    raises("model.config.n_layers: not a field of GPT2Config; did you mean n_layer",
           build_model, cfg, task="causal_lm", example_shape=(10,), num_classes=V, vocab_size=V)  # fmt: skip


def test_hf_special_token_ids_outside_a_small_vocabulary_are_dropped(transformers, recwarn):
    model = build_model(
        hf_cfg("GPT2LMHeadModel", **GPT2), task="causal_lm", example_shape=(10,),
        num_classes=V, vocab_size=V,
    )  # fmt: skip
    config = model.model.config
    assert (
        config.vocab_size == V + 2 and config.bos_token_id is None and config.eos_token_id is None
    )
