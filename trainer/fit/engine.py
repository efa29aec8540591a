"""Where a fit runs: which engine computes the ``dot`` step, on which device (``--device``, ``--engine``).

Two engines compute the same step (same model, loss, optimiser semantics, store format):

* ``numba``: the compiled CPU kernels of :mod:`trainer.fit.dot`, the fastest on a CPU;
* ``torch``: torch ops on whole tensors kept on one device (:mod:`trainer.fit.torch_dot`), the
  engine for a GPU, and on a CPU the way CI tests what runs on a GPU.

``--device auto`` is CUDA (torch engine) when torch sees a GPU, else the CPU with numba;
``--device cpu`` means numba unless ``--engine torch`` asks otherwise; ``--device cuda`` without a
GPU is a :class:`DeviceUnavailableError`, never a silent fall-back to the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer import TrainerError

DEVICES = ("auto", "cpu", "cuda")
ENGINES = ("auto", "numba", "torch")


class DeviceUnavailableError(TrainerError):
    """The device (or the device/engine pairing) asked for is not available here."""

    exit_code = 5


@dataclass(frozen=True)
class Engine:
    """A resolved engine: ``kind`` (numba or torch) on ``device`` (a torch device string: cpu, cuda, cuda:1)."""

    kind: str = "numba"
    device: str = "cpu"

    @property
    def label(self) -> str:
        """What the manifest's history records, e.g. ``torch/cuda:0``."""
        return f"{self.kind}/{self.device}"

    def torch_device(self) -> torch.device:
        return torch.device(self.device)


def resolve(device: str = "auto", engine: str = "auto", model: str = "dot", cuda_index: int | None = None) -> Engine:
    """The engine for ``--device``/``--engine`` and the model kind; raise DeviceUnavailableError when impossible.

    ``cuda_index`` picks the GPU (a distributed rank's local rank); None: the current one.
    """
    if device not in DEVICES:
        raise DeviceUnavailableError(f"unknown device {device!r} (expected one of {', '.join(DEVICES)})")
    if engine not in ENGINES:
        raise DeviceUnavailableError(f"unknown engine {engine!r} (expected one of {', '.join(ENGINES)})")
    has_cuda = torch.cuda.is_available()
    if device == "cuda" and not has_cuda:
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "torch sees no GPU"
        raise DeviceUnavailableError(f"--device cuda: {why} (use --device cpu or auto)")
    if device == "auto":
        device = "cuda" if has_cuda and engine != "numba" and model == "dot" else "cpu"
    if device == "cuda":
        if engine == "numba":
            raise DeviceUnavailableError("--engine numba runs on the CPU only "
                                         "(use --engine torch or auto with --device cuda)")
        if model != "dot":
            raise DeviceUnavailableError(f"--model {model} trains on the CPU only; --device cuda is for dot")
        index = torch.cuda.current_device() if cuda_index is None else cuda_index
        if index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"GPU {index} asked for, but torch sees {torch.cuda.device_count()} "
                                         "(a distributed job runs one process per GPU; --device cpu runs it on gloo)")
        return Engine("torch", f"cuda:{index}")
    if model != "dot":
        if engine == "numba":
            raise DeviceUnavailableError(f"--model {model} trains with torch autograd; --engine numba is for dot")
        return Engine("torch", "cpu")  # nn is always torch ops on the CPU (trainer/fit/nn.py)
    return Engine("torch" if engine == "torch" else "numba", "cpu")
