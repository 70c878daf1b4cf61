"""Convert your own CNN and sweep it across noise levels.

What it shows: a plain PyTorch CNN (your own ``nn.Module`` class with Conv2d, BatchNorm2d
and Linear layers), trained for a few epochs on the embedded 8x8 digits (no download),
then ``noisynn.convert`` turns it into a noisy copy (a noise site after every product; a
conv followed by its batch-norm in an ``nn.Sequential`` is one site, noise after the BN),
``noisynn.inspect`` says what became what, and the accuracy is measured at several
sigma_val with repeated noisy passes: by hand with ``noisynn.repeat_forward`` (20 noisy
copies in one batched call) and with ``noisynn.evaluate`` (mean over runs, with stderr).

Run: ``python examples/01_convert_your_cnn.py`` (under 30 s on 2 CPU cores).
"""

import time

import torch
import torch.nn.functional as F
from torch import nn

import noisynn
from noisynn import data

torch.set_num_threads(1)  # a tiny model: one thread is fastest (and much faster on a busy machine)
torch.manual_seed(0)
start = time.perf_counter()


class SmallCNN(nn.Module):
    """Your own network: conv - BN - ReLU twice, max-pool, two fully connected layers."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(32 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, classes)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(self.features(x).flatten(1))))


train, test = data.load("digits", "train"), data.load("digits", "test")  # images (N, 1, 8, 8) in [0, 1]
model = SmallCNN()
opt = torch.optim.Adam(model.parameters(), lr=3e-3)
gen = torch.Generator().manual_seed(0)
for _epoch in range(8):
    model.train()
    for xb, yb in data.batches(train, 64, generator=gen):
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
model.eval()
with torch.no_grad():
    clean_acc = (model(test.x).argmax(1) == test.y).float().mean().item()
print(f"trained SmallCNN: clean test accuracy {100 * clean_acc:.2f}% ({len(test)} test images)")

noisy = noisynn.convert(model, noisynn.Additive(0.0), strict=True).eval()
print(noisynn.inspect(noisy, test.x[:2]))

sigmas = [0.0, 0.25, 0.5, 1.0, 1.5]
table = noisynn.evaluate(noisy, (test.x, test.y), noise="additive", sigmas=sigmas, runs=20, device="cpu")

print("\nadditive noise at every site, 20 noisy passes over the test set per sigma")
print(f"{'sigma_val':>9}  {'repeat_forward':>14}  {'(sd)':>6}  {'evaluate':>8}  {'(stderr)':>8}")
for sigma, row in zip(sigmas, table, strict=True):
    with torch.no_grad(), noisynn.noise_model("additive", sigma):
        logits = noisynn.repeat_forward(noisy, test.x, 20)  # (20, N, 10): 20 independent noisy copies
    per_run = (logits.argmax(-1) == test.y).float().mean(1)  # accuracy of each noisy pass
    print(f"{sigma:9.2f}  {100 * per_run.mean():13.2f}%  {100 * per_run.std():6.2f}  "
          f"{100 * row['accuracy']:7.2f}%  {100 * row['stderr']:8.2f}")
print(f"done in {time.perf_counter() - start:.1f} s")
