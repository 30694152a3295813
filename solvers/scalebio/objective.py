"""The penalty objective of ScaleBiO and its pieces (ALGORITHMS.md §1.3-§1.7, §2.1). Pure tensor functions.
 F(λ, w, u) = L1(w) + α·[L2(λ, w) − L2(λ, u)] with L2(λ, x) = Σ_s p_s ℓ̄_s(x): the per-source mean losses ℓ̄
are mixed by p = softmax(λ). :func:`surrogate` is the single scalar whose gradient gives u, w and λ exactly
their own update directions at the same point; the step backpropagates its terms one model at a time (same
gradients, less memory).
"""

from __future__ import annotations

import torch


def source_means(per_example: torch.Tensor, source_ids: torch.Tensor, n_sources: int,
                 has_labels: torch.Tensor | None = None) -> torch.Tensor:
    """ℓ̄_s: mean loss of the batch's examples of each source, shape ``[K]``, fp32 (or fp64 for fp64 losses).

    Counts are taken over the whole batch handed in (the global batch, ALGORITHMS.md §2.1); a source with no
    example in the batch gets 0, so it contributes nothing to any weighted sum that step. ``has_labels``
    (``[B]`` bool, see :func:`solvers.lm.label_rows`) leaves rows without a label token out of both the sum and
    the count: such a row's loss is a 0 that carries no signal, and counting it would make a source whose
    responses are truncated away look better the more of them are lost.
    """
    return (source_sums(per_example, source_ids, n_sources, has_labels)
            / source_counts(source_ids, n_sources, has_labels).clamp_min(1))


def source_sums(per_example: torch.Tensor, source_ids: torch.Tensor, n_sources: int,
                has_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Σ of each source's losses in the batch, ``[K]`` (fp32, or fp64 for fp64 losses); rows without a label
    token count 0. Divided by the counts of the *global* batch (:func:`source_counts`, summed over ranks), a
    rank's sums are its share of the global :func:`source_means`."""
    dtype = torch.float64 if per_example.dtype == torch.float64 else torch.float32
    losses = per_example.to(dtype)
    keep = torch.ones_like(losses) if has_labels is None else has_labels.to(dtype)
    return torch.zeros(n_sources, dtype=dtype, device=losses.device).index_add(0, source_ids, losses * keep)


def source_counts(source_ids: torch.Tensor, n_sources: int, has_labels: torch.Tensor | None = None) -> torch.Tensor:
    """c_s: the batch's rows of each source that have a label token, ``[K]`` fp32 (exact for any batch size
    below 2^24)."""
    keep = (torch.ones(source_ids.shape, device=source_ids.device) if has_labels is None
            else has_labels.to(torch.float32))
    return torch.zeros(n_sources, dtype=torch.float32, device=source_ids.device).index_add(0, source_ids, keep)


def weighted_source_loss(per_example: torch.Tensor, source_ids: torch.Tensor, p: torch.Tensor,
                         n_sources: int, has_labels: torch.Tensor | None = None) -> torch.Tensor:
    """L̂2 = Σ_s p_s · (mean loss of the batch's source-s examples); absent sources contribute 0 (no
    renormalisation).

    Args:
        per_example: per-example losses ``[B]`` (e.g. :func:`solvers.lm.per_example_loss`).
        source_ids: source index of each example, ``[B]`` int64 in ``[0, n_sources)``.
        p: source weights ``[K]`` on the simplex.
        n_sources: K.
        has_labels: optional ``[B]`` mask of rows with at least one label token (see :func:`source_means`).

    Returns:
        Scalar in p's dtype, differentiable in both ``per_example`` and ``p``.
    """
    return p @ source_means(per_example, source_ids, n_sources, has_labels).to(p.dtype)


def lambda_grad(p: torch.Tensor, lbar_w: torch.Tensor, lbar_u: torch.Tensor, alpha: float) -> torch.Tensor:
    """Closed form ∂F/∂λ = α·(diag(p) − ppᵀ)(ℓ̄(w) − ℓ̄(u)) (ALGORITHMS.md §1.7); its components sum to 0."""
    gap = (lbar_w - lbar_u).to(p.dtype)
    return alpha * p * (gap - p @ gap)


def surrogate(p: torch.Tensor, lbar_u: torch.Tensor, lbar_w: torch.Tensor, target_loss: torch.Tensor,
              alpha: float) -> torch.Tensor:
    """p̄·ℓ̄(u) + L1(w) + α·p̄·ℓ̄(w) + α·p·(ℓ̄(w)‾ − ℓ̄(u)‾), where a bar means detached.

    Its gradient is ∇_u L2(λ, u) for u (descent on the training loss, which is ascent on F up to the factor α
    that Adam ignores), ∇_w [L1 + α L2(λ, w)] for w, and α·J(p)(ℓ̄(w) − ℓ̄(u)) for λ, all at the current
    point.
    """
    pd = p.detach()
    return (pd @ lbar_u + target_loss + alpha * (pd @ lbar_w)
            + alpha * (p @ (lbar_w.detach() - lbar_u.detach())))
