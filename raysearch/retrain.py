"""Training one fixed (genotype, hyper-parameters) configuration from scratch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from raysearch.data import BatchStream
from raysearch.training import TrainingConfig, accuracy, check_finite, replay, scheduled_lr, set_lr


class TrainLoop:
    """SGD over a fixed network, epoch by epoch, with a resumable state.

    `lr` is a float (scheduled by `training.lr_schedule`) or a per-step list
    recorded by a search, replayed at the same fraction of progress.
    `eval_splits` maps a name (e.g. "val", "test") to (x, y) evaluated after every epoch.
    `optimizer` "adam" is AdamW (decoupled weight decay), as AutoHAS searches it.
    """

    def __init__(self, network, train_split, eval_splits: dict, training: TrainingConfig, lr, weight_decay: float,
                 epochs: int, batch_size: int, seed: int, device=torch.device("cpu"), optimizer: str = "sgd"):
        self.net, self.device = network.to(device), device
        self.training, self.lr, self.epochs = training, lr, epochs
        self.stream = BatchStream(*train_split, batch_size, seed)
        self.eval_splits = eval_splits
        self.total_steps = epochs * self.stream.batches_per_pass
        if optimizer == "adam":
            self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=self._lr(0), weight_decay=weight_decay)
        else:
            self.optimizer = torch.optim.SGD(self.net.parameters(), lr=self._lr(0), momentum=training.momentum,
                                             nesterov=training.nesterov and training.momentum > 0,
                                             weight_decay=weight_decay)
        self.steps, self.epoch = 0, 0

    def _lr(self, step: int) -> float:
        if isinstance(self.lr, (list, tuple)):
            return replay(self.lr, step, self.total_steps)
        warmup = self.training.warmup_epochs * self.stream.batches_per_pass
        return scheduled_lr(self.lr, step, self.total_steps, self.training.lr_schedule, warmup)

    def run_epoch(self) -> dict[str, float]:
        self.net.train()
        loss_sum = correct = seen = 0
        for _ in range(self.stream.batches_per_pass):
            x, y = (t.to(self.device) for t in next(self.stream))
            set_lr(self.optimizer, self._lr(self.steps))
            logits = self.net(x)
            loss = F.cross_entropy(logits, y)
            check_finite(loss, "training loss", self.steps)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.training.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.training.grad_clip)
            self.optimizer.step()
            self.steps += 1
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        self.epoch += 1
        metrics = {"train_loss": loss_sum / seen, "train_acc": correct / seen, "lr": self._lr(self.steps - 1)}
        self.net.eval()
        for name, (x, y) in self.eval_splits.items():
            metrics[f"{name}_loss"], metrics[f"{name}_acc"] = accuracy(self.net, x, y, self.device)
        return metrics

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                "stream": self.stream.state_dict(), "steps": self.steps, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.stream.load_state_dict(state["stream"])
        self.steps, self.epoch = int(state["steps"]), int(state["epoch"])
