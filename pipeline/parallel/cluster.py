"""SLURM through dask-jobqueue: cluster profiles (``configs/cluster-*.toml``) -> SLURMCluster.

No hand-written sbatch scripts: dask-jobqueue writes the job script; ``pipeline cluster
script`` prints it. Paths and ids never reach a shell: the stages pass them to the workers as
function arguments over dask, and the one path in the job script (the Python interpreter) is
shell-quoted.
"""
from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path
from typing import Any, Iterator

import tomllib

from pipeline.config import CONFIG_DIR, ConfigError

PROFILE_KEYS = {"queue", "account", "cores", "processes", "memory", "walltime", "jobs",
                "job_extra_directives", "job_script_prologue", "local_directory",
                "log_directory", "interface", "python"}


def load_profile(name_or_path: str | Path | None) -> dict[str, Any]:
    """Read a cluster profile: a TOML path or ``configs/cluster-NAME.toml``; ``[slurm]`` table."""
    name_or_path = name_or_path or "slurm-local"
    path = Path(name_or_path)
    if not path.is_file():    # a profile's name, or its file's name in configs/
        name = str(name_or_path).removesuffix(".toml").removeprefix("cluster-")
        path = CONFIG_DIR / f"cluster-{name}.toml"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("cluster-") for p in CONFIG_DIR.glob("cluster-*.toml"))
        raise ConfigError(f"cluster profile {str(name_or_path)!r} not found: give a TOML file or "
                          f"one of {', '.join(known)}")
    data = tomllib.loads(path.read_text()).get("slurm")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: needs a [slurm] table")
    unknown = sorted(set(data) - PROFILE_KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown}; known: {sorted(PROFILE_KEYS)}")
    return data


def cluster_kwargs(profile: dict[str, Any]) -> dict[str, Any]:
    kw = {k: v for k, v in profile.items() if k != "jobs"}
    # SLURM allocates `cores` per job (job_cpu); dask runs one single-threaded worker per
    # process, and each task uses cores/processes torch threads: workers x threads = cores.
    cores, processes = int(kw.pop("cores", 1)), int(kw.pop("processes", 1))
    kw.update(job_cpu=cores, cores=processes, processes=processes)
    kw.setdefault("memory", "4GB")
    kw.setdefault("walltime", "01:00:00")
    kw["python"] = shlex.quote(kw.get("python") or sys.executable)
    return kw


def worker_threads(profile: dict[str, Any]) -> int:
    """torch threads per worker: the job's cores shared by its worker processes."""
    return max(1, int(profile.get("cores", 1)) // int(profile.get("processes", 1)))


def make_slurm(profile: dict[str, Any]):
    return _slurm_cluster_class()(**cluster_kwargs(profile))


def _slurm_cluster_class() -> Any:
    """dask-jobqueue's SLURMCluster, imported without its side effect: its ``runner`` module
    sets SIGINT to ``sys.exit()`` when imported, so a Ctrl-C during a SLURM run ended this
    process with exit status 0 and no message, as if it had succeeded. The handler this
    process had is put back (main thread only: elsewhere signals cannot be set, nor were)."""
    import signal
    import threading

    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGINT) if main else None
    try:
        from dask_jobqueue import SLURMCluster
    finally:
        if main and before is not None:
            signal.signal(signal.SIGINT, before)
    return SLURMCluster


class ClusterError(ConfigError):
    """SLURM refuses the profile's jobs (a bad partition, account, QOS...): sbatch's words."""


def check_submittable(cluster: Any) -> None:
    """``sbatch --test-only`` on the job script, so that a job SLURM would refuse fails now
    with sbatch's message: dask-jobqueue only logs a failed submission, and the run would
    wait for workers that never come."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".sh") as fh:
        fh.write(cluster.job_script())
        fh.flush()
        try:
            r = subprocess.run(["sbatch", "--test-only", fh.name], capture_output=True,
                               text=True, timeout=60)
        except FileNotFoundError:
            raise ClusterError("sbatch not found: --cluster slurm needs the SLURM client "
                               "commands on this machine") from None
        except subprocess.TimeoutExpired:
            raise ClusterError("sbatch --test-only did not answer in 60 s: is slurmctld "
                               "reachable?") from None
    if r.returncode != 0:
        msg = " ".join((r.stderr or r.stdout).split())
        raise ClusterError(f"SLURM refuses the jobs of this profile: {msg}")


@contextlib.contextmanager
def slurm_cluster(profile_name: str | Path | None, jobs: int | None = None) -> Iterator[Any]:
    profile = load_profile(profile_name)
    cluster = make_slurm(profile)
    try:
        check_submittable(cluster)
        cluster.scale(jobs=jobs if jobs and jobs > 1 else int(profile.get("jobs", 1)))
        yield cluster
    finally:
        cluster.close()


def job_script(profile_name: str | Path | None) -> str:
    cluster = make_slurm(load_profile(profile_name))
    try:
        return cluster.job_script()
    finally:
        cluster.close()
