"""``DeepEmbeddedClustering``: a scikit-learn estimator in front of the DEC/IDEC maths."""

# Over 500 lines on purpose: it holds one class, whose docstring (26 parameters and the fitted
# attributes, kept on the class as scikit-learn does) is 100 of them. Building the estimator
# from a config lives in building.py, the handling of degenerate clusters in degenerate.py.

import json
import logging
import math
import time
from numbers import Integral
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
from sklearn.base import BaseEstimator, ClusterMixin, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from decflow.files import atomic_path
from decflow import __version__
from decflow.model.degenerate import report_degenerate, reseed_degenerate
from decflow.model.initialization import (INIT_CHOICES, VIEW_SPACES, effective_dimension,
                                          kmeans_init, manifold_init, view_dimensions)
from decflow.model.initialization import view_space as choose_view_space
from decflow.model.nn import Autoencoder, ClusteringLayer
from decflow.model.training import (INFERENCE_PRECISIONS, TRAINING_ENCODE_BATCH_ROWS, dec_loop,
                                    encode, pretrain_loop, uses_bf16)

_FORMAT = "decflow.dec/1"
# Most fine-tuning steps with max_iter="auto" when the initial target is kept throughout
# (see DeepEmbeddedClustering.finetune_steps_for)
KEPT_TARGET_MAX_STEPS = 2000
_log = logging.getLogger(__name__)


