"""Peak memory of the training losses at VARCO's vocabulary (151,936): plain vs chunked.

Each variant runs forward + backward in its own fresh process; its peak is the growth of the process's
resident-set high-water mark (VmHWM, reset once the inputs are built) over the resident size then, so every
figure is "extra memory this loss needed". Printed side by side, with the loss value and gradient
checksums so you can see the variants computed the same thing.

Cross-entropy (SFT) variants, N tokens, hidden H, head (V, H) trainable:
  ce-plain        F.cross_entropy(h @ W.T, y)                         (full N x V logits)
  ce-checkpoint   torch.utils.checkpoint per token chunk, full vocab   (the obvious alternative)
  ce-chunked      training.losses.chunked_cross_entropy, token chunks only
  ce-chunked-v    ... token and vocabulary chunks (the default)
DPO variants, P pairs of length T (all tokens scored: the worst case for chunking), fixed reference
log-probabilities, head trainable:
  dpo-full        log_softmax over the full (2P, T, V) logits, gather, sum (TRL's way)
  dpo-chunked     training.losses.sequence_logprobs (the default chunks) + the same sigmoid formula

Usage: python benchmarks/train_losses_memory.py [--tokens 2048 --hidden 1024 --pairs 2 --length 512]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

VOCAB = 151_936
CE_VARIANTS = ("ce-plain", "ce-checkpoint", "ce-chunked", "ce-chunked-v")
DPO_VARIANTS = ("dpo-full", "dpo-chunked")


def _status_mib(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {key} in /proc/self/status (Linux only)")


def _reset_peak_mib() -> float:
    """Reset the resident high-water mark to the current resident size (Linux clear_refs 5) and return it,
    so earlier transients (imports, building the inputs) cannot hide the measured step's peak."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def run_variant(variant: str, tokens: int, hidden: int, pairs: int, length: int, chunk: int) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from training.losses import chunked_cross_entropy, sequence_logprobs

    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(0)
    weight = (torch.randn(VOCAB, hidden, generator=gen) * 0.02).requires_grad_()
    if variant.startswith("ce"):
        h = torch.randn(tokens, hidden, generator=gen).requires_grad_()
        labels = torch.randint(0, VOCAB, (tokens,), generator=gen)
    else:
        h = torch.randn(2 * pairs, length, hidden, generator=gen).requires_grad_()
        labels = torch.randint(0, VOCAB, (2 * pairs, length), generator=gen)
        ref = torch.randn(2 * pairs, generator=gen) - 12.0 * length
    # Pre-touch what every variant needs anyway (the weight gradient buffer) so the figures compare the
    # loss's own working memory.
    weight.grad = torch.zeros_like(weight)
    h.grad = torch.zeros_like(h)
    baseline = _reset_peak_mib()
    start = time.perf_counter()

    if variant == "ce-plain":
        loss = F.cross_entropy(h @ weight.T, labels)
    elif variant == "ce-checkpoint":
        from torch.utils.checkpoint import checkpoint

        def chunk_loss(hc, w, yc):
            return F.cross_entropy(hc @ w.T, yc, reduction="sum")

        loss = sum(checkpoint(chunk_loss, h[s : s + chunk], weight, labels[s : s + chunk], use_reentrant=False)
                   for s in range(0, tokens, chunk)) / tokens
    elif variant == "ce-chunked":
        loss = chunked_cross_entropy(h, weight, labels, chunk_size=chunk, vocab_chunk=None)
    elif variant == "ce-chunked-v":
        loss = chunked_cross_entropy(h, weight, labels, chunk_size=chunk)
    elif variant == "dpo-full":
        logits = h @ weight.T
        token = torch.log_softmax(logits.float(), -1).gather(-1, labels[..., None]).squeeze(-1)
        logps = token.sum(-1)
        loss = -F.logsigmoid(0.1 * ((logps[:pairs] - ref[:pairs]) - (logps[pairs:] - ref[pairs:]))).mean()
    elif variant == "dpo-chunked":
        logps = sequence_logprobs(h, weight, labels, torch.ones_like(labels, dtype=torch.bool), chunk_size=chunk).total
        loss = -F.logsigmoid(0.1 * ((logps[:pairs] - ref[:pairs]) - (logps[pairs:] - ref[pairs:]))).mean()
    else:
        raise SystemExit(f"unknown variant {variant}")
    loss.backward()
    seconds = time.perf_counter() - start
    return {
        "variant": variant,
        "peak_mib": round(_status_mib("VmHWM") - baseline, 1),
        "seconds": round(seconds, 2),
        "loss": float(loss),
        "grad_h_sum": float(h.grad.double().abs().sum()),
        "grad_w_sum": float(weight.grad.double().abs().sum()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=2048, help="cross-entropy tokens")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--pairs", type=int, default=2, help="DPO pairs (2 x pairs sequences)")
    parser.add_argument("--length", type=int, default=512, help="DPO sequence length")
    parser.add_argument("--chunk", type=int, default=1024, help="token chunk of the chunked variants")
    parser.add_argument("--variant", help=argparse.SUPPRESS)  # internal: run one variant in this process
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(run_variant(args.variant, args.tokens, args.hidden, args.pairs, args.length, args.chunk)))
        return 0

    results = {}
    for variant in CE_VARIANTS + DPO_VARIANTS:
        cmd = [sys.executable, __file__, "--variant", variant, "--tokens", str(args.tokens), "--hidden", str(args.hidden),
               "--pairs", str(args.pairs), "--length", str(args.length), "--chunk", str(args.chunk)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results[variant] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"vocabulary {VOCAB}, hidden {args.hidden}; CE: {args.tokens} tokens; DPO: {args.pairs} pairs x 2 x {args.length} "
          f"tokens; chunk {args.chunk} tokens; peak = extra resident memory over the inputs, forward + backward")
    print(f"{'variant':<14} {'peak MiB':>9} {'seconds':>8} {'loss':>12} {'|grad h|':>12} {'|grad W|':>12}")
    for r in results.values():
        print(f"{r['variant']:<14} {r['peak_mib']:>9.1f} {r['seconds']:>8.2f} {r['loss']:>12.6f} {r['grad_h_sum']:>12.4f} {r['grad_w_sum']:>12.4f}")

    def ratio(a, b):
        return results[a]["peak_mib"] / max(results[b]["peak_mib"], 1e-9)

    print(f"ratio ce-plain / ce-chunked-v peak:      {ratio('ce-plain', 'ce-chunked-v'):.1f}x")
    print(f"ratio ce-plain / ce-chunked peak:        {ratio('ce-plain', 'ce-chunked'):.1f}x")
    print(f"ratio ce-checkpoint / ce-chunked peak:   {ratio('ce-checkpoint', 'ce-chunked'):.1f}x")
    print(f"ratio dpo-full / dpo-chunked peak:       {ratio('dpo-full', 'dpo-chunked'):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
