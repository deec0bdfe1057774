"""Joint mel inversion: phase iterations that also refine the magnitude within the mel.

GLA and FGLA hold the magnitude fixed, so no number of iterations repairs what the
mel -> magnitude step got wrong. The mel only fixes band energies: inside each band the
fine (harmonic) structure is free, and STFT consistency is what can fill it in. Two
algorithms, both batched like FGLA (one STFT + one ISTFT per iteration, the rest two small
matmuls per frame):

- :func:`mel_iterate`: FGLA whose amplitude projection is replaced by a projection onto the
  magnitudes whose mel equals the given mel (multiplicative: each bin scaled by its bands'
  ratio ``P * A^T(m / A P) / A^T 1``, three times). ``P = |X|^power``.
- :func:`admm`: the alternating direction method of multipliers for
  ``min ½|| |X| - Y ||² + λ/2 ||A W - m||²`` s.t. ``X`` consistent (``Z = X``), ``Y >= 0``,
  ``W = Y`` (Masuyama, Ueno & Ono, "Mel-spectrogram inversion via ADMM", 2025,
  arXiv 2501.05557): the variables split into two blocks, ``(X, W)`` and ``(Z, Y)``, each
  of whose updates is closed-form and separable. Magnitude mels (``power = 1``) only.

The mel target: linear (decompressed) mel ``[B, T, M]``. A compressed value at the clamp
floor is only an upper bound (the true energy was anywhere below it): there the target is
``min(A P, floor)``, so silence is never pushed up to the floor.

Shapes: magnitudes and spectrograms ``[B, T, F]``, mels ``[B, T, M]``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.algorithms.gla import EPS, initial_phase
from pipeline.config import AudioConfig
from pipeline.dsp.mel import _filterbank_np, decompress
from pipeline.dsp.stft import FramePair
from pipeline.parallel.batching import tick

CHECK_EVERY = 100     # iterations between two convergence checks of --tol (BENCHMARKS.md)


@functools.lru_cache(maxsize=32)
def _ridge_np(cfg: AudioConfig, ratio: float) -> np.ndarray:
    """``A^T (ratio I + A A^T)^-1`` ``[F, M]``: the ridge-regularised inverse of the filterbank
    (``ratio = 0``: the pseudo-inverse of a full-row-rank A)."""
    A = _filterbank_np(cfg).astype(np.float64)
    M = A.shape[0]
    K = np.linalg.pinv(A) if ratio == 0 else A.T @ np.linalg.inv(ratio * np.eye(M) + A @ A.T)
    # round-off far below the filterbank's own entries: as float32 these are subnormal numbers,
    # which make the CPU matmul ~15x slower (measured 3.0 ms vs 0.2 ms for 256 frames)
    K[np.abs(K) < 1e-9 * np.abs(K).max()] = 0.0
    return K.astype(np.float32)


@dataclass
class MelTarget:
    """A batch's mel target and the filterbank terms of its projections."""
    mel: torch.Tensor          # [B, T, M] linear mel (magnitude or power, per cfg.power)
    floor: torch.Tensor        # [B, T, M] bool: the value is the clamp floor (an upper bound)
    A: torch.Tensor            # [M, F]
    power: float
    clamp: float = 1e-5                 # the config's clamp floor (linear)
    start: torch.Tensor | None = None   # [B, T, F] initial magnitude: kept where no band looks
    _terms: "BandProducts | None" = field(default=None, repr=False)
    _low: torch.Tensor | None = field(default=None, repr=False)
    _unseen: torch.Tensor | None = field(default=None, repr=False)

    @classmethod
    def from_compressed(cls, mel: torch.Tensor, cfg: AudioConfig) -> "MelTarget":
        """``mel``: the store's compressed mel ``[B, T, M]`` in the convention of ``cfg``."""
        A = torch.from_numpy(_filterbank_np(cfg)).to(mel.device, mel.dtype)
        lin = decompress(mel, cfg)
        # 1 % above the floor still counts as the floor (float16/float32 rounding of logs)
        floor = lin <= cfg.clamp * 1.01
        return cls(lin.clamp_min(0), floor, A, cfg.power, cfg.clamp)

    def select(self, rows: torch.Tensor) -> "MelTarget":
        """The target of the items ``rows`` of the batch (the filterbank terms shared)."""
        pick = (lambda x: None if x is None else x[rows])
        return MelTarget(self.mel[rows], self.floor[rows], self.A, self.power, self.clamp,
                         pick(self.start), self._terms, pick(self._low), self._unseen)

    def terms(self) -> "BandProducts":
        """The two filterbank products of a multiplicative step: ``P A^T`` and ``R An`` with
        ``An`` = ``A`` with each column divided by its sum (zero columns stay zero)."""
        if self._terms is None:
            cover = self.A.sum(0)
            inv = torch.where(cover > 0, 1.0 / cover.clamp_min(EPS), torch.zeros_like(cover))
            self._terms = BandProducts.build(self.A, self.A * inv)
        return self._terms

    def unseen(self) -> torch.Tensor | None:
        """Indices ``[K]`` of the bins no band sees, or None when every bin is seen."""
        if self._unseen is None:
            self._unseen = torch.nonzero(self.A.sum(0) <= 0).flatten()
        return self._unseen if self._unseen.numel() else None

    def goal(self, AP: torch.Tensor) -> torch.Tensor:
        """The mel to reach from a current mel ``AP``: the target, or ``min(AP, floor)``
        where the target sits at the clamp floor (one clamp: ``AP`` between a lower bound
        of 0 at the floor, the target elsewhere, and the target)."""
        if self._low is None:
            self._low = torch.where(self.floor, torch.zeros_like(self.mel), self.mel)
        return torch.clamp(AP, min=self._low, max=self.mel)


