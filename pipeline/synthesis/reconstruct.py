"""Magnitudes -> waveforms for a list of utterances, in length buckets (long items in chunks)."""
from __future__ import annotations

import zlib

import numpy as np
import torch

from pipeline.algorithms.joint import joint
from pipeline.config import AudioConfig
from pipeline.dsp.stft import FramePair
from pipeline.errors import UsageError
from pipeline.parallel.batching import (
    PHASE_BATCH_FRAMES,
    buckets,
    for_each_batch,
    progress_share,
    stack_frames,
)
from pipeline.synthesis.chunks import CHUNK_FRAMES, LONG_FRAMES, reconstruct_long
from pipeline.synthesis.invert import mel_floor
from pipeline.synthesis.route import ALGOS, AlgoOptions, check_route, resolve_project


def reconstruct(mags: list[np.ndarray], n_samples: list[int], cfg: AudioConfig, algo: str = "fgla",
                *, n_iter: int = 100, init: str = "zeros", device: torch.device | str = "cpu",
                batch_frames: int = PHASE_BATCH_FRAMES["cpu"], seed: int = 0, project: str = "mag",
                mels: list[np.ndarray] | None = None, long_frames: int = LONG_FRAMES,
                chunk_frames: int = CHUNK_FRAMES, options: AlgoOptions | None = None,
                iterations: list[int] | None = None) -> list[np.ndarray]:
    """Magnitudes ``[T_i, F]`` -> waveforms of ``n_samples[i]`` samples, in length buckets.

    Items longer than ``long_frames`` are reconstructed in chunks of ``chunk_frames``
    (:func:`pipeline.synthesis.chunks.reconstruct_long`), so memory stays flat in the item's length.

    ``project="mel"`` (and ``algo="admm"``, which is always joint) refine the magnitude within
    the compressed mels ``mels`` ``[T_i, M]`` while iterating (:mod:`pipeline.algorithms.joint`);
    ``project="mag"`` holds ``mags`` fixed.

    ``iterations``: a list that receives the iterations each item ran (``n_iter``, or fewer
    where ``options.tol`` stopped a converged item; a chunked item: its longest chunk)."""
    check_route(algo, project, cfg)
    options = options or AlgoOptions()
    is_joint = resolve_project(project, cfg, algo) == "mel"
    kw = options.for_algo(algo)
    if is_joint:
        if mels is None:
            raise UsageError("joint mel inversion (--project mel, --algo admm) needs the mels")
        fill = mel_floor(cfg)
        method = "admm" if algo == "admm" else "project"
        kw = {"momentum": 0.0 if algo == "gla" else options.momentum, "steps": options.steps,
              "rho": options.rho, "lam": options.lam, "tol": options.tol}
    fn = ALGOS[algo]

    def run(mag: torch.Tensor, mel: torch.Tensor | None, lengths: torch.Tensor,
            gen: torch.Generator, start: str | torch.Tensor
            ) -> tuple[torch.Tensor, FramePair, list[int]]:
        if is_joint:
            assert mel is not None
            x, pair, ran = joint(mag, mel, lengths, cfg, n_iter=n_iter, method=method,
                                 init=start, generator=gen, **kw)
            return x, pair, ran.tolist()
        x, pair = fn(mag, lengths, cfg, n_iter=n_iter, init=start, generator=gen, **kw)
        return x, pair, [n_iter] * len(lengths)

    out: list[np.ndarray | None] = [None] * len(mags)
    ran: list[int] = [n_iter] * len(mags)

    def one(group: list[int]) -> None:
        gen = torch.Generator().manual_seed(seed + zlib.crc32(str(sorted(group)).encode()))
        if len(group) == 1 and mags[group[0]].shape[0] > long_frames:
            i = group[0]
            chunks = -(-mags[i].shape[0] // chunk_frames)
            with progress_share(1 / (chunks * max(n_iter, 1))):
                out[i], ran[i] = reconstruct_long(mags[i], None if mels is None else mels[i],
                                          n_samples[i], cfg, run, init, gen,
                                          torch.device(device), chunk_frames)
            return
        batch = stack_frames([mags[i] for i in group]).to(device)
        lengths = torch.tensor([n_samples[i] for i in group])
        mel = (stack_frames([mels[i] for i in group], fill).to(device)  # type: ignore[index]
               if is_joint else None)
        with progress_share(len(group) / max(n_iter, 1)):     # the batch's utterances
            x, pair, its = run(batch, mel, lengths, gen, init)
        for i, y, n in zip(group, pair.crop(x, lengths.tolist()), its):
            out[i], ran[i] = y.float().cpu().numpy(), n

    for_each_batch(one, buckets([m.shape[0] for m in mags], batch_frames), torch.device(device))
    if iterations is not None:
        iterations[:] = ran
    return out  # type: ignore[return-value]
