"""Shared by the evaluation and benchmark scripts (and the tests that score audio): the
machine description printed with every figure, and SI-SDR."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np


def cpu_description() -> str:
    """CPU model (with its family and model numbers and whether it has AVX-512, which a virtual
    machine's bare "AMD EPYC" does not tell: speed ratios against model-based anchors depend on
    it), core count and Python version of this machine."""
    cpu = platform.processor() or platform.machine()
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    if "model name" in fields:
        cpu = fields["model name"]
        if "cpu family" in fields:
            cpu += f" (family {fields['cpu family']}, model {fields.get('model', '?')}"
            cpu += ", AVX-512)" if "avx512f" in fields.get("flags", "").split() else ", no AVX-512)"
    return f"{cpu}, {os.cpu_count()} cores; Python {platform.python_version()}"


def machine(*, load: bool = False) -> str:
    """:func:`cpu_description` plus torch's version and thread count (and the 1-minute load
    average with ``load``)."""
    import torch

    text = (
        f"{cpu_description()}, torch {torch.__version__}, torch threads {torch.get_num_threads()}"
    )
    return text + (f"; load average {os.getloadavg()[0]:.2f}" if load else "")


def si_sdr(*, reference: np.ndarray, estimate: np.ndarray) -> float:
    """Scale-invariant signal-to-distortion ratio, dB (Le Roux et al. 2019); both signals are
    made zero-mean first."""
    reference = reference.astype(np.float64) - reference.mean()
    estimate = estimate.astype(np.float64) - estimate.mean()
    scale = np.dot(estimate, reference) / max(np.dot(reference, reference), 1e-20)
    target = scale * reference
    residual = estimate - target
    return float(10 * np.log10(max(np.sum(target**2), 1e-20) / max(np.sum(residual**2), 1e-20)))
