"""Reading mel features where TTS and ASR toolkits leave them.

A feature is named by a *source* string, so that a worker can read it again on its own:

- a file: ``.npy``, ``.npz`` (one array, or key ``mel``/``feats``), ``.pt`` (a tensor, or a
  dict with key ``mel``; ``weights_only``), or ``.h5`` with a ``feats`` dataset (one utterance
  per file, as ParallelWaveGAN-style recipes dump them);
- ``FILE.ark:OFFSET``: a matrix in a Kaldi archive (read with kaldiio), as a Kaldi-style
  ``feats.scp`` names it (ESPnet1, Kaldi, many ``dump/`` folders);
- ``FILE.h5::KEY``: one dataset of an HDF5 file holding several utterances.

:func:`find_mels` turns what the user gives (a folder, one file, a ``feats.scp`` of either
kind, a bare ``.ark``) into ``(utterance id, source)`` pairs; :func:`read_mel` reads one.
Normalisation statistics (:func:`load_stats`) come as ESPnet's ``feats_stats.npz`` or a
ParallelWaveGAN ``stats.h5`` / ``stats.npy``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.io.manifest import listed_path

MEL_EXTENSIONS = (".npy", ".npz", ".pt", ".h5", ".hdf5")
_MAGIC = {".npy": (b"\x93NUMPY", "numpy.save"), ".npz": (b"PK", "numpy.savez"),
          ".h5": (b"\x89HDF", "h5py"), ".hdf5": (b"\x89HDF", "h5py")}


class MelError(PipelineError, ValueError):
    """A mel file contradicts the declared convention; the message says what to change."""


def _h5py():
    try:
        import h5py
    except ImportError:   # pragma: no cover - a declared dependency
        raise MelError("reading .h5 features needs h5py: pip install h5py") from None
    return h5py


def read_mel(source: str) -> np.ndarray:
    """The array a source names (see the module docstring); refused in words otherwise."""
    try:
        if "::" in source:
            path, key = source.split("::", 1)
            with _h5py().File(path, "r") as f:
                return np.asarray(f[key])
        ark = _ark_reference(source)
        if ark is not None:
            import kaldiio
            return np.asarray(kaldiio.load_mat(source))
        return _read_file(Path(source))
    except MelError:
        raise
    except Exception as exc:  # damaged file, pickle refused, wrong format
        raise MelError(f"{source}: cannot read mel ({type(exc).__name__}: {exc})") from exc


def _ark_reference(source: str) -> str | None:
    """``FILE.ark`` of ``FILE.ark:OFFSET``, else None."""
    head, sep, tail = source.rpartition(":")
    return head if sep and tail.isdigit() and head.endswith(".ark") else None


def _read_file(path: Path) -> np.ndarray:
    suffix = path.suffix.lower()
    if suffix in _MAGIC:
        magic, writer = _MAGIC[suffix]
        with open(path, "rb") as fh:
            if fh.read(len(magic)) != magic:   # numpy would call it pickled data
                raise MelError(f"{path}: not a {suffix} file (no {suffix} header): "
                               f"write mels with {writer}")
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            keys = list(z.keys())
            key = next((k for k in ("mel", "feats", "spec") if k in keys), None)
            if key is None and len(keys) == 1:
                key = keys[0]
            if key is None:
                raise MelError(f"{path}: .npz holds {keys}; store one array or name it 'mel'")
            return z[key]
    if suffix in (".h5", ".hdf5"):
        with _h5py().File(path, "r") as f:
            if "feats" not in f:
                raise MelError(f"{path}: no 'feats' dataset (ParallelWaveGAN dumps hold one); "
                               f"it has {sorted(f.keys())[:5]}")
            return np.asarray(f["feats"])
    import torch
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict):
        obj = obj.get("mel", obj.get("feats"))
    if not isinstance(obj, torch.Tensor):
        raise MelError(f"{path}: .pt must hold a tensor or a dict with key 'mel'")
    obj = obj.detach()    # a tensor saved from a graph (requires_grad) is data all the same
    return obj.float().numpy() if obj.is_floating_point() else obj.numpy()


def mel_shape(source: str) -> tuple[int, ...]:
    """A mel's array shape (a ``.npy`` header only), ``()`` when unreadable."""
    try:
        if source.lower().endswith(".npy") and "::" not in source:
            return tuple(np.load(source, mmap_mode="r", allow_pickle=False).shape)
        a = read_mel(source)
        return tuple(a.shape[1:] if a.ndim == 3 and a.shape[0] == 1 else a.shape)
    except (MelError, OSError, ValueError):
        return ()


