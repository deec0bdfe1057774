"""An adversarial term for the inverter's training (issue 18): a small 2-D discriminator on
the log-magnitude's low band.

Under the mel's ambiguity (below ~1 kHz: a harmonic or the gap beside it?) a regression
predicts a blur between the two, and FGLA's speech is duller for it; a discriminator that
tells true low-band spectrograms from the network's rewards sharp, speech-like harmonic
combs instead (as GAN vocoders do on waveforms). Least-squares GAN loss plus feature matching
(HiFi-GAN's recipe: the generator's term is ``adv + 2 * feature matching``).

:class:`Adversary` owns the discriminator and its optimiser and has ``state_dict`` /
``load_state_dict``, so :class:`pipeline.train.trainer.Trainer` checkpoints and resumes it
with the net.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import weight_norm


class SpectrogramDiscriminator(nn.Module):
    """``[B, T, F]`` log-magnitudes -> (scores ``[B, 1, T', F']``, feature maps). Kernels of
    9 bins (strided 2 in frequency) see a harmonic comb at any pitch with the same weights."""

    def __init__(self, channels: int = 16):
        super().__init__()
        c = channels
        specs = [(1, c, (3, 9), (1, 2)), (c, c, (3, 9), (2, 2)), (c, 2 * c, (3, 5), (2, 2)),
                 (2 * c, 2 * c, (3, 3), (1, 1))]
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(i, o, k, s, padding=(k[0] // 2, k[1] // 2)))
            for i, o, k, s in specs)
        self.out = weight_norm(nn.Conv2d(2 * c, 1, (3, 3), padding=1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        h, feats = x.unsqueeze(1), []
        for conv in self.convs:
            h = nn.functional.leaky_relu(conv(h), 0.2)
            feats.append(h)
        return self.out(h), feats


class Adversary:
    """The discriminator on bins ``[0, bins)`` of ``log(magnitude + floor)`` and its AdamW."""

    def __init__(self, bins: int, floor: float, lr: float = 2e-4, channels: int = 16,
                 seed: int = 0):
        self.bins, self.floor = bins, floor
        with torch.random.fork_rng():
            torch.manual_seed(seed + 1)
            self.disc = SpectrogramDiscriminator(channels)
        self.opt = torch.optim.AdamW(self.disc.parameters(), lr=lr, betas=(0.8, 0.99))

    def _input(self, mag: torch.Tensor) -> torch.Tensor:
        # log-magnitudes of speech span about [-4.6, 4] here: centred and scaled to ~unit size
        return ((mag[..., :self.bins] + self.floor).log() + 1.0) / 2.5

    def generator_loss(self, pred: torch.Tensor, mag: torch.Tensor) -> torch.Tensor:
        """Update the discriminator once on (true, predicted) magnitudes ``[B, T, F]``, then
        return the generator's term (LSGAN + 2 x feature matching) for ``pred``."""
        real, fake = self._input(mag), self._input(pred)
        self.disc.train()
        self.opt.zero_grad(set_to_none=True)
        d_real, f_real = self.disc(real)
        d_fake, _ = self.disc(fake.detach())
        ((d_real - 1).pow(2).mean() + d_fake.pow(2).mean()).backward()
        self.opt.step()
        d_gen, f_gen = self.disc(fake)
        fm = sum((g - r.detach()).abs().mean() for g, r in zip(f_gen, f_real)) / len(f_gen)
        # the discriminator's own gradients from this term are cleared at its next update
        return (d_gen - 1).pow(2).mean() + 2 * fm

    def state_dict(self) -> dict:
        return {"disc": self.disc.state_dict(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.disc.load_state_dict(state["disc"])
        self.opt.load_state_dict(state["opt"])
