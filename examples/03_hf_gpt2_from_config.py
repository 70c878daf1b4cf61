"""HF transformers GPT-2 from a small config: convert, inspect, loss under noise.

What it shows: a third-party architecture, built offline (random weights from a
``GPT2Config``, no hub access), converted with ``noisynn.convert``: HF's ``Conv1D``
layers (``torch.addmm`` on their own weights) and the attention products (``SDPA``, split
by noisynn into scores and weighted sum) are caught at run time as sites ``HOST:op``;
``lm_head`` is a ``Linear`` site; ``noisynn.inspect(model, ids)`` lists them all and says
why the embeddings and layer norms stay clean. The model is then trained for a few
seconds with Deep Noise Injection (additive sigma_train = 0.1) on a toy language (count
upwards mod the vocabulary from a random start), and its next-token loss and perplexity
are measured at sigma_val in {0, 0.1, 0.3}.

Needs ``pip install transformers`` (in the test extra). Run:
``python examples/03_hf_gpt2_from_config.py`` (under 30 s on 2 CPU cores).
"""

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

import noisynn  # noqa: E402

torch.set_num_threads(1)  # a tiny model: one thread is fastest (and much faster on a busy machine)
transformers.logging.set_verbosity_error()  # no config chatter
torch.manual_seed(0)
start = time.perf_counter()
VOCAB, LENGTH = 50, 24
config = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=VOCAB, n_positions=32, bos_token_id=0,
                    eos_token_id=0, attn_implementation="sdpa")
gpt2 = GPT2LMHeadModel(config)


def toy_batch(n: int, seed: int) -> torch.Tensor:
    """Sequences that count upwards mod VOCAB from a random start: predictable after one token."""
    first = torch.randint(0, VOCAB, (n, 1), generator=torch.Generator().manual_seed(seed))
    return (first + torch.arange(LENGTH)) % VOCAB


ids = toy_batch(16, seed=1)
model = noisynn.convert(gpt2, noisynn.Additive(0.1), strict=True, example_inputs=(ids[:2],))
print(noisynn.inspect(model, ids[:2]))

opt = torch.optim.Adam(model.parameters(), lr=3e-3)
model.train()
for step in range(60):  # Deep Noise Injection: every training pass is noisy
    opt.zero_grad()
    loss = model(toy_batch(16, seed=100 + step), labels=toy_batch(16, seed=100 + step)).loss
    loss.backward()
    opt.step()
print(f"\ntrained 60 DNI steps (additive sigma_train = 0.1): last training loss {loss.item():.3f}")

model.eval()
held_out = toy_batch(32, seed=2)
print(f"\nnext-token loss on {len(held_out)} held-out sequences, mean over 10 noisy passes")
print(f"{'sigma_val':>9}  {'loss':>7}  {'perplexity':>10}")
with torch.no_grad():
    for sigma in (0.0, 0.1, 0.3):
        with noisynn.noise_model("additive", sigma):
            losses = torch.tensor([model(held_out, labels=held_out).loss.item() for _ in range(10)])
        print(f"{sigma:9.2f}  {losses.mean():7.3f}  {losses.mean().exp():10.2f}")
print(f"(uniform guessing: loss {torch.log(torch.tensor(float(VOCAB))):.3f}, perplexity {VOCAB})")
print(f"done in {time.perf_counter() - start:.1f} s")