Block = tuple[int, int, int, int, "torch.Tensor | None"]   # in0, in1, out0, out1, W[in, out]


@dataclass(frozen=True)
class BandProducts:
    """``P A^T`` and ``R An`` (``A``, ``An``: ``[M, F]`` filterbanks with the same nonzeros)
    through the filterbank's nonzero blocks on the CPU.

    A mel band covers a contiguous run of bins and each bin lies in at most two bands, so
    ``A`` is banded: cut into 4 groups of bands of equal bin coverage, the blocks hold about
    a quarter of the dense matrix. Dense matmuls of 256 frames x 513 bins x 80 bands already
    run near the core's peak, so the saving is smaller than the area
    (``benchmarks/checks/band_products.py``; BENCHMARKS.md, joint mel inversion). On other
    devices, and for filterbanks that are not banded, the dense products run."""
    AT: torch.Tensor                                           # [F, M]
    An: torch.Tensor                                           # [M, F]
    fwd: tuple[Block, ...] = ()     # bins f0:f1 -> bands m0:m1, AT[f0:f1, m0:m1]
    bwd: tuple[Block, ...] = ()     # bands m0:m1 -> bins f0:f1, An[m0:m1, f0:f1] (or None)

    @classmethod
    def build(cls, A: torch.Tensor, An: torch.Tensor, groups: int = 4) -> "BandProducts":
        AT, An = A.T.contiguous(), An.contiguous()
        if A.device.type != "cpu":
            return cls(AT, An)
        M, F = A.shape
        seen = (A > 0).numpy()
        lo = np.where(seen.any(1), seen.argmax(1), F)                  # first bin of each band
        hi = np.where(seen.any(1), F - seen[:, ::-1].argmax(1), 0)      # one past its last
        width = np.cumsum(np.maximum(hi - lo, 0))
        cuts = sorted({0, M} | {int(np.searchsorted(width, width[-1] * i / groups))
                                for i in range(1, groups)})
        fwd: list[Block] = []
        for m0, m1 in zip(cuts[:-1], cuts[1:]):
            f0, f1 = int(lo[m0:m1].min()), int(hi[m0:m1].max())
            if f1 <= f0 or (fwd and f0 < fwd[-1][0]):
                return cls(AT, An)                                     # not banded
            fwd.append((f0, f1, m0, m1, AT[f0:f1, m0:m1].contiguous()))
        if len(fwd) < 2:
            return cls(AT, An)
        starts = [0] + [blk[0] for blk in fwd[1:]] + [F]
        bwd: list[Block] = []
        for f0, f1 in zip(starts[:-1], starts[1:]):
            bands = np.flatnonzero(seen[:, f0:f1].any(1))
            if bands.size == 0:
                bwd.append((0, 0, f0, f1, None))
                continue
            m0, m1 = int(bands[0]), int(bands[-1]) + 1
            bwd.append((m0, m1, f0, f1, An[m0:m1, f0:f1].contiguous()))
        return cls(AT, An, tuple(fwd), tuple(bwd))

    def mel(self, P: torch.Tensor) -> torch.Tensor:
        """``P A^T``: ``[..., F]`` -> ``[..., M]``."""
        return _blocked(P, self.AT, self.fwd)

    def spread(self, R: torch.Tensor) -> torch.Tensor:
        """``R An``: ``[..., M]`` -> ``[..., F]``."""
        return _blocked(R, self.An, self.bwd)


