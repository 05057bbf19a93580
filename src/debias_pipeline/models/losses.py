"""Losses over all (user, item) pairs and over sampled triples, written so that they
can be checked by hand."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
import torch.nn.functional as F

# Elements per chunk of the fused dual BCE. On the CPU a chunk's dozen temporaries
# (1 MB each) stay in the cache while each op is still large enough to be split across
# threads; on CUDA, large chunks keep the kernel launches few.
_CPU_CHUNK = 1 << 18
_CUDA_CHUNK = 1 << 22
# softplus(x) = x to within float64 rounding beyond 40 (log1p(e^-40) = 4e-18); the
# default threshold of 20 would be off by 2e-9 there.
_SOFTPLUS_THRESHOLD = 40.0


def bce_all_pairs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of σ(logits) against ``targets`` over all pairs.

    Args:
        logits: (n_users, n_items) scores r̂.
        targets: (n_users, n_items) Y in {0, 1}.
    """
    return F.binary_cross_entropy_with_logits(logits, targets)


def _softplus(x: torch.Tensor) -> torch.Tensor:
    return F.softplus(x, threshold=_SOFTPLUS_THRESHOLD)


def _dual_bce_terms(
    preference: torch.Tensor, exposure: torch.Tensor, targets: torch.Tensor, grad_scale: float | None
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Summed loss of one chunk and, unless ``grad_scale`` is None, ``grad_scale`` times
    its derivatives with respect to r̂ and ô (same shape as the chunk).

    With p = σ(r̂), q = σ(ô) and z = softplus(ô) − r̂:
    - a click costs ``-log(pq) = softplus(-r̂) + softplus(-ô)``, derivatives −σ(−r̂), −σ(−ô);
    - a non-click costs ``-log(1 − pq) = softplus(r̂) − softplus(−z)``, because
      ``1 − pq = σ(−r̂) / σ(z)``; derivatives ``p·q·σ(z)`` and ``q·σ(−z)``.
    Every term is a softplus or a sigmoid: no cancellation of probabilities near 1,
    finite for any logits.
    """
    r, o, y = preference, exposure, targets
    softplus_r = _softplus(r)
    softplus_o = _softplus(o)
    z = softplus_o - r
    minus_z = -z
    click = (softplus_r + softplus_o).sub_(r).sub_(o)
    no_click = softplus_r.sub_(_softplus(minus_z))
    loss = torch.lerp(no_click, click, y).sum()
    if grad_scale is None:
        return loss, None, None
    sigmoid_o = torch.sigmoid(o)
    grad_r = torch.sigmoid(r).mul_(sigmoid_o).mul_(torch.sigmoid(z))
    grad_r = torch.lerp(grad_r, torch.sigmoid(-r).neg_(), y).mul_(grad_scale)
    grad_o = sigmoid_o.mul_(torch.sigmoid(minus_z))
    grad_o = torch.lerp(grad_o, torch.sigmoid(-o).neg_(), y).mul_(grad_scale)
    return loss, grad_r, grad_o


class _DualBCE(torch.autograd.Function):
    """Mean dual BCE with its analytic gradient, computed chunk by chunk.

    Besides its inputs and the two gradient tables it returns, nothing of size
    n_users x n_items is ever held: σ(r̂), σ(ô), ξ̂ and the per-pair losses exist only
    one chunk at a time. The gradients are computed in the forward pass (one pass over
    the logits) and scaled in place by the incoming gradient, so the graph supports a
    single backward pass.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx, preference: torch.Tensor, exposure: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        n_pairs = preference.numel()
        flat_r, flat_o = preference.reshape(-1), exposure.reshape(-1)
        flat_y = targets.reshape(-1).to(preference.dtype)
        want_r, want_o = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_scale = 1.0 / max(n_pairs, 1) if (want_r or want_o) else None
        grad_r = torch.empty_like(flat_r) if grad_scale is not None else None
        grad_o = torch.empty_like(flat_o) if grad_scale is not None else None
        chunk = _CUDA_CHUNK if preference.is_cuda else _CPU_CHUNK
        n_chunks = max(1, -(-n_pairs // chunk))
        sums = torch.empty(n_chunks, dtype=preference.dtype, device=preference.device)
        for index in range(n_chunks):
            part = slice(index * chunk, (index + 1) * chunk)
            sums[index], part_r, part_o = _dual_bce_terms(flat_r[part], flat_o[part], flat_y[part], grad_scale)
            if grad_scale is not None:
                grad_r[part] = part_r
                grad_o[part] = part_o
        ctx.gradients = None
        if grad_scale is not None:
            ctx.gradients = (
                grad_r.view(preference.shape) if want_r else None,
                grad_o.view(exposure.shape) if want_o else None,
            )
        return sums.sum() / n_pairs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        if ctx.gradients is None:
            raise RuntimeError("dual_bce_all_pairs supports one backward pass per forward pass")
        grad_r, grad_o = ctx.gradients
        ctx.gradients = None
        return (
            None if grad_r is None else grad_r.mul_(grad_output),
            None if grad_o is None else grad_o.mul_(grad_output),
            None,
        )


def dual_bce_all_pairs(preference: torch.Tensor, exposure: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean BCE of ξ̂ = σ(r̂)·σ(ô) against the clicks Y over all pairs.

    ``-log ξ̂ = softplus(-r̂) + softplus(-ô)`` and, since ``1 - σ(r̂)σ(ô) = σ(-r̂)/σ(z)``
    with ``z = softplus(ô) - r̂``, ``-log(1 - ξ̂) = softplus(r̂) - softplus(-z)``: exact in
    log space, no clamp, finite gradients even for confident wrong clicks. Computed in
    chunks with an analytic backward pass, so that neither ξ̂ nor any other
    (n_users, n_items) intermediate is materialized (see ``_DualBCE``). ``targets``
    receive no gradient.

    Args:
        preference: (n_users, n_items) preference logits r̂.
        exposure: (n_users, n_items) exposure logits ô.
        targets: (n_users, n_items) Y in {0, 1} (soft targets in [0, 1] give the same
            linear mix of the two terms).
    """
    if not preference.shape == exposure.shape == targets.shape:
        raise ValueError(
            f"preference, exposure and targets must have one shape, got "
            f"{tuple(preference.shape)}, {tuple(exposure.shape)} and {tuple(targets.shape)}"
        )
    return _DualBCE.apply(preference, exposure, targets)


def bpr_loss(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """Mean BPR loss ``-log σ(r̂_ui - r̂_uj)`` over sampled triples (Rendle et al., UAI 2009).

    Args:
        positive: (batch,) scores r̂_ui of the observed items.
        negative: (batch,) scores r̂_uj of the sampled negatives.
    """
    return F.softplus(negative - positive).mean()


def enhanced_bpr_loss(
    positive: torch.Tensor, negative: torch.Tensor, margin: float, temperature: float, alpha: float
) -> torch.Tensor:
    """The enhanced loss of SOURCES.md §A on sampled triples:
    ``α · mean softplus(r̂_uj − r̂_ui + m) + (1 − α) · mean softplus((r̂_uj − r̂_ui) / τ)``.

    The first term is BPR with a margin m (m = 0: BPR); the second the "contrastive"
    term ``−log softmax([r̂_ui/τ, r̂_uj/τ])[0]`` of the source, which with its one
    negative is BPR at temperature τ. ``margin = 0, alpha = 1`` is ``bpr_loss``.
    Non-negative, like BPR.
    """
    difference = negative - positive
    loss = alpha * F.softplus(difference + margin).mean()
    if alpha != 1:
        loss = loss + (1 - alpha) * F.softplus(difference / temperature).mean()
    return loss


def sampled_bce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of σ(logits) against ``labels`` over a batch of
    examples, each a train positive (label 1) or a sampled non-positive (label 0): NCF's
    loss (He et al., WWW 2017). Non-negative.

    Args:
        logits: (batch,) scores f(u, i).
        labels: (batch,) 1 or 0.
    """
    return F.binary_cross_entropy_with_logits(logits, labels)


Likelihood = Literal["multinomial", "logistic", "gaussian"]


def autoencoder_nll(logits: torch.Tensor, clicks: torch.Tensor, likelihood: Likelihood) -> torch.Tensor:
    """Mean over users of the negative log-likelihood of their click vectors under the
    decoder's output (Liang et al., WWW 2018, §2.2):

    - ``multinomial``: ``−Σ_i x_ui log softmax(f_u)_i``;
    - ``logistic``: ``−Σ_i [x_ui log σ(f_ui) + (1 − x_ui) log(1 − σ(f_ui))]``;
    - ``gaussian``: ``Σ_i (x_ui − f_ui)² / 2`` (unit precision, the constant dropped).

    Non-negative for clicks in {0, 1}.

    Args:
        logits: (batch, n_items) decoder output f_u.
        clicks: (batch, n_items) x_u in {0, 1}.
    """
    if likelihood == "multinomial":
        per_user = -(F.log_softmax(logits, dim=1) * clicks).sum(dim=1)
    elif likelihood == "logistic":
        per_user = F.binary_cross_entropy_with_logits(logits, clicks, reduction="none").sum(dim=1)
    elif likelihood == "gaussian":
        per_user = 0.5 * (clicks - logits).pow(2).sum(dim=1)
    else:
        raise ValueError(f"likelihood must be 'multinomial', 'logistic' or 'gaussian', got {likelihood!r}")
    return per_user.mean()


def gaussian_kl(mean: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """Mean over users of KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_k (σ_k² + μ_k² − 1 − log σ_k²).
    Non-negative.

    Args:
        mean: (batch, latent) μ.
        log_variance: (batch, latent) log σ².
    """
    return 0.5 * (log_variance.exp() + mean.pow(2) - 1.0 - log_variance).sum(dim=1).mean()


def negative_elbo(
    logits: torch.Tensor,
    clicks: torch.Tensor,
    beta: float,
    likelihood: Likelihood = "multinomial",
    mean: torch.Tensor | None = None,
    log_variance: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mult-VAE's loss, −ELBO_β = NLL + β · KL (``autoencoder_nll``, ``gaussian_kl``),
    mean over the batch's users; without the code's ``mean`` and ``log_variance``
    (Mult-DAE), the NLL alone."""
    loss = autoencoder_nll(logits, clicks, likelihood)
    if mean is not None and log_variance is not None:
        loss = loss + beta * gaussian_kl(mean, log_variance)
    return loss


def dual_triple_loss(
    preference_positive: torch.Tensor,
    preference_negative: torch.Tensor,
    exposure_positive: torch.Tensor,
    exposure_negative: torch.Tensor,
) -> torch.Tensor:
    """The dual model's likelihood on sampled triples (u, i, j): mean over the triples
    of ``-log ξ̂_ui - log(1 - ξ̂_uj)``, ξ̂ = σ(r̂)·σ(ô).

    It is the full-batch dual BCE with the non-clicks replaced by one sampled negative
    per click, so σ(r̂)·σ(ô) keeps its meaning of a click probability; a ranking loss on
    log ξ̂ would not. Computed in log space like ``dual_bce_all_pairs``.

    Args:
        preference_positive: (batch,) r̂_ui.
        preference_negative: (batch,) r̂_uj.
        exposure_positive: (batch,) ô_ui.
        exposure_negative: (batch,) ô_uj.
    """
    preference = torch.cat([preference_positive, preference_negative])
    exposure = torch.cat([exposure_positive, exposure_negative])
    targets = torch.cat([torch.ones_like(preference_positive), torch.zeros_like(preference_negative)])
    # dual_bce_all_pairs averages over 2·batch pairs; the loss is per triple.
    return 2.0 * dual_bce_all_pairs(preference, exposure, targets)


def elu_plus_one(x: torch.Tensor) -> torch.Tensor:
    """ELU'(x) = ELU(x) + 1: e^x for x <= 0, x + 1 for x > 0. Positive and increasing,
    so PDA can multiply it by a popularity factor (Zhang et al., SIGIR 2021)."""
    return F.elu(x) + 1.0


def pda_bpr_loss(
    positive: torch.Tensor,
    negative: torch.Tensor,
    positive_popularity: torch.Tensor,
    negative_popularity: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """PDA's training loss (Zhang et al., SIGIR 2021): BPR on the click scores
    ``ELU'(f_ui) · m_i^γ``, mean over the triples of
    ``−log σ(ELU'(f_ui) m_i^γ − ELU'(f_uj) m_j^γ)``. Non-negative.

    Args:
        positive: (batch,) matching scores f_ui of the observed items.
        negative: (batch,) f_uj of the sampled negatives.
        positive_popularity: (batch,) m_i, the items' popularity (>= 0).
        negative_popularity: (batch,) m_j.
        gamma: γ >= 0 (γ = 0: BPR on ELU'(f)); an item of popularity 0 scores 0.
    """
    positive_score = elu_plus_one(positive) * positive_popularity.pow(gamma)
    negative_score = elu_plus_one(negative) * negative_popularity.pow(gamma)
    return bpr_loss(positive_score, negative_score)


def macr_loss(
    matching: torch.Tensor,
    item_logits: torch.Tensor,
    user_logits: torch.Tensor,
    clicks: torch.Tensor,
    item_weight: float,
    user_weight: float,
) -> torch.Tensor:
    """MACR's multi-task loss (Wei et al., KDD 2021): ``L_O + α L_I + β L_U``.

    ``L_O`` is the mean BCE of σ(ŷ_ui) against the clicks with the fused score
    ``ŷ_ui = ŷ_k · σ(ŷ_i) · σ(ŷ_u)``; ``L_I`` that of the item module σ(ŷ_i) and ``L_U``
    that of the user module σ(ŷ_u), each against the same clicks. Non-negative.

    Args:
        matching: ŷ_k of the pairs, the shape of ``clicks``: (n_users, n_items) for all
            pairs, (n_pairs,) for sampled ones.
        item_logits: ŷ_i, broadcastable to it ((1, n_items) or (n_pairs,)).
        user_logits: ŷ_u, broadcastable to it ((n_users, 1) or (n_pairs,)).
        clicks: y in {0, 1}.
        item_weight: α.
        user_weight: β.
    """
    fused = matching * torch.sigmoid(item_logits) * torch.sigmoid(user_logits)
    loss = F.binary_cross_entropy_with_logits(fused, clicks)
    loss = loss + item_weight * F.binary_cross_entropy_with_logits(item_logits.expand_as(clicks), clicks)
    return loss + user_weight * F.binary_cross_entropy_with_logits(user_logits.expand_as(clicks), clicks)


def dice_loss(
    interest_positive: torch.Tensor,
    interest_negative: torch.Tensor,
    conformity_positive: torch.Tensor,
    conformity_negative: torch.Tensor,
    kinds: torch.Tensor,
    alpha: float,
) -> torch.Tensor:
    """DICE's ranking losses on sampled triples (Zheng et al., WWW 2021):
    ``L_click + α (L_int + L_con)``, each a BPR term summed over its triples and divided
    by the batch size.

    - ``L_click``: every triple, on the click score ``s^int + s^con`` (i over j);
    - O1, j more popular than i (``kinds`` +1): i was clicked despite j's popularity,
      so interest ranks i over j (``L_int``) and conformity j over i (``L_con``);
    - O2, j less popular (``kinds`` −1): conformity ranks i over j (``L_con``); the
      interest order is unknown;
    - ``kinds`` 0 (within the margin): ``L_click`` only.

    Non-negative.

    Args:
        interest_positive, interest_negative: (batch,) s^int_ui, s^int_uj.
        conformity_positive, conformity_negative: (batch,) s^con_ui, s^con_uj.
        kinds: (batch,) +1 (O1), −1 (O2) or 0.
        alpha: α.
    """
    click = bpr_loss(interest_positive + conformity_positive, interest_negative + conformity_negative)
    o1 = (kinds > 0).to(interest_positive.dtype)
    o2 = (kinds < 0).to(interest_positive.dtype)
    interest = (o1 * F.softplus(interest_negative - interest_positive)).mean()
    conformity = (o1 * F.softplus(conformity_positive - conformity_negative)).mean()
    conformity = conformity + (o2 * F.softplus(conformity_negative - conformity_positive)).mean()
    return click + alpha * (interest + conformity)


def _safe_sqrt(x: torch.Tensor, floor: float = 1e-12) -> torch.Tensor:
    """√x for x >= 0 with a finite gradient: 0 (and no gradient) where x <= ``floor``."""
    positive = x > floor
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _centered_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrix of the rows of x: (n, n).

    a_jk = ||x_j − x_k|| from the Gram matrix (no (n, n, d) difference tensor);
    A_jk = a_jk − mean_j a − mean_k a + mean a.
    """
    squared = x.pow(2).sum(dim=1)  # (n,)
    gram = x @ x.T  # (n, n)
    distance_sq = (squared[:, None] + squared[None, :] - 2.0 * gram).clamp(min=0.0)
    off_diagonal = ~torch.eye(x.shape[0], dtype=torch.bool, device=x.device)
    distance = _safe_sqrt(distance_sq * off_diagonal)  # the diagonal exactly 0, whatever the rounding
    return distance - distance.mean(dim=0, keepdim=True) - distance.mean(dim=1, keepdim=True) + distance.mean()


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The sample distance correlation dCor(X, Y) of paired rows (Székely, Rizzo &
    Bakirov, Ann. Statist. 2007), in [0, 1], 0 when the sample shows no dependence.

    With A and B the double-centred distance matrices of the n rows of x and y,
    ``dCov²(X, Y) = mean(A ∘ B)`` and
    ``dCor = √(dCov²(X, Y) / √(dCov²(X, X) · dCov²(Y, Y)))``; 0 when either has no
    spread. DICE's discrepancy term (Zheng et al., WWW 2021).

    Args:
        x: (n, d_x) rows.
        y: (n, d_y) the paired rows.
    """
    a, b = _centered_distances(x), _centered_distances(y)
    covariance = (a * b).mean().clamp(min=0.0)
    spread = (a * a).mean() * (b * b).mean()
    return _safe_sqrt(covariance / torch.where(spread > 0, spread, 1.0).sqrt() * (spread > 0))


def centered_tie_penalty(values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared gap between two vectors once each is centred on its own mean:
    ``(1/n) Σ_i ((x_i − x̄) − (t_i − t̄))²``.

    The dual model's popularity tie (``ExposureConfig.popularity_tie_weight``): x_i the
    mean exposure logit of item i over users, t_i = s · log p_i its popularity
    propensity's logit. Centring leaves the overall level of exposure free (popularity
    says which items are shown more, not how often anything is shown) and ties only
    the items' relative exposure. 0 when x − t is constant; non-negative.

    Args:
        values: (n,) x.
        targets: (n,) t.
    """
    gap = (values - values.mean()) - (targets - targets.mean())  # (n,)
    return gap.pow(2).mean()


def l2_penalty(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    """Σ ||E||² over the given embedding tables."""
    return torch.stack([t.pow(2).sum() for t in tensors]).sum()


def exposure_weights(clicks: torch.Tensor, imputed: torch.Tensor, propensity: torch.Tensor) -> torch.Tensor:
    """ô/θ of DR-JL on implicit feedback, (n_users, n_items): 1/θ for a click (exposed for
    sure) and, for a non-click, E[o | y = 0]/θ = (1 − r̃)/(1 − θ r̃), the posterior
    exposure under y = o · r with P(o = 1) = θ and P(r = 1) = r̃, over θ (1 where θ = 1).
    In [0, 1] for a non-click.

    Args:
        clicks: (n_users, n_items) Y in {0, 1}.
        imputed: (n_users, n_items) imputed relevance r̃ in [0, 1].
        propensity: θ in (0, 1], broadcastable to the clicks ((n_items,) or (n_users, n_items)).
    """
    hidden = (1.0 - imputed) / (1.0 - propensity * imputed)
    # θ = 1: certain exposure, weight 1 (also where r̃ rounds to 1, which would make it 0/0).
    hidden = torch.where(propensity >= 1.0, 1.0, hidden)
    return torch.where(clicks > 0, 1.0 / propensity, hidden)


def _errors(logits: torch.Tensor, clicks: torch.Tensor, imputed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The error e = y δ1 + (1 − y) δ0 of r̂ against the click and the imputed error
    ê = r̃ δ1 + (1 − r̃) δ0 against the imputed relevance (δ1 = softplus(−r̂), δ0 = softplus(r̂))."""
    delta1, delta0 = F.softplus(-logits), F.softplus(logits)
    return torch.lerp(delta0, delta1, clicks), torch.lerp(delta0, delta1, imputed)


def doubly_robust_bce(
    logits: torch.Tensor, clicks: torch.Tensor, imputed: torch.Tensor, propensity: torch.Tensor
) -> torch.Tensor:
    """DR-JL's doubly robust loss (Wang, Zhang, Sun & Qi, ICML 2019, eq. 6) over all
    pairs: ``(1/N) Σ [ê + (ô/θ)(e − ê)]``.

    e and ê are ``_errors``' (the BCE of r̂ against the click and against the imputed
    relevance r̃) and ô/θ is ``exposure_weights``'. Since ``e − ê = (r̃ − y) r̂``, the term
    of a pair is the BCE of r̂ against the DR label ``r̃ + (ô/θ)(y − r̃)``: r̃ + (1 − r̃)/θ
    for a click (above 1 when θ < 1, so the loss is unbounded below, as IPS's), and
    r̃ (1 − (1 − r̃)/(1 − θ r̃)) in [0, r̃] for a non-click, whose term is a convex mix of
    ê and δ0 and never negative. r̃ = 0 gives Saito et al.'s IPS loss (``relmf.ipw_bce``),
    r̃ = r the BCE against relevance, θ = 1 the plain BCE against the clicks.

    Args:
        logits: (n_users, n_items) predictions r̂.
        clicks: (n_users, n_items) Y in {0, 1}.
        imputed: (n_users, n_items) r̃ in [0, 1], held fixed by the caller.
        propensity: θ, broadcastable to the clicks.
    """
    error, imputed_error = _errors(logits, clicks, imputed)
    weights = exposure_weights(clicks, imputed, propensity)
    return (imputed_error + weights * (error - imputed_error)).mean()


def imputation_loss(
    logits: torch.Tensor, clicks: torch.Tensor, imputed: torch.Tensor, propensity: torch.Tensor
) -> torch.Tensor:
    """DR-JL's loss of the imputation model: ``(1/N) Σ (ô/θ)(e − ê)²`` over all pairs,
    i.e. ``(1/N) Σ (ô/θ) (y − r̃)² r̂²``; the weights ô/θ (``exposure_weights``) are held
    fixed. Never negative.

    Args:
        logits: (n_users, n_items) predictions r̂, held fixed by the caller.
        clicks: (n_users, n_items) Y in {0, 1}.
        imputed: (n_users, n_items) r̃ in [0, 1], the imputation model's output.
        propensity: θ, broadcastable to the clicks.
    """
    error, imputed_error = _errors(logits, clicks, imputed)
    weights = exposure_weights(clicks, imputed.detach(), propensity)
    return (weights * (error - imputed_error).pow(2)).mean()
