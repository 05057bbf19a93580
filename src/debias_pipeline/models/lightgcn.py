"""LightGCN (He et al., "LightGCN: Simplifying and Powering Graph Convolution
Network for Recommendation", SIGIR 2020), trained full-batch as in the study."""

from __future__ import annotations

from debias_pipeline.config.params import require
from debias_pipeline.models.mf import MF, MFConfig


class LightGCNConfig(MFConfig):
    """LightGCN hyperparameters: MF's and the propagation depth.

    Attributes:
        num_layers: propagation layers K (the study: 2, the best on Yahoo! R3).
        optimizer: also ``sparse_adam`` with ``propagation: stale``, where all but the
            exact steps touch only the batch's rows (``RowAdam``; an exact step gives
            every row its gradient).
    """

    num_layers: int = 2

    def check(self) -> None:
        super().check()
        require(self.num_layers >= 0, f"num_layers must be >= 0, got {self.num_layers}")
        require(
            self.optimizer == "adam"
            or self.num_layers == 0
            or (self.optimizer == "sparse_adam" and self.propagation == "stale"),
            f"optimizer {self.optimizer!r} is for MF (num_layers 0), or 'sparse_adam' with propagation 'stale': exact "
            f"propagation touches every row, got num_layers {self.num_layers} with propagation {self.propagation!r}",
        )


class LightGCN(MF):
    """LightGCN: ``E^(k+1) = Â E^(k)``, ``E = mean_{k=0..K} E^(k)``, ``r̂_ui = e_u · e_i``.

    Â = D^-1/2 A D^-1/2 of the train positives (no self-loops), built by its own node.
    Loss: full-batch BCE over all pairs + ``weight_decay`` · Σ ||E^(0)||² (the study's
    setting). Defaults: d = 200, K = 2, lr = 0.04, embeddings N(0, 0.01²).
    """

    name = "lightgcn"
    Config = LightGCNConfig

    def num_layers(self) -> int:
        return self.config.num_layers