def _blocked(x: torch.Tensor, dense: torch.Tensor, blocks: tuple[Block, ...]) -> torch.Tensor:
    """``x @ dense`` (``[..., I]`` -> ``[..., O]``) as the products of ``dense``'s nonzero
    blocks, each writing its own columns of the output (a block without weights: zeros);
    no blocks: the dense matmul."""
    if not blocks:
        return torch.matmul(x, dense)
    flat = x.reshape(-1, x.shape[-1])
    out = flat.new_empty(len(flat), dense.shape[1])
    for i0, i1, o0, o1, w in blocks:
        if w is None:
            out[:, o0:o1].zero_()
        else:
            torch.mm(flat[:, i0:i1], w, out=out[:, o0:o1])
    return out.view(*x.shape[:-1], out.shape[-1])

def project_mel(mag: torch.Tensor, target: MelTarget, steps: int = 3) -> torch.Tensor:
    """Magnitudes ``[B, T, F]`` moved towards the set whose mel is ``target``: ``steps``
    rescalings of each bin by its bands' ratio (bins no band sees keep ``target.start``); one
    step leaves the mel off target where bands overlap, and the steps converge towards it
    (3 is the default: fewer lose per iteration and per second, BENCHMARKS.md). The Euclidean
    (affine) projection lost at every iteration count and was removed (decisions log)."""
    P = mag if target.power == 1 else mag * mag
    products = target.terms()
    for _ in range(steps):
        AP = products.mel(P)
        ratio = target.goal(AP).div_(AP.clamp_min_(EPS))
        P = products.spread(ratio).mul_(P)
    out = P if target.power == 1 else P.sqrt()
    unseen = target.unseen()
    if unseen is not None:
        # bins no band sees (above fmax, DC): the mel says nothing there, so they keep the
        # magnitude invert gave them (or, without one, the magnitude they came with); left
        # free, consistency fills them with the spill of their neighbours (worse speech
        # above hifigan-22k's fmax)
        keep = mag if target.start is None else target.start
        out = (out.clone() if out is mag else out).index_copy_(-1, unseen,
                                                                keep.index_select(-1, unseen))
    return out


