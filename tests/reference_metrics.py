"""The field's reference recipes, transcribed as their authors run them (not our code paths):
what tests/test_metrics_reference.py and benchmarks/metrics_reference.py compare with."""
import librosa
import numpy as np
import pysptk
import soundfile as sf
from fastdtw import fastdtw
from scipy.spatial.distance import euclidean


def espnet_mcd(gen_path, gt_path):
    """ESPnet egs2 ``pyscripts/utils/evaluate_mcd.py`` as that script runs it (defaults:
    n_fft 1024, n_shift 256, mcep order/alpha by rate, int16 samples, no padding, fastdtw)."""
    def extract(x, fs):
        dim, alpha = {16000: (23, 0.42), 22050: (34, 0.45)}[fs]
        n_frame = (len(x) - 1024) // 256 + 1
        win = pysptk.sptk.hamming(1024)
        return np.stack([pysptk.mcep(x[256 * i:256 * i + 1024] * win, dim, alpha, eps=1e-6,
                                     etype=1) for i in range(n_frame)])
    gen, fs = sf.read(gen_path, dtype="int16")
    gt, _ = sf.read(gt_path, dtype="int16")
    gen_m, gt_m = extract(gen.astype(np.float64), fs), extract(gt.astype(np.float64), fs)
    _, path = fastdtw(gen_m, gt_m, dist=euclidean)
    twf = np.array(path).T
    diff2sum = np.sum((gen_m[twf[0]] - gt_m[twf[1]]) ** 2, 1)
    return np.mean(10.0 / np.log(10.0) * np.sqrt(2 * diff2sum), 0)


def nuwave_lsd(x, y):
    """NU-Wave's LSD (log10 of the 2048/512 Hann STFT power clamped at 1e-8), via librosa."""
    def logpow(z):
        s = librosa.stft(z, n_fft=2048, hop_length=512, window="hann", center=True,
                         pad_mode="reflect")
        return np.log10(np.maximum(np.abs(s) ** 2, 1e-8))
    return np.mean(np.sqrt(np.mean((logpow(x) - logpow(y)) ** 2, axis=0)))


def lsd_db_reference(x, y, sample_rate):
    """The README's ``lsd_db``, via librosa: STFT 512/128 at 16 kHz (1024/256 above), Hann,
    centred frames zero-padded, mean over frames of the RMS over bins of
    ``10 log10(P_ref / P_est)``, powers floored at 1e-10."""
    n_fft = 1024 if sample_rate > 16000 else 512

    def logpow(z):
        s = librosa.stft(z, n_fft=n_fft, hop_length=n_fft // 4, window="hann", center=True,
                         pad_mode="constant")
        return 10 * np.log10(np.maximum(np.abs(s) ** 2, 1e-10))
    return np.mean(np.sqrt(np.mean((logpow(x) - logpow(y)) ** 2, axis=0)))
