"""Deep Noise Injection inside your own training loop.

What it shows: ``noisynn.convert(model, noisynn.Additive(0.5))`` before training gives
Deep Noise Injection (DNI) with an ordinary PyTorch loop: every forward pass of the
converted model is noisy (in ``train()`` and ``eval()`` alike), gradients flow through the
noisy pre-activations, nothing else in the loop changes. ``with noisynn.clean():`` gives a
noise-free validation pass of the same model, and ``with noisynn.noise_model("additive", s):``
evaluates any model at sigma_val = s. A conventionally trained twin (same seed, same
loop, no noise) is compared with the DNI model at sigma_val = 0 and 0.5.

Run: ``python examples/02_dni_in_your_training_loop.py`` (under 30 s on 2 CPU cores).
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

import noisynn
from noisynn import data

torch.set_num_threads(1)  # a tiny model: one thread is fastest (and much faster on a busy machine)
start = time.perf_counter()
train, test = data.load("digits", "train"), data.load("digits", "test")
SIGMA_TRAIN, SIGMA_VAL, EPOCHS, REPEATS = 0.5, 0.5, 15, 20


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                         nn.Linear(128, 10))


def accuracy(model: nn.Module, repeats: int = 1) -> tuple[float, float]:
    """Mean and sd of the test accuracy over ``repeats`` passes (noisy if noise is active)."""
    model.eval()
    with torch.no_grad():
        logits = noisynn.repeat_forward(model, test.x, repeats)
    runs = (logits.argmax(-1) == test.y).float().mean(1)
    return runs.mean().item(), (runs.std().item() if repeats > 1 else 0.0)


def fit(model: nn.Module, label: str) -> nn.Module:
    """An ordinary training loop: nothing in it knows about noise."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(1)
    for epoch in range(1, EPOCHS + 1):
        model.train()
        for xb, yb in data.batches(train, 64, generator=gen):
            opt.zero_grad()
            loss = F.cross_entropy(model(xb), yb)  # noisy forward for the DNI model
            loss.backward()
            opt.step()
        if epoch % 5 == 0:
            with noisynn.clean():  # validation without noise, same model
                acc, _ = accuracy(model)
            print(f"  {label} epoch {epoch:2d}: last batch loss {loss.item():.3f}, "
                  f"clean test accuracy {100 * acc:.2f}%")
    return model


print(f"training a conventional MLP and a DNI MLP (additive sigma_train = {SIGMA_TRAIN}) on digits")
conventional = fit(mlp(), "conventional")
dni = fit(noisynn.convert(mlp(), noisynn.Additive(SIGMA_TRAIN)), "DNI")
conventional = noisynn.convert(conventional)  # noise sites, clean until noise is switched on

print(f"\ntest accuracy, mean (sd) over {REPEATS} noisy passes")
print(f"{'model':>12}  {'sigma_val=0':>12}  {f'sigma_val={SIGMA_VAL}':>14}")
for name, model in (("conventional", conventional), ("DNI", dni)):
    with noisynn.clean():
        a0, _ = accuracy(model)
    with noisynn.noise_model("additive", SIGMA_VAL):
        a, sd = accuracy(model, REPEATS)
    print(f"{name:>12}  {100 * a0:11.2f}%  {100 * a:8.2f}% ({100 * sd:.2f})")
print(f"done in {time.perf_counter() - start:.1f} s")