def _resolve(value: str, scp: Path) -> str:
    """A path or ark reference in a scp line, absolute (:func:`listed_path`); refused when
    the file is nowhere."""
    ark = _ark_reference(value)
    path, rest = (ark, value[len(ark):]) if ark is not None else (value, "")
    found = listed_path(path, scp)
    if found is not None:
        return str(found.resolve()) + rest
    raise MelError(f"{scp}: {path} (named there) not found, neither from here nor from the scp's "
                   "folder or those above it; run from the recipe's directory")


def read_scp(scp: Path) -> list[tuple[str, str]]:
    """``feats.scp`` lines ``utt_id path.npy`` (ESPnet2's NpyScpWriter) or ``utt_id
    file.ark:offset`` (Kaldi) -> ``(id, source)``. Piped commands are refused."""
    items = []
    for n, line in enumerate(scp.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        uid, _, value = line.strip().partition(" ")
        value = value.strip()
        if not value:
            raise MelError(f"{scp}:{n}: a scp line is 'utt_id path' (got {line!r})")
        if value.endswith("|"):
            raise MelError(f"{scp}:{n}: a piped command ({value}); run it into an ark file "
                           "first (copy-feats ... ark,scp:feats.ark,feats.scp)")
        items.append((uid, _resolve(value, scp)))
    if not items:
        raise MelError(f"{scp}: no utterances in it")
    return items


def read_ark_index(ark: Path) -> list[tuple[str, str]]:
    """A bare Kaldi ``.ark``: every matrix's ``(id, "FILE.ark:OFFSET")``, in file order."""
    from kaldiio.matio import read_kaldi, read_token

    items = []
    path = str(ark.resolve())
    with open(ark, "rb") as fd:
        while True:
            token = read_token(fd)
            if token is None:
                break
            items.append((token, f"{path}:{fd.tell()}"))
            read_kaldi(fd)
    if not items:
        raise MelError(f"{ark}: no matrices in it")
    return items


def read_h5_index(h5: Path) -> list[tuple[str, str]]:
    """An ``.h5``: one utterance (a ``feats`` dataset; the file's stem names it), or one per
    2-D dataset at the top level (its key names it)."""
    with _h5py().File(h5, "r") as f:
        if "feats" in f:
            return [(h5.stem, str(h5))]
        keys = sorted(k for k in f.keys() if getattr(f[k], "ndim", 0) in (2, 3))
    if not keys:
        raise MelError(f"{h5}: neither a 'feats' dataset nor 2-D datasets of utterances")
    return [(k, f"{h5}::{k}") for k in keys]


def find_mels(src: str | Path) -> list[tuple[str, str]]:
    """What the user gave -> ``(utterance id, source)``: a folder (every mel file below it;
    ids are relative paths without extension, ``.h5`` holding several utterances adds its
    keys), one file, a ``.scp`` (ids from it) or a bare ``.ark`` (ids from it)."""
    src = Path(src)
    if not src.exists():
        raise MelError(f"{src}: no such file or folder")
    if src.is_file():
        suffix = src.suffix.lower()
        if suffix == ".scp":
            return read_scp(src)
        if suffix == ".ark":
            return read_ark_index(src)
        if suffix in (".h5", ".hdf5"):
            return read_h5_index(src)
        return [(src.stem, str(src))]
    files = sorted(p for p in src.rglob("*") if p.suffix.lower() in MEL_EXTENSIONS and p.is_file())
    if not files:
        raise MelError(f"{src}: no mel files ({', '.join(MEL_EXTENSIONS)}) found")
    items = []
    for p in files:
        uid = p.relative_to(src).with_suffix("").as_posix()
        if p.suffix.lower() in (".h5", ".hdf5"):
            inner = read_h5_index(p)
            items += ([(uid, s) for _, s in inner] if len(inner) == 1 and "::" not in inner[0][1]
                      else [(f"{uid}/{k}", s) for k, s in inner])
        else:
            items.append((uid, str(p)))
    return items


@dataclass(frozen=True)
class MelStats:
    """Per-mel mean and standard deviation of a toolkit's feature normalisation: a normalised
    mel ``z`` is the mel ``z * std + mean`` (ESPnet's GlobalMVN, ParallelWaveGAN's scaler)."""
    mean: tuple[float, ...]
    std: tuple[float, ...]
    path: str
    sha256: str

    def denormalise(self, a: np.ndarray) -> np.ndarray:
        """``[T, n_mels]`` normalised -> the mel."""
        return a * np.asarray(self.std, np.float32) + np.asarray(self.mean, np.float32)


def load_stats(path: str | Path, n_mels: int) -> MelStats:
    """Read normalisation statistics: ESPnet's ``feats_stats.npz`` (``count``, ``sum``,
    ``sum_square``: GlobalMVN's mean and std, its variance floored at 1e-20), or
    ParallelWaveGAN's ``stats.h5`` (datasets ``mean``, ``scale``) or ``stats.npy`` (rows
    mean, scale); refused in words otherwise."""
    path = Path(path)
    try:
        suffix = path.suffix.lower()
        if suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if not {"count", "sum", "sum_square"} <= set(z.keys()):
                    raise MelError(f"--stats {path}: an .npz with keys {sorted(z.keys())}; "
                                   "ESPnet's feats_stats.npz has count, sum and sum_square")
                count = float(z["count"])
                mean = np.asarray(z["sum"], np.float64) / count
                var = np.asarray(z["sum_square"], np.float64) / count - mean * mean
                std = np.sqrt(np.maximum(var, 1e-20))
        elif suffix == ".npy":
            a = np.load(path, allow_pickle=False)
            if a.ndim != 2 or a.shape[0] != 2:
                raise MelError(f"--stats {path}: shape {a.shape}; a stats .npy holds two rows, "
                               "the mean and the scale (ParallelWaveGAN's compute_statistics)")
            mean, std = a[0].astype(np.float64), a[1].astype(np.float64)
        elif suffix in (".h5", ".hdf5"):
            with _h5py().File(path, "r") as f:
                if not {"mean", "scale"} <= set(f.keys()):
                    raise MelError(f"--stats {path}: datasets {sorted(f.keys())}; "
                                   "ParallelWaveGAN's stats.h5 has mean and scale")
                mean = np.asarray(f["mean"], np.float64)
                std = np.asarray(f["scale"], np.float64)
        else:
            raise MelError(f"--stats {path}: not .npz (ESPnet feats_stats.npz), .h5 or .npy "
                           "(ParallelWaveGAN stats: mean and scale)")
    except MelError:
        raise
    except Exception as exc:  # missing, damaged or pickled file
        raise MelError(f"--stats {path}: cannot read ({type(exc).__name__}: {exc})") from exc
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise MelError(f"--stats {path}: statistics of {mean.shape[-1]} features, but the "
                       f"convention has n_mels={n_mels}")
    return MelStats(tuple(map(float, mean)), tuple(map(float, std)), str(path.resolve()),
                    hashlib.sha256(path.read_bytes()).hexdigest())
