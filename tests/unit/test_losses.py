import torch

from decflow.model.losses import kl_divergence, soft_assignment, target_distribution


def test_soft_assignment_hand_worked_two_centroids():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    mu = torch.tensor([[0.0, 0.0], [2.0, 0.0]])
    q = soft_assignment(z, mu, alpha=1.0)
    # row 0: kernels 1/(1+0)=1 and 1/(1+4)=0.2 -> q = (1/1.2, 0.2/1.2)
    # row 1: both at distance 1 -> (0.5, 0.5)
    expected = torch.tensor([[1 / 1.2, 0.2 / 1.2], [0.5, 0.5]])
    torch.testing.assert_close(q, expected)


def test_target_distribution_hand_worked():
    q = torch.tensor([[1 / 1.2, 0.2 / 1.2], [0.5, 0.5]])
    f = q.sum(0)  # cluster frequencies
    w = q**2 / f
    expected = w / w.sum(1, keepdim=True)
    p = target_distribution(q)
    torch.testing.assert_close(p, expected)
    # hand value of p[0, 0]: w00 = (1/1.44)/(4/3) = 0.5208, w01 = (0.04/1.44)/(2/3) = 0.04167
    assert abs(float(p[0, 0]) - 0.5208333 / (0.5208333 + 0.0416667)) < 1e-5


def test_rows_sum_to_one():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(50, 5, generator=g)
    mu = torch.randn(7, 5, generator=g)
    q = soft_assignment(z, mu, alpha=1.0)
    p = target_distribution(q)
    torch.testing.assert_close(q.sum(1), torch.ones(50))
    torch.testing.assert_close(p.sum(1), torch.ones(50))
    assert (q > 0).all() and (p > 0).all()


def test_target_sharpens_and_kl_gradient_moves_q_towards_p():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(40, 3, generator=g, requires_grad=True)
    mu = torch.randn(3, 3, generator=g)
    q = soft_assignment(z, mu)
    p = target_distribution(q.detach())
    # p is sharper than q: larger max probability on average
    assert p.max(1).values.mean() > q.max(1).values.mean()
    loss = kl_divergence(p, q)
    loss.backward()
    with torch.no_grad():
        q2 = soft_assignment(z - 0.05 * z.grad, mu)
        assert kl_divergence(p, q2) < loss
        # one gradient step makes q itself more confident, i.e. p sharpens q
        assert q2.max(1).values.mean() > q.max(1).values.mean()


def test_kl_zero_when_equal():
    q = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    assert float(kl_divergence(q, q)) < 1e-6