class DeepEmbeddedClustering(ClusterMixin, TransformerMixin, BaseEstimator):
    """Deep Embedded Clustering (DEC) with the IDEC reconstruction term.

    A denoising autoencoder d-500-500-2000-10 is pretrained on X, centroids are initialised
    in its embedding, then encoder and centroids are fine-tuned together by minimising
    KL(P || Q) between the Student-t soft assignment Q and its sharpened target P
    (+ ``gamma`` * reconstruction loss; ``gamma=0`` is plain DEC).

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters (>= 2).
    n_components : int, default=10
        Size of the embedding z.
    hidden : tuple of int, default=(500, 500, 2000)
        Encoder hidden widths; the decoder mirrors them.
    alpha : float, default=1.0
        Degrees of freedom of the Student-t kernel.
    gamma : float, default=0.1
        Weight of the reconstruction loss during fine-tuning (IDEC); 0 gives plain DEC.
    pretrain_epochs : int or "auto", default="auto"
        Autoencoder pretraining epochs. "auto" targets about ``pretrain_steps`` optimiser steps
        (at least one pass over X, at most 500 epochs): the same training time at every table
        size above about 23,000 rows, and many passes over a small table.
    pretrain_steps : int, default=4500
        Step budget used by ``pretrain_epochs="auto"``.
    pretrain_optimizer : {"adamw"}, default="adamw"
        Optimiser for pretraining (AdamW with a cosine learning-rate schedule).
    pretrain_lr : float, default=1e-3
    input_dropout : float, default=0.2
        Input corruption during pretraining (denoising autoencoder).
    finetune_lr : float, default=1e-4
        Adam learning rate for fine-tuning.
    update_interval : int or None, default=None
        Optimiser steps between target-distribution updates; None means one pass over X.
    tol : float, default=0.001
        Stop when fewer than this fraction of labels change between target updates.
    max_iter : int or "auto", default="auto"
        Maximum fine-tuning optimiser steps; "auto" is 30 passes over X, clipped to 500..20000,
        or with the initial target kept throughout (``anchor_updates="all"``, which runs all
        of them) 10 passes clipped to 500..2000 (``finetune_steps_for``).
    batch_size : int, default=256
    init : {"manifold", "k-means"} or array of shape (n_clusters, n_components), default="manifold"
        "manifold": Gaussian mixture on a UMAP graph embedding of z (N2D), whose posteriors are
        the first fine-tuning target. "k-means": k-means on z (the DEC paper). An array gives
        the centroids directly (for example from a distributed k-means) and skips both.
    n_init : int, default=10
        Restarts of the k-means / Gaussian mixture initialisation.
    view_space : {"auto", "embedding", "input"}, default="auto"
        Where the "manifold" initialisation fits its views: on the embedding z, or on the
        scaled input itself. "auto" takes the input when its effective dimension (participation
        ratio of the covariance spectrum) is at most ``n_components``: the autoencoder then
        compresses nothing and its embedding distorts what the input shows (see
        ``decflow.model.initialization``).
    init_views : int, default=5
        UMAP views fitted by the "manifold" initialisation; the candidate partition with the
        highest silhouette in its own view is kept (label-free; see
        ``decflow.model.initialization``).
    init_view_rows : int or None, default=50000
        The views are fitted on a seeded sample of at most this many rows; the chosen view
        then places the other rows, whose mixture posteriors complete the target (a UMAP fit
        costs minutes a view at 200,000 rows). None fits the views on all rows.
    anchor_updates : int or "all", default="all"
        Target updates that use the initialisation's mixture posteriors as the target before
        DEC's own target p(q) takes over; "all" keeps them for the whole fine-tuning, which
        then distils the manifold partition into the encoder and the centroids. Only used
        when the initialisation gives posteriors ("manifold").
    input_scaling : {"global", "none"}, default="global"
        "global" centres each feature and divides all by one common scale, keeping the relative
        scale of features (pixels, precomputed embeddings); "none" uses X as given.
    min_cluster_size : float, default=0.0
        A cluster that is empty or smaller than this fraction of n_samples / n_clusters counts
        as degenerate: re-seeded after a k-means initialisation, reported by a
        ``DegenerateClusterWarning`` afterwards. The default flags empty clusters only: real
        tables hold true groups far below 1/k of the rows.
    device : {"auto", "cpu", "cuda", ...}, default="auto"
        "auto" uses CUDA when present (bf16 mixed precision, data kept on the GPU when it fits).
    inference_precision : {"auto", "float32", "bfloat16"}, default="auto"
        Arithmetic of the forward pass when scoring (``transform``, ``predict``,
        ``predict_proba``, ``assign``); training is unaffected. "auto" is bf16 on CUDA and on a
        CPU with bf16 instructions (AVX512-BF16 or AMX), where the forward pass ran 2.2x as
        fast as in float32 on 2 threads (2.8x on one), and float32 elsewhere
        (``decflow.model.training.uses_bf16``); bf16 moves the labels of rows that lie almost
        exactly between two clusters (0.02-0.03% of rows on the scale benchmark's models).
        "float32" gives the same labels on every CPU. Saved with the model; a file written
        before the setting existed loads with the arithmetic it was scored with then (float32
        on a CPU, "auto" on CUDA).
    random_state : int or None, default=None
        Seed for weights, shuffling and initialisation; on CPU a fixed seed gives identical labels.
    callbacks : list of decflow.model.callbacks.Callback, default=None

    Attributes
    ----------
    cluster_centers_ : ndarray (n_clusters, n_components)
    labels_ : ndarray (n_samples,)
    n_iter_ : int
        Fine-tuning optimiser steps taken.
    autoencoder_ : decflow.model.nn.Autoencoder
    history_ : dict
        ``pretrain_loss`` (one value per epoch) and ``finetune`` (one dict per target update:
        ``kl``, ``reconstruction``, ``delta_label``, ``step``).
    timings_ : dict
        Wall seconds per phase: ``pretrain``, ``init``, ``finetune``.
    degenerate_clusters_ : dict
        Cluster id -> size for clusters left empty or tiny at the end of fitting.
    view_space_ : str
        "embedding" or "input": where the manifold views were fitted ("none" for other inits).
    input_dimension_ : float
        Effective dimension of the scaled input (participation ratio), which "auto" compares
        with ``n_components``.
    n_features_in_ : int
    """

    def __init__(self, n_clusters=8, *, n_components=10, hidden=(500, 500, 2000), alpha=1.0,
                 gamma=0.1, pretrain_epochs="auto", pretrain_steps=4500,
                 pretrain_optimizer="adamw", pretrain_lr=1e-3, input_dropout=0.2,
                 finetune_lr=1e-4, update_interval=None, tol=0.001, max_iter="auto",
                 batch_size=256, init="manifold", n_init=10, view_space="auto", init_views=5,
                 init_view_rows=50000, anchor_updates="all", input_scaling="global",
                 min_cluster_size=0.0, device="auto", inference_precision="auto",
                 random_state=None, callbacks=None):
        self.n_clusters = n_clusters
        self.n_components = n_components
        self.hidden = hidden
        self.alpha = alpha
        self.gamma = gamma
        self.pretrain_epochs = pretrain_epochs
        self.pretrain_steps = pretrain_steps
        self.pretrain_optimizer = pretrain_optimizer
        self.pretrain_lr = pretrain_lr
        self.input_dropout = input_dropout
        self.finetune_lr = finetune_lr
        self.update_interval = update_interval
        self.tol = tol
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.init = init
        self.n_init = n_init
        self.view_space = view_space
        self.init_views = init_views
        self.init_view_rows = init_view_rows
        self.anchor_updates = anchor_updates
        self.input_scaling = input_scaling
        self.min_cluster_size = min_cluster_size
        self.device = device
        self.inference_precision = inference_precision
        self.random_state = random_state
        self.callbacks = callbacks

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None):
        """Pretrain, initialise and fine-tune on X of shape (n_samples, n_features)."""
        self.pretrain(X)
        return self.fine_tune(X)

    def pretrain(self, X, warm_start=None, epochs=None):
        """Phase 1: fit the input scaler and pretrain the autoencoder on X.

        Args:
            X: (n_samples, n_features).
            warm_start: optional autoencoder ``state_dict`` (e.g. the current champion's) of
                the same architecture to start from instead of random weights.
            epochs: pretraining epochs (default: ``pretrain_epochs``; resolves "auto").

        Returns:
            self, with ``autoencoder_``, ``history_["pretrain_loss"]``, ``timings_["pretrain"]``.
        """
        X = _check_array(X, "X")
        self._check_params(X)
        device = _resolve_device(self.device)
        self._seed = self.random_state if self.random_state is not None else int(
            np.random.SeedSequence().generate_state(1)[0] >> 1)
        n, d = X.shape
        self.n_features_in_ = d
        self._fit_scaler(X)
        Xt = self._to_tensor(X, device)
        self._generator = torch.Generator().manual_seed(self._seed)
        self.timings_ = {}
        with torch.random.fork_rng(devices=_fork_devices(device)):
            torch.manual_seed(self._seed)
            self.autoencoder_ = Autoencoder(d, list(self.hidden), self.n_components,
                                            self.input_dropout).to(device)
            if warm_start is not None:
                try:
                    self.autoencoder_.load_state_dict(warm_start)
                except RuntimeError as exc:
                    raise ValueError(f"warm_start weights do not fit this architecture "
                                     f"(d={d}, hidden={list(self.hidden)}, "
                                     f"n_components={self.n_components}): {exc}") from None
            _log.info("pretraining the autoencoder on %d rows x %d features on %s%s", n, d,
                      device, " (warm start)" if warm_start is not None else "")
            t0 = time.perf_counter()
            pretrain_loss = pretrain_loop(
                self.autoencoder_, Xt, epochs=self.pretrain_epochs_for(n) if epochs is None
                else int(epochs), batch_size=self.batch_size, lr=self.pretrain_lr,
                weight_decay=0.0, device=device, generator=self._generator,
                callbacks=self.callbacks)
            self.timings_["pretrain"] = time.perf_counter() - t0
            # fine_tune continues this random stream, so fit == pretrain + fine_tune exactly.
            self._rng_state = (torch.get_rng_state(), torch.cuda.get_rng_state(device)
                               if device.type == "cuda" else None)
        self.autoencoder_.eval()
        self.history_ = {"pretrain_loss": pretrain_loss, "finetune": []}
        return self

    def fine_tune(self, X, init=None, target=None):
        """Phases 2-3: initialise centroids (unless given) and run DEC/IDEC self-training.

        Args:
            X: (n_samples, n_features), the rows ``pretrain`` saw.
            init: optional (n_clusters, n_components) centroids in z; overrides ``self.init``
                (this is how an external, e.g. Dask, initialisation plugs in).
            target: optional (n_samples, n_clusters) soft assignment used as the target for
                the first target updates (e.g. mixture posteriors from the initialisation).

        Returns:
            self, fitted.
        """
        if not hasattr(self, "_rng_state"):
            raise ValueError("fine_tune needs a pretrained autoencoder: call pretrain(X) first")
        X = _check_array(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but pretrain saw "
                             f"{self.n_features_in_}")
        device = next(self.autoencoder_.parameters()).device
        n = len(X)
        Xt = self._to_tensor(X, device)
        seed = self._seed
        with torch.random.fork_rng(devices=_fork_devices(device)):
            cpu_state, cuda_state = self._rng_state
            torch.set_rng_state(cpu_state)
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
            t0 = time.perf_counter()
            if init is not None:
                centers = _check_centers(init, self.n_clusters, self.n_components)
            else:
                Z = encode(self.autoencoder_, Xt, device,  # training's precision
                           TRAINING_ENCODE_BATCH_ROWS).cpu().numpy()
                centers, target = self._initial_centers(Z, seed, X)
                if target is None:  # a target (the mixture's posteriors) defines its clusters
                    centers = reseed_degenerate(Z, centers, self.min_cluster_size)
            if target is not None:
                target = np.asarray(target, dtype=np.float32)
                if target.shape != (n, self.n_clusters):
                    raise ValueError(f"target has shape {target.shape}, expected "
                                     f"{(n, self.n_clusters)}")
            self.timings_["init"] = time.perf_counter() - t0

            t0 = time.perf_counter()
            self._clustering = ClusteringLayer(torch.from_numpy(centers), self.alpha).to(device)
            steps_per_epoch = math.ceil(n / self.batch_size)
            result = dec_loop(
                self.autoencoder_, self._clustering, Xt, gamma=self.gamma,
                update_interval=self.update_interval or steps_per_epoch, tol=self.tol,
                max_iter=self.finetune_steps_for(n, kept_target=target is not None
                                                 and self._anchor_updates() is None),
                batch_size=self.batch_size,
                lr=self.finetune_lr, device=device, generator=self._generator,
                initial_target=None if target is None else torch.from_numpy(target),
                anchor_updates=0 if target is None else self._anchor_updates(),
                callbacks=self.callbacks)
            self.timings_["finetune"] = time.perf_counter() - t0
        self.autoencoder_.eval()
        self.cluster_centers_ = self._clustering.centers.detach().cpu().numpy().copy()
        self.labels_ = result.labels.numpy().astype(np.int64)
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.history_["finetune"] = result.history
        sizes = np.bincount(self.labels_, minlength=self.n_clusters)
        _log.info("fine-tuning %s after %d steps (%.1f s); cluster sizes: %s",
                  "converged" if self.converged_ else "stopped at max_iter", self.n_iter_,
                  self.timings_["finetune"], sizes.tolist())
        self.degenerate_clusters_ = report_degenerate(self.labels_, self.n_clusters,
                                                      self.min_cluster_size)
        return self

    def permute_clusters(self, order) -> "DeepEmbeddedClustering":
        """Renumber clusters in place: new cluster ``j`` is old cluster ``order[j]``.

        Used to keep cluster ids stable across retrainings; predictions are unchanged up to
        this relabelling.
        """
        check_is_fitted(self, "cluster_centers_")
        order = np.asarray(order, dtype=np.int64)
        if sorted(order.tolist()) != list(range(self.n_clusters)):
            raise ValueError(f"order must be a permutation of 0..{self.n_clusters - 1}, "
                             f"got {order.tolist()}")
        inverse = np.argsort(order)
        self.cluster_centers_ = self.cluster_centers_[order].copy()
        self.labels_ = inverse[self.labels_]
        with torch.no_grad():
            self._clustering.centers.copy_(self._clustering.centers[torch.from_numpy(order)]
                                           .clone())
        self.degenerate_clusters_ = {int(inverse[j]): v
                                     for j, v in self.degenerate_clusters_.items()}
        return self

    def fit_predict(self, X, y=None):
        """Fit and return the training labels (n_samples,)."""
        return self.fit(X).labels_

    # --------------------------------------------------------------- inference
    def transform(self, X, *, training: bool = False):
        """Embedding z of shape (n_samples, n_components).

        Scored in batches of the device's scoring size at ``inference_precision``
        (``decflow.model.training.encode``). ``training=True`` embeds as training does, in
        batches of ``TRAINING_ENCODE_BATCH_ROWS`` and in float32 on a CPU: for the
        initialisation's own embeddings (its views and k-means), whose results were measured
        that way.
        """
        return self._embed(X, training).cpu().numpy()

    def predict_proba(self, X):
        """Soft assignment q of shape (n_samples, n_clusters); rows sum to 1."""
        check_is_fitted(self, "cluster_centers_")
        z = self._embed(X)
        with torch.no_grad():
            return self._clustering(z).cpu().numpy()

    def predict(self, X):
        """Cluster id (argmax q) for each row, shape (n_samples,)."""
        return self.predict_proba(X).argmax(axis=1)

    def assign(self, X):
        """Cluster id, confidence and distance to the centroid for each row: what scoring writes.

        Not ``score_samples``: scikit-learn expects that to return one score per row.

        Args:
            X: (n_samples, n_features).

        Returns:
            (labels, confidence, distance): (n_samples,) int64 cluster id (argmax q, as
            ``predict``), (n_samples,) float32 max q, and (n_samples,) float32 Euclidean
            distance in z to the assigned centroid.
        """
        check_is_fitted(self, "cluster_centers_")
        z = self._embed(X)
        with torch.no_grad():
            q = self._clustering(z)
            conf, ids = q.max(dim=1)
            dist = (z - self._clustering.centers[ids]).norm(dim=1)
        return ids.cpu().numpy(), conf.cpu().numpy(), dist.cpu().numpy()

    # ------------------------------------------------------------- persistence
    def save(self, path) -> Path:
        """Write settings, scaler, weights and centroids to one safetensors file (atomically).

        Nothing is pickled: tensors go in the safetensors body, settings as JSON metadata.
        """
        from safetensors.torch import save_file

        check_is_fitted(self, "cluster_centers_")
        path = Path(path)
        tensors = {f"autoencoder.{k}": v.detach().cpu().contiguous()
                   for k, v in self.autoencoder_.state_dict().items()}
        tensors["cluster_centers"] = torch.from_numpy(self.cluster_centers_).contiguous()
        tensors["scaler.mean"] = torch.from_numpy(self.scaler_mean_).contiguous()
        tensors["labels"] = torch.from_numpy(self.labels_).contiguous()
        settings = {k: v for k, v in self.get_params().items() if k != "callbacks"}
        if isinstance(settings["init"], np.ndarray):
            settings["init"] = settings["init"].tolist()
        meta = {
            "format": _FORMAT,
            "decflow_version": __version__,
            "settings": json.dumps(settings),
            "fitted": json.dumps({
                "n_features_in_": self.n_features_in_, "scaler_scale_": self.scaler_scale_,
                "n_iter_": self.n_iter_, "converged_": self.converged_,
                "history_": self.history_, "timings_": self.timings_,
                "degenerate_clusters_": {str(k): v for k, v in self.degenerate_clusters_.items()},
                "view_space_": getattr(self, "view_space_", "none"),
            }),
        }
        with atomic_path(path) as tmp:
            save_file(tensors, tmp, metadata=meta)
        return path

    @classmethod
    def load(cls, path, device="cpu") -> "DeepEmbeddedClustering":
        """Rebuild a fitted estimator written by ``save``; predictions are identical."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("format") != _FORMAT:
                raise ValueError(f"{path} is not a decflow model file "
                                 f"(format {meta.get('format')!r}, expected {_FORMAT!r})")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        settings = json.loads(meta["settings"])
        if isinstance(settings.get("init"), list):
            settings["init"] = np.asarray(settings["init"], dtype=np.float32)
        settings["hidden"] = tuple(settings["hidden"])
        settings["device"] = device
        dev = _resolve_device(device)
        # written before the setting existed: keep the arithmetic it scored with then
        settings.setdefault("inference_precision", "auto" if dev.type == "cuda" else "float32")
        est = cls(**settings)
        fitted = json.loads(meta["fitted"])
        est.n_features_in_ = fitted["n_features_in_"]
        est.scaler_scale_ = fitted["scaler_scale_"]
        est.scaler_mean_ = tensors["scaler.mean"].numpy()
        est.n_iter_ = fitted["n_iter_"]
        est.converged_ = fitted["converged_"]
        est.history_ = fitted["history_"]
        est.timings_ = fitted["timings_"]
        est.degenerate_clusters_ = {int(k): v for k, v in fitted["degenerate_clusters_"].items()}
        est.view_space_ = fitted.get("view_space_", "none")
        est.autoencoder_ = Autoencoder(est.n_features_in_, list(est.hidden), est.n_components,
                                       est.input_dropout)
        est.autoencoder_.load_state_dict({k.removeprefix("autoencoder."): v
                                          for k, v in tensors.items()
                                          if k.startswith("autoencoder.")})
        est.autoencoder_.to(dev).eval()
        est.cluster_centers_ = tensors["cluster_centers"].numpy()
        est.labels_ = tensors["labels"].numpy()
        est._clustering = ClusteringLayer(tensors["cluster_centers"], est.alpha).to(dev)
        return est

    # ----------------------------------------------------------------- helpers
    def _check_params(self, X):
        k = self.n_clusters
        if not isinstance(k, Integral) or isinstance(k, bool) or k < 2:
            raise ValueError(f"n_clusters={k!r} must be an integer >= 2")
        if X.shape[0] < k:
            raise ValueError(f"n_samples={X.shape[0]} should be >= n_clusters={k}")
        if isinstance(self.init, str):
            if self.init not in INIT_CHOICES:
                raise ValueError(f"init={self.init!r} must be one of {INIT_CHOICES} "
                                 "or an array of centroids")
        else:
            init = np.asarray(self.init)
            if init.shape != (k, self.n_components):
                raise ValueError(f"init has shape {init.shape}, expected "
                                 f"(n_clusters, n_components)=({k}, {self.n_components})")
            if not np.isfinite(init).all():
                raise ValueError("init contains NaN or infinite values")
        if not (0 < self.tol < 1):
            raise ValueError(f"tol={self.tol!r} must be in (0, 1)")
        if self.gamma < 0:
            raise ValueError(f"gamma={self.gamma!r} must be >= 0")
        if self.alpha <= 0:
            raise ValueError(f"alpha={self.alpha!r} must be > 0")
        if self.inference_precision not in INFERENCE_PRECISIONS:
            raise ValueError(f"inference_precision={self.inference_precision!r} must be one "
                             f"of {INFERENCE_PRECISIONS}")
        if self.view_space not in VIEW_SPACES:
            raise ValueError(f"view_space={self.view_space!r} must be one of {VIEW_SPACES}")
        if self.input_scaling not in ("global", "none"):
            raise ValueError(f"input_scaling={self.input_scaling!r} must be 'global' or 'none'")
        if self.pretrain_optimizer != "adamw":
            raise ValueError(f"pretrain_optimizer={self.pretrain_optimizer!r}: only 'adamw' "
                             "is supported")
        if self.anchor_updates != "all" and (not isinstance(self.anchor_updates, Integral)
                                             or self.anchor_updates < 0):
            raise ValueError(f"anchor_updates={self.anchor_updates!r} must be 'all' or an "
                             "integer >= 0")
        for name in ("batch_size", "n_init", "n_components", "init_views"):
            value = getattr(self, name)
            if not isinstance(value, Integral) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        rs = self.random_state
        if rs is not None and (not isinstance(rs, Integral) or isinstance(rs, bool)):
            raise ValueError(f"random_state={rs!r} must be None or an integer (a seed)")
        if self.init_view_rows is not None and (not isinstance(self.init_view_rows, Integral)
                                                or self.init_view_rows <= self.n_clusters):
            raise ValueError(f"init_view_rows={self.init_view_rows!r} must be None or an "
                             f"integer > n_clusters={self.n_clusters}")

    def pretrain_epochs_for(self, n: int) -> int:
        """Epochs that ``pretrain`` runs on ``n`` rows: ``pretrain_epochs``, or with "auto"
        about ``pretrain_steps`` optimiser steps (at least one pass, at most 500 epochs).

        A table of up to ``pretrain_steps * batch_size / 50`` rows (23,040 by default) gets
        50 epochs or more from the step budget alone; a larger one gets the budget's steps,
        not 50 epochs: a floor of 50 epochs made 200,000 training rows cost 39,000 steps
        (about 27 minutes on 2 CPU cores) instead of about 4,500 (about 3.5 minutes)."""
        if self.pretrain_epochs == "auto":
            steps_per_epoch = math.ceil(n / self.batch_size)
            return int(np.clip(round(self.pretrain_steps / steps_per_epoch), 1, 500))
        return int(self.pretrain_epochs)

    def _anchor_updates(self) -> int | None:
        return None if self.anchor_updates == "all" else int(self.anchor_updates)

    def finetune_steps_for(self, n: int, kept_target: bool) -> int:
        """Most fine-tuning steps on ``n`` rows: ``max_iter``, or with "auto" 30 passes
        clipped to 500..20,000, and with a target kept throughout (``kept_target``: the
        manifold initialisation's posteriors and ``anchor_updates="all"``) 10 passes clipped
        to 500..``KEPT_TARGET_MAX_STEPS``.

        The kept target's upper bound binds above 51,200 rows (batches of 256), so digits,
        USPS, Dry Bean and Letter (at most 790 steps) run as before it was lowered from 5,000;
        a nightly's 200,000-row sample runs 2,000 steps instead of 5,000, 2.6 passes instead
        of 6.4: fine-tuning took 87 s instead of 253 in a 10M-row night on 2 CPU cores
        (``benchmarks/results/scale.md``). Measured on such samples
        (``benchmarks/finetune_steps.py``, seeds 0 and 1, 100,000 held-out rows): on a
        generated table every pass after the first lowered ACC (0.9465 after one pass, 0.9432
        after 2,346 steps, 0.9409 after 5,000); on KDD Cup 99 ACC rose slowly (0.7755 after
        2,346 steps, 0.7879 after 5,000) while NMI and ARI fell (0.6877 and 0.8412 against
        0.6799 and 0.8376).
        """
        if self.max_iter == "auto":
            steps_per_epoch = math.ceil(n / self.batch_size)
            if kept_target:  # distilling a fixed partition levels off after ~400 steps
                return int(np.clip(10 * steps_per_epoch, 500, KEPT_TARGET_MAX_STEPS))
            return int(np.clip(30 * steps_per_epoch, 500, 20000))
        return int(self.max_iter)

    def view_data(self, X, Z=None) -> tuple[np.ndarray, str]:
        """The rows the manifold views are fitted on, and where they live.

        Args:
            X: (n_samples, n_features), the rows ``pretrain`` saw.
            Z: the embedding of X when the caller has it already (not encoded again).

        Returns:
            ((n_samples, m) float32, "embedding" or "input"): the embedding z, or the scaled
            input when ``view_space`` (resolved by ``decflow.model.initialization.view_space``)
            says so. Sets ``view_space_`` and ``input_dimension_`` (the input's effective
            dimension).
        """
        check_is_fitted(self, "autoencoder_")
        X = _check_array(X, "X")
        Xs = ((X - self.scaler_mean_) / np.float32(self.scaler_scale_)).astype(np.float32)
        self.input_dimension_ = effective_dimension(Xs)
        self.view_space_ = choose_view_space(self.input_dimension_, self.n_components,
                                             self.view_space)
        if self.view_space_ == "input":
            return Xs, self.view_space_
        if Z is None:
            Z = self.transform(X, training=True)
        return Z, self.view_space_

    def _initial_centers(self, Z, seed, X):
        self.view_space_ = "none"
        if not isinstance(self.init, str):
            return np.asarray(self.init, dtype=np.float32), None
        if self.init == "k-means":
            return kmeans_init(Z, self.n_clusters, self.n_init, seed), None
        S, _ = self.view_data(X, Z)
        _log.info("initialisation: %d UMAP views of the %s", self.init_views,
                  "scaled input" if self.view_space_ == "input" else "embedding z")
        return manifold_init(Z, self.n_clusters, self.n_init, seed, n_views=self.init_views,
                             view_rows=self.init_view_rows,
                             views_of=S if self.view_space_ == "input" else None,
                             view_dims=view_dimensions(self.n_clusters, self.n_components))

    def _fit_scaler(self, X):
        if self.input_scaling == "global":
            self.scaler_mean_ = X.mean(axis=0).astype(np.float32)
            scale = float(np.sqrt(((X - self.scaler_mean_) ** 2).mean()))
            self.scaler_scale_ = scale if scale > 0 else 1.0
        else:
            self.scaler_mean_ = np.zeros(X.shape[1], dtype=np.float32)
            self.scaler_scale_ = 1.0

    def _to_tensor(self, X, device):
        Xs = (X - self.scaler_mean_) / np.float32(self.scaler_scale_)
        t = torch.from_numpy(np.ascontiguousarray(Xs, dtype=np.float32))
        # Keep the training set on the GPU when it takes under a quarter of free memory.
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if t.numel() * 4 < free // 4:
                return t.to(device)
            return t.pin_memory()
        return t

    def _embed(self, X, training: bool = False) -> torch.Tensor:
        check_is_fitted(self, "autoencoder_")  # transform works after pretrain alone
        X = _check_array(X, "X")
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but DeepEmbeddedClustering is "
                             f"expecting {self.n_features_in_} features as input")
        device = next(self.autoencoder_.parameters()).device
        Xt = self._to_tensor(X, device)
        if training:  # training's batch size and precision
            return encode(self.autoencoder_, Xt, device, TRAINING_ENCODE_BATCH_ROWS)
        return encode(self.autoencoder_, Xt, device,
                      bf16=uses_bf16(device, self.inference_precision))


def _check_array(X, name: str) -> np.ndarray:
    """Validate at the edge: dense, real, 2-D, numeric, finite, non-empty; returns float32.

    Raises TypeError for sparse input and values that are no numbers (scikit-learn's types),
    ValueError for the rest.
    """
    if sp.issparse(X):
        raise TypeError(f"{name} is a sparse {type(X).__name__}: sparse input is not "
                        "supported, pass a dense array (X.toarray())")
    try:
        X = np.asarray(X)
        is_complex = X.dtype.kind == "c"  # a float32 cast would drop the imaginary part
        if not is_complex:
            X = X.astype(np.float32, copy=False)
    except TypeError as exc:
        raise TypeError(f"{name} must be numeric: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"{name} must be numeric: {exc}") from None
    if is_complex:
        raise ValueError(f"{name} holds complex numbers: Complex data not supported")
    if X.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n_samples, n_features), got shape {X.shape}. "
                         "Reshape your data: X.reshape(1, -1) for one sample, "
                         "X.reshape(-1, 1) for one feature")
    if X.shape[0] == 0 or X.shape[1] == 0:
        what = "sample" if X.shape[0] == 0 else "feature"
        raise ValueError(f"{name} is empty: 0 {what}(s) (shape={X.shape}) while a minimum of "
                         "1 is required.")
    finite = np.isfinite(X)
    if not finite.all():
        bad_rows = np.flatnonzero(~finite.all(axis=1))
        bad_cols = np.flatnonzero(~finite.all(axis=0))
        kind = "NaN" if np.isnan(X).any() else "infinity"
        raise ValueError(
            f"{name} contains {kind} or non-finite values in {len(bad_rows)} of {X.shape[0]} "
            f"rows (first rows {bad_rows[:5].tolist()}; columns {bad_cols[:10].tolist()})")
    return X


def _check_centers(init, n_clusters: int, n_components: int) -> np.ndarray:
    centers = np.asarray(init, dtype=np.float32)
    if centers.shape != (n_clusters, n_components):
        raise ValueError(f"init has shape {centers.shape}, expected (n_clusters, n_components)"
                         f" = {(n_clusters, n_components)}")
    if not np.isfinite(centers).all():
        raise ValueError("init contains NaN or infinite centroid coordinates")
    return centers.copy()


def _fork_devices(device: torch.device) -> list[int]:
    return [device.index or 0] if device.type == "cuda" else []


def _resolve_device(device) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but CUDA is not available")
    return dev
