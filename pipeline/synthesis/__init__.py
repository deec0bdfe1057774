"""Mel -> magnitude -> waveform on lists of utterances in memory: what the stages share.

``invert`` (mel -> magnitude, in length buckets), ``route`` (which phase route a request
resolves to: algorithm, projection, default iterations, the inverter's weights and digest),
``chunks`` (long items reconstructed in overlapping chunks) and ``reconstruct`` (magnitudes ->
waveforms, in length buckets). The stages (``pipeline.stages``) read and write stores and
folders around these; none of them imports another stage.
"""
from pipeline.synthesis.invert import METHODS, invert_frames, mel_floor
from pipeline.synthesis.reconstruct import reconstruct
from pipeline.synthesis.route import (
    ALGOS,
    DEFAULT_ITERS,
    DEFAULT_TOL,
    INITS,
    PROJECTS,
    AlgoOptions,
    Inverter,
    check_route,
    default_iters,
    resolve_inverter,
    resolve_project,
    resolve_tol,
)

__all__ = ["ALGOS", "DEFAULT_ITERS", "DEFAULT_TOL", "INITS", "METHODS", "PROJECTS", "AlgoOptions", "Inverter",
           "check_route", "default_iters", "invert_frames", "mel_floor", "reconstruct",
           "resolve_inverter", "resolve_project", "resolve_tol"]
