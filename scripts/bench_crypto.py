"""What encryption at rest costs: sealing and opening a 60 s result (default options), as the
cache bundle and as the three storage objects, next to building and reading the bundle.

AES-256-GCM (``app.services.crypto.Sealer``), one thread, best and median of 20 runs.

    python scripts/bench_crypto.py
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.models.options import ProcessingOptions  # noqa: E402
from app.pipeline.decode import DecodeLimits  # noqa: E402
from app.pipeline.runner import Pipeline  # noqa: E402
from app.services.crypto import Sealer  # noqa: E402
from app.services.results import StoredResult  # noqa: E402
from scripts.evalkit import machine  # noqa: E402


def timed(f: Callable[[], object], runs: int = 20) -> str:
    """``best / median ms`` of ``runs`` calls."""
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        f()
        times.append((time.perf_counter() - began) * 1000.0)
    return f"{min(times):.2f} / {float(np.median(times)):.2f} ms"


def main() -> int:
    torch.set_num_threads(1)
    t = np.arange(60 * 16000) / 16000
    noise = 0.01 * np.random.default_rng(0).standard_normal(t.size)
    x = (0.3 * np.sin(2 * np.pi * 180 * t) + noise).astype(np.float32)
    wav = io.BytesIO()
    sf.write(wav, x, 16000, format="WAV", subtype="PCM_16")
    options = ProcessingOptions()
    run = Pipeline(torch.device("cpu"), DecodeLimits()).run(wav.getvalue(), options)
    result = StoredResult.from_pipeline(run, id="0" * 32, content_sha256="0" * 64, options=options)
    bundle, objects = result.to_bundle(), result.to_objects()
    sealer = Sealer(os.urandom(32))
    sealed = sealer.seal(bundle, context="cache/x")
    sealed_objects = {name: sealer.seal(data, context=name) for name, data in objects.items()}
    print(f"60 s result, default options; {machine()}")
    print("best / median of 20:")
    print(f"  cache bundle ({len(bundle) / 1e6:.2f} MB): "
          f"seal {timed(lambda: sealer.seal(bundle, context='cache/x'))}, "
          f"open {timed(lambda: sealer.open(sealed, context='cache/x'))}")  # fmt: skip
    seal_all = lambda: [sealer.seal(v, context=k) for k, v in objects.items()]  # noqa: E731
    open_all = lambda: [sealer.open(v, context=k) for k, v in sealed_objects.items()]  # noqa: E731
    print(f"  three storage objects ({sum(map(len, objects.values())) / 1e6:.2f} MB): "
          f"seal {timed(seal_all)}, open {timed(open_all)}")  # fmt: skip
    print(f"  for scale: to_bundle {timed(result.to_bundle, 5)}, "
          f"from_bundle {timed(lambda: StoredResult.from_bundle(bundle), 5)}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
