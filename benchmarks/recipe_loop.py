"""What does each piece of the training recipe buy? A plain PyTorch loop, outside Lightning.

Trains an MLP autoencoder 784-hidden-d'-hidden-784 (sigmoid output, BCE) on the 55,000
training images and reports validation BCE every 5 epochs, then the test BCE and MSE per
pixel, the squared error per image and kNN (k=10, sklearn) accuracy on the codes. Each
recipe piece is a flag, so its effect is one run against another:

    python benchmarks/recipe_loop.py --center 0 --bias-init 0 --epochs 5 --lr 1e-3   # no centring, no bias start
    python benchmarks/recipe_loop.py --epochs 50 --schedule plateau --lr 3e-3       # the basic AE's recipe
    python benchmarks/recipe_loop.py --epochs 50 --schedule one-cycle --lr 1e-2 --act relu
    python benchmarks/recipe_loop.py --hidden 1000,500,250 --act relu --code-act linear --d 32 --epochs 30

`--center` subtracts the mean training image before the encoder; `--bias-init` starts the output
bias at logit(mean training image). `--schedule`: none, plateau (ReduceLROnPlateau on val BCE,
x0.3 after 2 epochs, as the configs), cosine (per epoch), one-cycle (OneCycleLR per step).
About 1 s per epoch for the 784-32-784 AE at batch 128 on 2 cores, 14 s for 784-1000-500-250-32.
"""

from __future__ import annotations

import argparse
import math
import time

import torch
import torch.nn.functional as F
from sklearn.neighbors import KNeighborsClassifier
from torch import nn

from lightning_ae.data import MNISTDataModule
from lightning_ae.data.corruptions import Masking

ACTIVATIONS = {"sigmoid": nn.Sigmoid, "relu": nn.ReLU, "tanh": nn.Tanh, "linear": nn.Identity}


def build(args: argparse.Namespace) -> tuple[nn.Sequential, nn.Sequential]:
    hidden = [int(h) for h in args.hidden.split(",") if h]
    sizes = [784, *hidden]
    encoder: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        encoder += [nn.Linear(n_in, n_out), ACTIVATIONS[args.act](), nn.Dropout(args.dropout)]
    encoder += [nn.Linear(sizes[-1], args.d), ACTIVATIONS[args.code_act or args.act]()]
    back = [args.d, *reversed(hidden)]
    decoder: list[nn.Module] = []
    for n_in, n_out in zip(back[:-1], back[1:], strict=True):
        decoder += [nn.Linear(n_in, n_out), ACTIVATIONS[args.act](), nn.Dropout(args.dropout)]
    decoder.append(nn.Linear(back[-1], 784))
    return nn.Sequential(*encoder), nn.Sequential(*decoder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=32, help="code size d'")
    parser.add_argument("--hidden", default="", help="encoder hidden sizes before the code, e.g. 1000,500,250")
    parser.add_argument("--act", default="sigmoid", choices=sorted(ACTIVATIONS))
    parser.add_argument("--code-act", default=None, choices=sorted(ACTIVATIONS))
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--schedule", default="plateau", choices=["none", "plateau", "cosine", "one-cycle"])
    parser.add_argument("--center", type=int, default=1, choices=[0, 1])
    parser.add_argument("--bias-init", type=int, default=1, choices=[0, 1])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--mask", type=float, default=0.0, help="zero each input pixel with this probability, in training"
    )
    parser.add_argument("--dropout", type=float, default=0.0, help="dropout after every hidden layer, in training")
    args = parser.parse_args()

    torch.set_num_threads(2)
    torch.manual_seed(args.seed)
    data = MNISTDataModule(seed=0)
    data.setup()
    train, val, test = (data.split(s) for s in ("train", "val", "test"))
    mean = train.images.mean(0)
    encoder, decoder = build(args)
    if args.bias_init:
        with torch.no_grad():
            decoder[-1].bias.copy_(torch.logit(mean.clamp(1e-3, 1 - 1e-3)))
    shift = mean if args.center else torch.zeros(784)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=args.lr)
    steps = args.epochs * math.ceil(len(train) / args.batch_size)
    # Built only when chosen: a scheduler sets the optimizer's learning rate as it is constructed.
    schedulers = torch.optim.lr_scheduler
    schedule = {
        "none": lambda: None,
        "plateau": lambda: schedulers.ReduceLROnPlateau(optimizer, factor=0.3, patience=2, threshold=1e-3),
        "cosine": lambda: schedulers.CosineAnnealingLR(optimizer, args.epochs),
        "one-cycle": lambda: schedulers.OneCycleLR(optimizer, args.lr, total_steps=steps, pct_start=0.1),
    }[args.schedule]()

    @torch.no_grad()
    def errors(images: torch.Tensor) -> tuple[float, float]:
        encoder.eval(), decoder.eval()
        logits = decoder(encoder(images - shift))
        bce = F.binary_cross_entropy_with_logits(logits, images).item()
        return bce, (logits.sigmoid() - images).pow(2).mean().item()

    started = time.perf_counter()
    masking = Masking(p=1 - args.mask) if args.mask else None  # the dAE's masking noise, as a regulariser
    for epoch in range(args.epochs):
        order = torch.randperm(len(train))
        encoder.train(), decoder.train()  # errors() below switches to eval
        for index in order.split(args.batch_size):
            x = train.images[index]
            seen = masking(x) if masking else x
            loss = F.binary_cross_entropy_with_logits(decoder(encoder(seen - shift)), x)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if args.schedule == "one-cycle":
                schedule.step()
        val_bce = errors(val.images)[0]
        if args.schedule == "plateau":
            schedule.step(val_bce)
        elif args.schedule == "cosine":
            schedule.step()
        if (epoch + 1) % 5 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1}: val BCE {val_bce:.4f} ({time.perf_counter() - started:.0f} s)", flush=True)
    bce, mse = errors(test.images)
    train_bce, train_mse = errors(train.images[:10_000])
    print(f"train (first 10,000): BCE/pixel {train_bce:.4f}, squared error/image {train_mse * 784:.2f}")
    with torch.no_grad():
        train_codes, test_codes = encoder(train.images - shift).numpy(), encoder(test.images - shift).numpy()
    knn = KNeighborsClassifier(10).fit(train_codes, train.labels.numpy()).score(test_codes, test.labels.numpy())
    # A code unit that is never active on the training images carries nothing (a dead ReLU).
    dead = int((train_codes.max(0) - train_codes.min(0) < 1e-6).sum())
    print(f"test: BCE/pixel {bce:.4f}, MSE/pixel {mse:.5f}, squared error/image {mse * 784:.2f}, kNN {knn:.4f}")
    print(f"code units constant on the training images (dead): {dead} of {train_codes.shape[1]}")


if __name__ == "__main__":
    main()
