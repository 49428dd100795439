"""Training loops: autoencoder pretraining and DEC/IDEC fine-tuning.

Both are short functions; progress output and metric logging attach as callbacks.
Inputs were checked by the estimator: ``X`` is a finite float32 tensor.
"""

import contextlib
import functools
import math
import sys
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from decflow.model.callbacks import dispatch
from decflow.model.losses import kl_divergence, target_distribution
from decflow.model.nn import Autoencoder, ClusteringLayer


@dataclass
class Batches:
    """Shuffled mini-batches over a tensor that may live on the host or on the device."""

    X: torch.Tensor
    batch_size: int
    device: torch.device
    generator: torch.Generator
    _order: torch.Tensor = field(init=False, repr=False)
    _pos: int = field(init=False, default=0)

    def __post_init__(self):
        self._order = torch.randperm(len(self.X), generator=self.generator)

    @property
    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.X) / self.batch_size)

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Next (indices, rows on device); reshuffles after each full pass."""
        if self._pos >= len(self._order):
            self._order = torch.randperm(len(self.X), generator=self.generator)
            self._pos = 0
        idx = self._order[self._pos:self._pos + self.batch_size]
        self._pos += self.batch_size
        rows = self.X[idx.to(self.X.device)] if self.X.device.type != "cpu" else self.X[idx]
        return idx, rows.to(self.device, non_blocking=True)


def autocast(device: torch.device, bf16: bool | None = None):
    """bf16 mixed precision or a no-op.

    ``bf16=None`` is training's rule: bf16 on CUDA, float32 on a CPU (training on a CPU keeps
    the float32 its quality results were measured with). Scoring passes the estimator's
    ``inference_precision`` resolved by ``uses_bf16``.
    """
    if bf16 is None:
        bf16 = device.type == "cuda"
    if bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


INFERENCE_PRECISIONS = ("auto", "float32", "bfloat16")


@functools.cache
def cpu_multiplies_bf16() -> bool:
    """Whether this CPU has bf16 dot-product instructions (AVX512-BF16 or AMX), which oneDNN
    uses for bf16 matrix products.

    Measured on the 2-core AMD EPYC (AVX512-BF16), default layers, one thread, batches of
    512: the encoder's forward pass ran at 60,500 rows/s under bf16 autocast against 21,300
    in float32. CPUs without these instructions emulate bf16 and gain nothing, so ``auto``
    keeps float32 there (and on every platform whose flags are not readable here).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            return bf16_in_cpuinfo(f.read())
    except OSError:
        return False


