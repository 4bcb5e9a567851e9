"""Models: shapes of encode/decode/forward, the conv shape trace, training lowers the loss, bad input."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from lightning_ae.data.loader import EpochBatchSampler, InMemoryLoader, SplitData
from lightning_ae.models import Autoencoder, ConvAutoencoder

MODELS = {
    "basic": lambda shape: Autoencoder(code_dim=32, input_shape=shape),
    "deep": lambda shape: Autoencoder(code_dim=8, hidden_dims=[1000, 500, 250], activation="relu", input_shape=shape),
    "conv": lambda shape: ConvAutoencoder(input_shape=shape),
    "conv_bottleneck": lambda shape: ConvAutoencoder(code_dim=16, input_shape=shape),
}
CODE_DIMS = {"basic": 32, "deep": 8, "conv": 784, "conv_bottleneck": 16}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("shape", [(784,), (1, 28, 28)])
def test_encode_decode_forward_shapes(name, shape):
    model = MODELS[name](shape)
    x = torch.rand(5, *shape)
    code = model.encode(x)
    assert code.shape == (5, CODE_DIMS[name])
    out = model.decode(code)
    assert out.shape == (5, *shape) and out.min() >= 0 and out.max() <= 1
    assert torch.equal(model(x), out)


def test_deep_autoencoder_decoder_starts_from_the_code():
    """The homework's sample code wires decoded3 from encoded3 (skipping the code); ours does not."""
    model = Autoencoder(code_dim=2, hidden_dims=[1000, 500, 250], activation="relu")
    linear = [m for m in model.decoder if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(2, 250), (250, 500), (500, 1000), (1000, 784)]


def test_conv_describe_traces_every_shape():
    text = ConvAutoencoder().describe()
    for shape in ("(8, 14, 14)", "(16, 7, 7)", "(784,)", "(1, 28, 28)"):
        assert shape in text
    assert len(text.splitlines()) == 18  # input, 15 layers, code, output
    code_line = next(line for line in ConvAutoencoder(code_dim=32).describe().splitlines() if line.startswith("code"))
    assert "(32,)" in code_line and "32 numbers" in code_line
    basic = Autoencoder(code_dim=8).describe().splitlines()
    assert "Linear(in_features=784, out_features=8, bias=True)" in basic[2] and "6,280 params" in basic[2]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_a_few_training_steps_lower_the_loss(datamodule, name):
    pl.seed_everything(0)
    model = MODELS[name]((784,))
    model.optimizer_factory = lambda params: torch.optim.Adam(params, lr=1e-3)
    inputs = datamodule.split("train").images[:256]
    before = model.reconstruction_loss(model.decode_logits(model.encode(inputs)), inputs).item()
    trainer = pl.Trainer(
        max_steps=30,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    split = SplitData(images=inputs, labels=datamodule.split("train").labels[:256])
    trainer.fit(model, train_dataloaders=InMemoryLoader(split, EpochBatchSampler(256, 32, shuffle=True, seed=0)))
    after = model.reconstruction_loss(model.decode_logits(model.encode(inputs)), inputs).item()
    assert after < 0.9 * before


def test_a_fit_centres_the_inputs_and_starts_the_output_at_the_mean_image(datamodule):
    """Set from the training split when a fit starts, saved with the weights; off when asked."""
    model, plain = Autoencoder(code_dim=8), Autoencoder(code_dim=8, center_inputs=False, init_output_bias=False)
    plain_bias = plain.decoder[-1].bias.clone()
    for m in (model, plain):
        trainer = pl.Trainer(max_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False)
        trainer.fit(m, datamodule=datamodule)
    mean = datamodule.split("train").images.mean(0)
    torch.testing.assert_close(model.input_shift, mean)
    torch.testing.assert_close(torch.sigmoid(model.decoder[-1].bias), mean.clamp(1e-3, 1 - 1e-3), atol=1e-6, rtol=0)
    assert "input_shift" in model.state_dict()
    x = datamodule.split("test").images[:4]
    torch.testing.assert_close(model.encode(x), model.encoder(x - mean))
    assert plain.input_shift.abs().sum() == 0 and torch.equal(plain.decoder[-1].bias, plain_bias)


def test_conv_output_bias_starts_at_the_mean_pixel(datamodule):
    model = ConvAutoencoder(input_shape=(784,))
    model.init_from_data(*datamodule.training_means())
    mean = datamodule.split("train").images.mean()
    torch.testing.assert_close(torch.sigmoid(model.decoder[-1].bias), mean.reshape(1), rtol=1e-5, atol=1e-6)


def test_a_checkpoint_from_before_centring_loads_with_no_shift():
    model = Autoencoder(code_dim=8)
    old = {k: v for k, v in model.state_dict().items() if k != "input_shift"}
    checkpoint = {"state_dict": old}
    model.on_load_checkpoint(checkpoint)
    fresh = Autoencoder(code_dim=8)
    fresh.load_state_dict(checkpoint["state_dict"])
    assert fresh.input_shift.abs().sum() == 0


def test_bce_from_logits_equals_bce_on_the_sigmoid_output():
    model = Autoencoder(code_dim=4)
    x = torch.rand(7, 784)
    logits = model.decode_logits(model.encode(x))
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(logits), x)
    assert model.reconstruction_loss(logits, x).item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    "build, pattern",
    [
        (lambda: Autoencoder(code_dim=0), r"code_dim=0 is not valid; valid: a positive integer"),
        (lambda: Autoencoder(code_dim=-3), r"code_dim=-3"),
        (lambda: Autoencoder(activation="swish"), r"activation='swish' is not a known activation; valid values"),
        (lambda: Autoencoder(code_activation="gelu"), r"code_activation='gelu'"),
        (lambda: Autoencoder(loss="hinge"), r"loss='hinge' is not a known loss; valid values: \['bce', 'mse'\]"),
        (lambda: Autoencoder(hidden_dims=[100, 0]), r"hidden_dims=0 is not valid"),
        (lambda: ConvAutoencoder(code_dim=0), r"code_dim=0"),
        (lambda: ConvAutoencoder(channels=[8]), r"channels=\[8\] is not valid"),
        (lambda: ConvAutoencoder(kernel_size=4), r"kernel_size=4 is not valid"),
    ],
)
def test_bad_model_parameters(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


def test_the_choices_the_cli_offers_are_the_ones_the_models_build():
    """`Literal` types give the CLI its choices; they must be exactly the registries the models build from."""
    from typing import get_args

    from lightning_ae.data.datamodule import LAYOUTS, Layout
    from lightning_ae.models.layers import ACTIVATIONS, LOSSES, OUTPUT_ACTIVATIONS, Activation, Loss, OutputActivation

    assert set(get_args(Activation)) == set(ACTIVATIONS)
    assert get_args(Loss) == LOSSES and get_args(OutputActivation) == OUTPUT_ACTIVATIONS
    assert get_args(Layout) == LAYOUTS == ("flat", "image")
