"""The one training loop every model uses (the inverter, DeGLI).

A model's trainer supplies two functions: ``step(gen) -> loss`` (draw a batch with the
sampling generator, return the training loss) and ``validate(net) -> dict`` (at least
``"loss"``, lower is better, measured on the net that would be exported). The loop does the
rest, the same way for every model:

- AdamW (``weight_decay=0`` is Adam), gradient norm clipped to 1, a cosine or constant
  learning rate;
- an exponential moving average of the weights (``ema > 0``) is what gets validated and
  exported: the raw weights' validation loss jumps by +-10 % between epochs at the
  inverter's learning rate (measured), so selection on them picks lucky epochs;
- a checkpoint every epoch (``out/checkpoint.pt``: net, EMA, optimiser, schedule, sampling
  RNG, history, best, settings): re-running with the same settings resumes and ends with the
  weights of an uninterrupted run; other settings (but ``epochs``) are refused. The
  checkpoint stores every setting (a default changed later cannot pass for the value the
  run had); one it lacks, an option added after it was written, is read at the default the
  model's trainer gives, so old checkpoints resume while the new option stays there;
- the best epoch's weights in ``out/best.pt``, early stopping after ``patience`` epochs
  without a better validation loss, ``history.json`` and a loss-curve PNG;
- optionally (``on_epoch``) every epoch's validated net handed to the model's trainer, e.g.
  to keep each epoch's weights for a choice by another measure than the loss.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from pipeline.errors import UsageError
from pipeline.io import weights as W
from pipeline.parallel.tasks import progress_bar


@dataclass(frozen=True)
class LoopConfig:
    epochs: int = 30
    steps_per_epoch: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    schedule: str = "constant"   # or "cosine" (over ``epochs``)
    ema: float = 0.0             # 0: validate and export the raw weights
    patience: int = 8
    seed: int = 0
    threads: int = 0             # torch threads; 0: leave torch's default (all cores)


def _with_defaults(settings: dict, defaults: dict) -> dict:
    """``settings`` (sections of name -> value) with the entries of ``defaults`` (the same
    sections) they lack."""
    return {**settings, **{sec: {**d, **settings.get(sec, {})} for sec, d in defaults.items()
                           if isinstance(d, dict) and isinstance(settings.get(sec, {}), dict)}}


@dataclass
class Fitted:
    """What :meth:`Trainer.fit` leaves: the best epoch, its validation, the history."""
    best_epoch: int
    best: dict[str, Any]
    history: list[dict] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.history[-1]["seconds"] if self.history else 0.0


class Trainer:
    def __init__(self, net: nn.Module, out: str | Path, loop: LoopConfig, settings: dict,
                 label: str = "train", gen: torch.Generator | None = None,
                 defaults: dict | None = None):
        """``settings``: everything that makes a run what it is (model and data settings);
        a resume with other settings is refused. ``defaults``: per section of ``settings``,
        the options' defaults: what a checkpoint written before an option existed is read
        as having. ``label``: the progress bar's name. ``gen``: the sampling generator, when
        the model's trainer already drew from it (default: a new one seeded with
        ``loop.seed``)."""
        self.net, self.loop, self.label = net, loop, label
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        # compared as JSON (tuples become lists on both sides)
        self.defaults = json.loads(json.dumps(defaults or {}, default=str))
        self.settings = self._normal({**settings, "loop": {**loop.__dict__, "epochs": None}})
        self.gen = gen if gen is not None else torch.Generator().manual_seed(loop.seed)
        self.ema = (torch.optim.swa_utils.AveragedModel(
            net, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(loop.ema))
            if loop.ema else None)
        self.opt = torch.optim.AdamW(net.parameters(), lr=loop.lr, weight_decay=loop.weight_decay)
        self.sched = (torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=loop.epochs)
                      if loop.schedule == "cosine" else None)
        if loop.schedule not in ("cosine", "constant"):
            raise UsageError(f"unknown learning-rate schedule {loop.schedule!r}: cosine or constant")

    @staticmethod
    def _normal(settings: dict) -> str:
        """The settings as compared and stored: JSON, keys sorted."""
        return json.dumps(json.loads(json.dumps(settings, default=str)), sort_keys=True)

    @property
    def checkpoint(self) -> Path:
        return self.out / "checkpoint.pt"

    @property
    def evaluated(self) -> nn.Module:
        """The net that is validated and exported (the weight average when there is one)."""
        return self.ema.module if self.ema is not None else self.net

    def _resume(self) -> tuple[list[dict], dict]:
        if not self.checkpoint.exists():
            return [], {"loss": float("inf"), "epoch": -1}
        ck = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        # an option the checkpoint lacks was added after it was written: at its default
        theirs = _with_defaults(json.loads(ck.get("settings", self.settings)), self.defaults)
        if theirs != json.loads(self.settings):
            raise UsageError(f"{self.checkpoint} was written by a run with other settings; "
                             "resume with the same options, or use a new --out folder")
        self.net.load_state_dict(ck["model"])
        if self.ema is not None:
            self.ema.load_state_dict(ck["ema"])
        self.opt.load_state_dict(ck["opt"])
        if self.sched is not None:
            self.sched.load_state_dict(ck["sched"])
        self.gen.set_state(ck["gen"])
        best = json.loads(ck["best"])
        if isinstance(best, list):          # checkpoints of the DeGLI trainer before this one
            best = {"loss": best[0], "epoch": best[1]}
        elif "loss" not in best:            # ... and of the inverter's
            best["loss"] = best.pop("val")
        return json.loads(ck["history"]), best

    def _save(self, history: list[dict], best: dict) -> None:
        W.save_atomic({"model": self.net.state_dict(),
                       "ema": self.ema.state_dict() if self.ema is not None else {},
                       "opt": self.opt.state_dict(),
                       "sched": self.sched.state_dict() if self.sched is not None else {},
                       "gen": self.gen.get_state(), "history": json.dumps(history),
                       "best": json.dumps(best), "settings": self.settings}, self.checkpoint)
        (self.out / "history.json").write_text(json.dumps(history, indent=1))
        plot_curve(history, self.out / "loss_curve.png")

    def fit(self, step: Callable[[torch.Generator], torch.Tensor],
            validate: Callable[[nn.Module], dict], progress: bool = True,
            on_epoch: Callable[[int, nn.Module, dict], None] | None = None) -> Fitted:
        """``on_epoch(epoch, net, validation)``: called with each epoch's validated net
        before the epoch's checkpoint (a run killed in between redoes the epoch and calls it
        again)."""
        if self.loop.threads:
            torch.set_num_threads(self.loop.threads)
        history, best = self._resume()
        done_s = history[-1]["seconds"] if history else 0.0
        t0 = time.perf_counter()
        with progress_bar(disable=not progress) as bar:
            task = bar.add_task(self.label, total=self.loop.epochs, completed=len(history))
            for epoch in range(len(history), self.loop.epochs):
                if epoch - best["epoch"] > self.loop.patience:
                    break   # a resumed run that had already stopped early
                self.net.train()
                losses = []
                for _ in range(self.loop.steps_per_epoch):
                    loss = step(self.gen)
                    self.opt.zero_grad(set_to_none=True)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                    self.opt.step()
                    if self.ema is not None:
                        self.ema.update_parameters(self.net)
                    losses.append(loss.item())
                if self.sched is not None:
                    self.sched.step()
                net = self.evaluated
                net.eval()
                val = validate(net)
                history.append({"epoch": epoch, "train_loss": float(np.mean(losses)), "val": val,
                                "lr": self.opt.param_groups[0]["lr"],
                                "seconds": done_s + time.perf_counter() - t0})
                if val["loss"] < best["loss"]:
                    best = {"loss": val["loss"], "epoch": epoch, "metrics": val}
                    W.save_atomic(net.state_dict(), self.out / "best.pt")
                if on_epoch is not None:
                    on_epoch(epoch, net, val)
                self._save(history, best)
                bar.update(task, advance=1,
                           description=f"{self.label} (val {val['loss']:.4f}, best {best['loss']:.4f})")
                if epoch - best["epoch"] >= self.loop.patience:
                    break
        return Fitted(best["epoch"], best.get("metrics", {}), history)

    def best_state(self) -> dict[str, torch.Tensor]:
        return torch.load(self.out / "best.pt", map_location="cpu", weights_only=True)

    def export(self, card: dict, half: bool = False) -> Path:
        """The best epoch's weights as ``out/<folder name>.pt`` + its card (``.json``)."""
        path = self.out / f"{self.out.name}.pt"
        W.save(self.best_state(), card, path, half=half)
        return path


def plot_curve(history: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ep = [h["epoch"] for h in history]
    ax.plot(ep, [h["train_loss"] for h in history], label="train")
    ax.plot(ep, [h["val"]["loss"] for h in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
