"""torch.compile of the players' forwards, in place, falling back to eager with one warning where it fails.

In place: the network's own ``__call__`` runs the compiled function (what ``nn.Module.compile`` is meant to do; in
this torch it compiles nothing, as its top frame is torch's own ``_call_impl``), so the module, its state_dict keys
and its checkpoints are the eager network's, with no ``_orig_mod.`` prefix: a compiled run resumes compiled or
eager, and a checkpoint loads anywhere. Hooks (spectral normalisation's pre-forward hook) are traced with the
forward. A module deep-copied after compiling shares the original's compiled call: compile after making copies.

Double backward: AOTAutograd cannot differentiate a compiled graph twice ("does not currently support double
backward"), which R1, R2 and WGAN-GP need (the gradient w.r.t. D's input, with create_graph, then the step's
backward through it). Such a pass runs the eager networks under ``Compiler.eager()`` (the GAN does so for
every critic call on a penalty's input); the other passes of the step stay compiled.

Parametrized networks (spectral normalisation) stay eager, with one warning: their power iteration updates its
vectors in place in every training forward, and a compiled graph saves those vectors for its backward, so a
network run twice before one backward (D on reals, then on fakes) fails there ("modified by an inplace
operation"), after the forward, where no fallback can catch it.

Compilation is lazy: a backend that cannot build (no C++ compiler, an operation it does not support) raises at a
first call, not at ``torch.compile``. The first failure of any compiled network turns every network of the same
``Compiler`` back to eager for the rest of the process and warns once; the call that failed runs again eagerly,
so an error of the network itself still surfaces, as the eager network's.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize


class Compiler:
    """Compiles networks in place with one ``torch.compile`` setting, and owns their common fallback.

    Args:
        mode: torch.compile's mode (None: its default; "reduce-overhead" adds CUDA graphs, "max-autotune").
        backend: torch.compile's backend ("inductor"; "aot_eager" traces without generating code).
    """

    def __init__(self, mode: str | None = None, backend: str = "inductor"):
        self.mode, self.backend = mode, backend
        self.failure: str | None = None  # why compilation was given up, once it was
        self._compiled: list[nn.Module] = []
        self._eager_depth = 0

    def compile(self, module: nn.Module) -> None:
        """``module(...)`` runs compiled from now on (until a failure); nothing about its state changes."""
        if self.failure is not None:
            return
        if any(parametrize.is_parametrized(layer) for layer in module.modules()):
            warnings.warn(f"model.compile: {type(module).__name__} has parametrized layers (spectral normalisation), "
                          f"whose in-place updates break compiled backwards; it runs eagerly", RuntimeWarning,
                          stacklevel=3)
            return

        def eager_call(*args: Any, **kwargs: Any) -> Any:
            return module._call_impl(*args, **kwargs)

        try:
            compiled = torch.compile(eager_call, mode=self.mode, backend=self.backend)
        except Exception as err:  # an unknown backend or mode may be refused here already
            self.fall_back(err)
            return
        module._compiled_call_impl = self._guarded(compiled, eager_call)
        self._compiled.append(module)

    def _guarded(self, compiled: Callable[..., Any], eager_call: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if self.failure is not None or self._eager_depth:
                return eager_call(*args, **kwargs)
            try:
                return compiled(*args, **kwargs)
            except Exception as err:
                self.fall_back(err)
                return eager_call(*args, **kwargs)

        return call

    def fall_back(self, err: BaseException) -> None:
        """Every network of this compiler runs eagerly from now on; warns the first time."""
        if self.failure is None:
            self.failure = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
            warnings.warn(f"model.compile: torch.compile (backend {self.backend!r}, mode {self.mode!r}) failed, "
                          f"training continues without it: {self.failure}", RuntimeWarning, stacklevel=3)
        for module in self._compiled:
            module._compiled_call_impl = None
        self._compiled.clear()

    @contextmanager
    def eager(self) -> Iterator[None]:
        """The block runs every network of this compiler eagerly (a pass that will be differentiated twice)."""
        self._eager_depth += 1
        try:
            yield
        finally:
            self._eager_depth -= 1

    @property
    def active(self) -> bool:
        """True while some network runs compiled."""
        return bool(self._compiled)

