"""Does `torch.compile` help the classifier 784-1000-1000-10 at the homework's batch 25 on the CPU?

The training step (forward, loss) eager against compiled (inductor), SGD 0.01 momentum 0.9,
400 steps of 25 images per repeat, 7 interleaved repeats after a warm-up; prints seconds.

    python benchmarks/classifier_compile.py

Measured on the 2-core VM (2026-11-27), two runs: medians 1.72 and 2.17 s eager against 1.91 and
2.36 s compiled (and about 20 s to compile the first time): no gain, so lightning-ae does not
compile.
"""

import statistics
import time

import torch
import torch.nn.functional as F

from lightning_ae.models import Classifier

BATCH, STEPS = 25, 400


def make() -> tuple[Classifier, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = Classifier(activation="sigmoid")
    return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)


def epoch(loss_fn, optimizer, inputs, labels, steps: int = STEPS) -> float:
    start = time.perf_counter()
    for i in range(steps):
        batch = slice(i * BATCH, (i + 1) * BATCH)
        loss = loss_fn(inputs[batch], labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def main() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.rand(BATCH * STEPS, 784, generator=generator)
    labels = torch.randint(0, 10, (BATCH * STEPS,), generator=generator)
    eager_model, eager_opt = make()
    compiled_model, compiled_opt = make()

    def eager(x, y):
        return F.cross_entropy(eager_model(x), y)

    compiled = torch.compile(lambda x, y: F.cross_entropy(compiled_model(x), y))
    epoch(eager, eager_opt, inputs, labels, 50)
    start = time.perf_counter()
    epoch(compiled, compiled_opt, inputs, labels, 50)
    print(f"compile and 50 warm-up steps: {time.perf_counter() - start:.1f} s")
    times = {"eager": [], "compiled": []}
    for _ in range(7):
        times["eager"].append(epoch(eager, eager_opt, inputs, labels))
        times["compiled"].append(epoch(compiled, compiled_opt, inputs, labels))
    for name, values in times.items():
        print(f"{name:9s} median {statistics.median(values):.3f} s per {STEPS} steps (min {min(values):.3f})")


if __name__ == "__main__":
    main()
