"""The seed's cifar10_fl.py, on sklearn's 8x8 digits: only the import line is shoal's."""

import argparse

import numpy as np
import torch
from net import Net
from sklearn.datasets import load_digits
from torch import nn

import shoal.job.client as flare  # was: import nvflare.client as flare


def load(site: int, n_sites: int):
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    test, train = order[:360], order[360:]
    mine = train[site - 1 :: n_sites]  # site i's shard of the training rows
    t = lambda idx: (  # noqa: E731
        torch.tensor(X[idx] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8),
        torch.tensor(y[idx]),
    )
    return t(mine), t(test)


def evaluate(net: Net, data) -> float:
    with torch.no_grad():
        return float((net(data[0]).argmax(1) == data[1]).float().mean())


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--site", type=int, required=True)
    p.add_argument("--n_sites", type=int, required=True)
    p.add_argument("--epochs", type=int, default=2)
    args = p.parse_args()
    (Xtr, ytr), test = load(args.site, args.n_sites)
    net = Net()
    flare.init()
    while flare.is_running():
        model = flare.receive()
        torch.manual_seed(1000 * model.current_round + args.site)  # same seed, same run
        net.load_state_dict(model.params)
        accuracy = evaluate(net, test)  # the global model, as the seed's script does
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        steps = 0
        for _ in range(args.epochs):
            order = torch.randperm(len(ytr))
            for s in range(0, len(ytr), args.batch_size):
                i = order[s : s + args.batch_size]
                opt.zero_grad()
                nn.functional.cross_entropy(net(Xtr[i]), ytr[i]).backward()
                opt.step()
                steps += 1
        flare.log("accuracy", accuracy, global_step=model.current_round)
        flare.send(
            flare.FLModel(
                params=net.cpu().state_dict(),
                metrics={"accuracy": accuracy},
                meta={"NUM_STEPS_CURRENT_ROUND": steps},
            )
        )


if __name__ == "__main__":
    main()
