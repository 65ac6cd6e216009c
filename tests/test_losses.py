"""The training losses: the squared losses summed and averaged over classes, per run and per
packed member."""

import torch

from spherelab.train.losses import batch_loss, member_losses


def test_the_papers_squared_loss_is_the_squared_error_averaged_over_classes():
    torch.manual_seed(0)
    logits, y = torch.randn(7, 5, dtype=torch.float64), torch.randint(0, 5, (7,))
    onehot = torch.nn.functional.one_hot(y, 5).double()
    # the paper's form: (||o||^2 - 2 o_y + 1) / classes, averaged over samples
    paper = ((logits.square().sum(1) - 2 * logits.gather(1, y[:, None])[:, 0] + 1) / 5).mean()
    torch.testing.assert_close(batch_loss(logits, y, "mse_class_mean"), paper, rtol=1e-14, atol=0)
    torch.testing.assert_close(
        batch_loss(logits, y, "mse_class_mean"), torch.nn.functional.mse_loss(logits, onehot)
    )
    torch.testing.assert_close(batch_loss(logits, y, "mse"), 5 * paper, rtol=1e-14, atol=0)


def test_member_losses_are_each_members_batch_loss():
    torch.manual_seed(1)
    logits, y = torch.randn(3, 6, 4, dtype=torch.float64), torch.randint(0, 4, (3, 6))
    for name in ("cross_entropy", "mse", "mse_class_mean"):
        want = torch.stack([batch_loss(logits[k], y[k], name) for k in range(3)])
        torch.testing.assert_close(member_losses(logits, y, name), want, rtol=1e-14, atol=0)
