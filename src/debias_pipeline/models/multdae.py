"""Mult-DAE (Liang et al., WWW 2018): Mult-VAE's network without the KL term, a
denoising autoencoder with input dropout and the multinomial likelihood."""

from __future__ import annotations

from debias_pipeline.models.multvae import AutoencoderConfig, AutoencoderRecommender


class MultDAEConfig(AutoencoderConfig):
    """Mult-DAE hyperparameters: ``AutoencoderConfig``'s, with the paper code's
    weight_decay 0.01 on the weights."""

    weight_decay: float = 0.01


class MultDAE(AutoencoderRecommender):
    """Mult-DAE: a deterministic code ``z = g(dropout(x / ||x||))``, the loss the
    negative log-likelihood of x under the decoder (``losses.autoencoder_nll``) +
    λ Σ ||W||². Defaults: I-600-200-600-I, tanh, input dropout 0.5, batch 500, Adam
    1e-3, λ 0.01."""

    name = "multdae"
    Config = MultDAEConfig
