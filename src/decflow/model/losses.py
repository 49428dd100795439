"""The DEC objective as pure functions (Xie et al., 2016).

Shapes: ``n`` rows, ``k`` clusters, ``d`` embedding dimensions.
"""

import torch


def soft_assignment(z: torch.Tensor, centers: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Student-t similarity between embedded points and centroids.

    q_ij = (1 + ||z_i - mu_j||^2 / alpha)^(-(alpha + 1) / 2), normalised over j.

    Args:
        z: (n, d) embedded points.
        centers: (k, d) centroids.
        alpha: degrees of freedom of the Student-t kernel.

    Returns:
        (n, k) soft assignments; each row sums to 1.
    """
    sq_dist = torch.cdist(z.float(), centers.float()).pow(2)
    # In log space: the kernel underflows for far-away points with small alpha.
    log_kernel = -(alpha + 1.0) / 2.0 * torch.log1p(sq_dist / alpha)
    return torch.softmax(log_kernel, dim=1)


def target_distribution(q: torch.Tensor) -> torch.Tensor:
    """Auxiliary target that sharpens q and normalises by cluster frequency.

    p_ij = (q_ij^2 / f_j) / sum_j' (q_ij'^2 / f_j'), with f_j = sum_i q_ij.
    Compute it over the whole training set, not one batch.

    Args:
        q: (n, k) soft assignments.

    Returns:
        (n, k) target distribution; each row sums to 1.
    """
    weight = q.pow(2) / q.sum(dim=0).clamp_min(1e-12)
    return weight / weight.sum(dim=1, keepdim=True)


def kl_divergence(p: torch.Tensor, q: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """KL(P || Q), summed over clusters and averaged over rows.

    Args:
        p: (n, k) target distribution (treated as constant).
        q: (n, k) soft assignments.

    Returns:
        Scalar loss.
    """
    p = p.detach()
    return (p * (torch.log(p + eps) - torch.log(q + eps))).sum(dim=1).mean()