def _unit(spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(|spec|, 1/|spec|)`` through the real and imaginary views (complex abs is slow on CPU)."""
    sq = torch.addcmul(spec.real * spec.real, spec.imag, spec.imag)
    return sq.sqrt(), sq.add_(EPS * EPS).rsqrt_()


def mel_error(spec: torch.Tensor, target: MelTarget, pair: FramePair) -> torch.Tensor:
    """Each item's mean squared log-mel error ``[B]`` (nepers²) of the spectrogram ``spec``
    against the target, over its own frames; values at the clamp floor count as the floor
    (a mel below it matches)."""
    mag, _ = _unit(spec)
    AP = target.terms().mel(mag if target.power == 1 else mag * mag)
    floor = target.clamp
    d = AP.clamp_min_(floor).log_().sub_(target.mel.clamp_min(floor).log_())
    frames = pair.frame_mask.sum((1, 2)).clamp_min(1)
    return d.square_().mul_(pair.frame_mask).sum((1, 2)) / (frames * d.shape[-1])


def mel_iterate(spec: torch.Tensor, target: MelTarget, pair: FramePair, n_iter: int,
                momentum: float = 0.99, steps: int = 3, tol: float = 0.0,
                window: int = CHECK_EVERY
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """FGLA with the mel projection in place of the amplitude projection; returns the last
    projected estimate ``[B, T, F]`` and the iterations each item ran ``[B]``.

    ``tol > 0``: every ``window`` iterations each item's log-mel error (:func:`mel_error`, of
    its consistent spectrogram) is measured, and an item whose best error improved by less
    than ``tol`` (relative) since the previous check stops there: it leaves the batch with
    its estimate, and the rest go on with a smaller batch. ``n_iter`` is then a maximum."""
    alpha = momentum / (1.0 + momentum)
    used = torch.full((spec.shape[0],), n_iter, dtype=torch.long)
    rows = torch.arange(spec.shape[0], device=spec.device)   # each live item's row in the batch
    done: torch.Tensor | None = None      # the estimates of items that stopped early
    best: torch.Tensor | None = None      # each live item's lowest error at the last check
    prev = None
    for k in range(n_iter):
        tick()
        rebuilt = pair.stft(pair.istft(spec))
        if tol > 0 and k and k % window == 0:
            err = mel_error(rebuilt, target, pair)
            err = err if best is None else torch.minimum(err, best)
            if best is not None:
                stop = (best - err) <= tol * best
                if stop.any():
                    if done is None:
                        done = spec.clone()
                    done[rows[stop]] = spec[stop]
                    used[rows[stop].cpu()] = k
                    live = torch.nonzero(~stop).flatten()
                    if live.numel() == 0:
                        return done, used
                    spec, rebuilt, err, rows = spec[live], rebuilt[live], err[live], rows[live]
                    prev = None if prev is None else prev[live]
                    target, pair = target.select(live), pair.select(live)
            best = err
        ang = torch.sub(rebuilt, prev, alpha=alpha) if prev is not None and alpha else rebuilt
        prev = rebuilt
        mag, inv = _unit(ang)
        scale = inv.mul_(project_mel(mag, target, steps)).mul_(pair.frame_mask)
        spec = ang * scale if ang is rebuilt else ang.mul_(scale)   # padding frames silent
    if done is None:
        return spec, used
    done[rows] = spec
    return done, used


def admm_iterate(spec: torch.Tensor, target: MelTarget, pair: FramePair, n_iter: int,
                 rho: float = 0.03, lam: float = 1e6) -> torch.Tensor:
    """ADMM for ``min_{X,Y,Z,W} ½|| |X| - Y ||² + λ/2 ||A W - m||² + ι_C(Z) + ι_{>=0}(Y)``
    subject to ``Z = X``, ``W = Y`` (scaled duals ``U``, ``V``; penalty ``rho``).

    Block 1, given ``(Z, Y, U, V)``: ``X`` takes the phase of ``Z - U`` and the magnitude
    ``(Y + rho |Z - U|) / (1 + rho)``; ``W = (Y + V) + K (m - A (Y + V))`` with
    ``K = A^T (rho/λ I + A A^T)^-1`` (per frame, by the matrix inversion lemma).
    Block 2, given ``(X, W, U, V)``: ``Z = P_C(X + U)`` (one ISTFT + STFT: the consistency
    projection), ``Y = max(0, (|X| + rho (W - V)) / (1 + rho))``. Then ``U += X - Z``,
    ``V += Y - W``. Returns the last consistent estimate ``Z``."""
    if target.power != 1:
        raise ValueError("ADMM mel inversion is written for magnitude mels (power = 1); "
                         "use --algo fgla --project mel for power mels")
    K = torch.from_numpy(_ridge_np(pair.cfg, rho / lam)).to(spec.device, target.A.dtype)
    A = target.A
    Z = spec
    Y, _ = _unit(spec)
    U = torch.zeros_like(spec)
    V = torch.zeros_like(Y)
    KT = K.T.contiguous()
    for _ in range(n_iter):
        tick()
        D = Z - U
        dmag, dinv = _unit(D)
        xmag = dmag.mul_(rho).add_(Y).div_(1 + rho)              # |X|
        X = pair.own_frames(D.mul_(dinv.mul_(xmag)))             # D reused in place
        YV = Y.add_(V)                                           # Y is rebuilt below
        AYV = torch.matmul(YV, A.T)
        W = torch.matmul(target.goal(AYV).sub_(AYV), KT).add_(YV)    # addmm is 20x slower here
        # each item's own frames only: the frames of a shorter item's batch padding would
        # otherwise take the spill of its last frames into U every iteration, unbounded (an
        # item of a padded batch diverged to NaN within 50 iterations on held-out prompts)
        Z = pair.own_frames(pair.stft(pair.istft(X + U)))
        Y = torch.sub(W, V).mul_(rho).add_(xmag).div_(1 + rho).clamp_min_(0)
        U.add_(X).sub_(Z)
        V.add_(Y).sub_(W)
    return Z


@torch.inference_mode()
def joint(mag: torch.Tensor, mel: torch.Tensor, lengths: torch.Tensor, cfg: AudioConfig,
          n_iter: int = 100, method: str = "project", momentum: float = 0.99,
          init: str | torch.Tensor = "zeros", generator: torch.Generator | None = None,
          steps: int = 3, rho: float = 0.03, lam: float = 1e6, tol: float = 0.0,
          pair: FramePair | None = None) -> tuple[torch.Tensor, FramePair, torch.Tensor]:
    """Joint magnitude and phase from the initial magnitude ``mag`` ``[B, T, F]`` (from
    ``invert``) and the compressed mel ``[B, T, M]`` it came from. ``method``: ``project``
    (mel-projected FGLA, ``steps`` rescalings per iteration; ``tol``: stop each item when it
    has converged, :func:`mel_iterate`) or ``admm`` (``rho``, ``lam``:
    chosen on the tuning set, BENCHMARKS.md; always ``n_iter``). Returns padded waveforms
    ``[B, L]``, the :class:`FramePair` (``pair.crop`` cuts them) and the iterations each
    item ran ``[B]``."""
    B, T, F = mag.shape
    if F != cfg.n_freq:
        raise ValueError(f"magnitude has {F} frequency bins but the config needs {cfg.n_freq}")
    if mel.shape[:2] != (B, T) or mel.shape[2] != cfg.n_mels:
        raise ValueError(f"mel {tuple(mel.shape)} does not match magnitude {tuple(mag.shape)} "
                         f"with {cfg.n_mels} mels")
    if pair is None:
        pair = FramePair(cfg, T, lengths, mag.device, mag.dtype)
    target = MelTarget.from_compressed(mel.to(mag.dtype), cfg)
    target.start = mag
    angles = initial_phase(mag, init, generator, cfg) if isinstance(init, str) else init
    spec = pair.own_frames(mag * angles)
    if method not in ("project", "admm"):
        raise ValueError(f"unknown joint method {method!r}: project or admm")
    if method == "admm":
        spec = admm_iterate(spec, target, pair, n_iter, rho=rho, lam=lam)
        used = torch.full((B,), n_iter, dtype=torch.long)
    else:
        spec, used = mel_iterate(spec, target, pair, n_iter, momentum, steps, tol)
    return pair.istft(pair.own_frames(spec)), pair, used