def bf16_in_cpuinfo(text: str) -> bool:
    """Whether the first ``flags`` line of a Linux ``/proc/cpuinfo`` names AVX512-BF16 or
    AMX-BF16."""
    for line in text.splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    return False


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether scoring on ``device`` with ``inference_precision=precision`` runs in bf16.

    ``auto``: bf16 on CUDA and on a CPU with bf16 instructions (``cpu_multiplies_bf16``),
    float32 elsewhere; ``float32`` and ``bfloat16`` force one. bf16 rounds each layer's
    inputs, weights and outputs, the embedding included, to 8 significant bits (the sums
    inside a matrix product are float32): on the scale benchmark's models it moved 0.02-0.03%
    of the labels, no ARI by more than 0.0003, and the distance to the centroid by 0.3-0.5%
    (median) (``docs/SCALE.md``).
    """
    if precision not in INFERENCE_PRECISIONS:
        raise ValueError(f"inference_precision must be one of {INFERENCE_PRECISIONS}, "
                         f"got {precision!r}")
    device = torch.device(device)
    if precision != "auto":
        return precision == "bfloat16" and device.type in ("cuda", "cpu")
    return device.type == "cuda" or (device.type == "cpu" and cpu_multiplies_bf16())


# Rows per forward call when embedding rows to score them (assign, predict, transform). On a
# CPU a batch's widest activation should stay in the core's caches: with the default layers
# (78 -> 500 -> 500 -> 2000 -> 10, measured on the 2-core Xeon), one thread embeds 56,200
# rows/s in batches of 512 (a 4-MB activation) and 46,000 in batches of 4,096 (32 MB); two
# workers scoring side by side 48,000-49,000 against 44,000 each. A GPU wants large batches.
CPU_ENCODE_BATCH_ROWS = 512
DEVICE_ENCODE_BATCH_ROWS = 4096
# Training embeds its rows (for the initialisation and each target update) in batches of
# 4,096 on every device. With 2 threads the batch size moves embeddings in the 8th digit,
# and fine-tuning amplifies that: digits, seed 0, gave 0.9332 ACC with batches of 512
# against 0.9393 with 4,096 (same machine), so training keeps the size its results had.
TRAINING_ENCODE_BATCH_ROWS = 4096


def adam_options(device: torch.device) -> dict:
    """Options of the training optimizers (Adam, AdamW) on ``device``.

    On a CPU, torch's fused kernel updates each parameter in one pass instead of one pass per
    element-wise operation of the update: measured on the 2-core Xeon (default layers, 78
    features, batches of 256), a pretraining step took 19.0 ms against 25.5 ms (AdamW) and a
    fine-tuning step 19.6 against 28.5 ms (Adam), a quarter less per step (the initialisation
    has no optimizer and is unchanged). It rounds in
    another order, so weights differ from the per-step kernels' in the last bits, and
    training amplifies that like any reordering: the quality results were measured again with
    it (``benchmarks/results/quality.md``). Other devices keep torch's default (the GPU
    results were measured with it).
    """
    return {"fused": True} if torch.device(device).type == "cpu" else {}


@torch.no_grad()
def encode(autoencoder: Autoencoder, X: torch.Tensor, device: torch.device,
           batch_size: int | None = None, *, bf16: bool | None = None) -> torch.Tensor:
    """Embed all rows. (n, d) -> (n, n_components) float32 on ``device``.

    ``batch_size`` defaults to ``CPU_ENCODE_BATCH_ROWS`` on a CPU and
    ``DEVICE_ENCODE_BATCH_ROWS`` elsewhere: every path that scores rows on one device uses the
    same size, so they give identical embeddings (training passes its own). ``bf16``: see
    ``autocast`` (``None``, training's rule; scoring passes ``uses_bf16``'s answer).

    Each batch's embedding is copied into one tensor allocated up front and then freed: kept
    as a list, the small outputs sat above each batch's freed activations on the heap and
    pinned them, so memory grew by about 8 KB a row (0.5 GB for 65,536 rows).
    """
    if batch_size is None:
        batch_size = (CPU_ENCODE_BATCH_ROWS if torch.device(device).type == "cpu"
                      else DEVICE_ENCODE_BATCH_ROWS)
    was_training = autoencoder.training
    autoencoder.eval()
    out = None
    for start in range(0, len(X), batch_size):
        with autocast(device, bf16):
            z = autoencoder.encode(X[start:start + batch_size].to(device))
        if out is None:
            out = torch.empty((len(X), z.shape[1]), dtype=torch.float32, device=z.device)
        out[start:start + len(z)] = z
        del z
    autoencoder.train(was_training)
    if out is None:  # no rows
        return autoencoder.encode(X[:0].to(device)).float()
    return out


def pretrain_loop(autoencoder: Autoencoder, X: torch.Tensor, *, epochs: int,
                  batch_size: int, lr: float, weight_decay: float,
                  device: torch.device, generator: torch.Generator,
                  callbacks=()) -> list[float]:
    """Minimise reconstruction MSE of the (denoising) autoencoder.

    The learning rate follows a cosine schedule to 0, which converges markedly better than a
    constant rate for the same number of epochs. Pretraining stays in float32 on CUDA too:
    bf16 autocast here cost about 4 points of ACC on digits (H100, 3 seeds: 0.876 vs 0.917),
    while fine-tuning and inference use bf16 without a measurable loss.

    Returns:
        Mean training loss per epoch.
    """
    batches = Batches(X, batch_size, device, generator)
    total = max(1, epochs * batches.steps_per_epoch)
    opt = torch.optim.AdamW(autoencoder.parameters(), lr=lr, weight_decay=weight_decay,
                            **adam_options(device))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    autoencoder.train()
    losses = []
    dispatch(callbacks, "on_phase_begin", "pretrain", {"epochs": epochs})
    for epoch in range(1, epochs + 1):
        running = torch.zeros((), device=device)
        for _ in range(batches.steps_per_epoch):
            _, xb = batches.next()
            _, recon = autoencoder(xb)
            loss = F.mse_loss(recon.float(), xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.detach()
        losses.append(float(running) / batches.steps_per_epoch)
        dispatch(callbacks, "on_epoch_end", "pretrain", epoch, {"loss": losses[-1]})
    dispatch(callbacks, "on_phase_end", "pretrain", {"loss": losses[-1] if losses else None})
    return losses


@dataclass
class FinetuneResult:
    labels: torch.Tensor
    n_iter: int
    converged: bool
    history: list[dict] = field(default_factory=list)


def dec_loop(autoencoder: Autoencoder, clustering: ClusteringLayer, X: torch.Tensor, *,
             gamma: float, update_interval: int, tol: float, max_iter: int, batch_size: int,
             lr: float, device: torch.device, generator: torch.Generator,
             initial_target: torch.Tensor | None = None, anchor_updates: int | None = 0,
             on_update=None, callbacks=()) -> FinetuneResult:
    """DEC self-training: every ``update_interval`` steps recompute the target P over all rows,
    then minimise KL(P || Q) (+ gamma * reconstruction MSE for IDEC) on mini-batches.

    Args:
        initial_target: optional (n, k) target used for the first ``anchor_updates`` target
            updates instead of P(Q), so that the embedding first learns the initial partition;
            ``anchor_updates=None`` uses it for all of them: the fine-tuning then distils that
            partition and runs ``max_iter`` steps, because agreement with a kept target keeps
            rising after label changes fall under ``tol`` (digits: 0.933 when stopped there
            after 48 steps, 0.950 after 500); ``converged`` then says whether the last update
            changed fewer than ``tol`` of the labels.
        on_update: optional ``fn(labels, sizes)`` called at each target update (degenerate
            cluster checks live in the estimator).

    Returns:
        Final hard labels (n,), number of optimiser steps, whether ``tol`` was met, and one
        history row per target update.
    """
    if initial_target is None:
        anchor_updates = 0
    batches = Batches(X, batch_size, device, generator)
    params = list(autoencoder.encoder.parameters()) + list(clustering.parameters())
    if gamma > 0:
        params += list(autoencoder.decoder.parameters())
    opt = torch.optim.Adam(params, lr=lr, **adam_options(device))
    history: list[dict] = []
    prev_labels = None
    step, update, converged = 0, 0, False
    dispatch(callbacks, "on_phase_begin", "finetune", {"max_iter": max_iter})
    while True:
        q = clustering(encode(autoencoder, X, device, TRAINING_ENCODE_BATCH_ROWS))
        labels = q.argmax(dim=1)
        delta = 1.0 if prev_labels is None else float((labels != prev_labels).float().mean())
        if on_update is not None:
            on_update(labels, torch.bincount(labels, minlength=q.shape[1]))
        anchored = initial_target is not None and (anchor_updates is None
                                                   or update < anchor_updates)
        if anchored:
            p = initial_target.to(device)
        else:
            p = target_distribution(q)
        if history:
            history[-1]["delta_label"] = delta
            dispatch(callbacks, "on_epoch_end", "finetune", update, history[-1])
        if (anchor_updates is not None and prev_labels is not None
                and update > anchor_updates and delta < tol):
            converged = True
            break
        if step >= max_iter:
            converged = anchor_updates is None and delta < tol
            break
        prev_labels = labels
        update += 1
        kl_sum = rec_sum = torch.zeros((), device=device)
        n_steps = min(update_interval, max_iter - step)
        autoencoder.train()
        for _ in range(n_steps):
            idx, xb = batches.next()
            with autocast(device):
                z = autoencoder.encoder(xb)
                recon = autoencoder.decoder(z) if gamma > 0 else None
            kl = kl_divergence(p[idx.to(device)], clustering(z.float()))
            loss = kl
            if recon is not None:
                rec = F.mse_loss(recon.float(), xb)
                loss = loss + gamma * rec
                rec_sum = rec_sum + rec.detach()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            kl_sum = kl_sum + kl.detach()
            step += 1
        history.append({"update": update, "step": step, "kl": float(kl_sum) / n_steps,
                        "reconstruction": float(rec_sum) / n_steps if gamma > 0 else float("nan")})
    dispatch(callbacks, "on_phase_end", "finetune", {"n_iter": step, "converged": converged})
    return FinetuneResult(labels=labels.cpu(), n_iter=step, converged=converged, history=history)
