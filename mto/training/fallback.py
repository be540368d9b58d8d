"""A compiled step that a compile problem cannot fail: compiled with CUDA graphs, else compiled, else eager.

A trial's step runs the first of its ways that works. Where compiling or capturing it raises (Dynamo, Inductor,
the CUDA-graph capture; at the first call or at a later recompile), the call is undone and made again the next
way, from exactly the state it started from: every tensor the step may change (parameters, buffers, the
optimiser's state) and the random generators are kept before a call that may compile or capture, and put back
when that call fails. The method's clock ticks on the host after a step returns, so a failed call never ticks
it. The eager way is the last: its error is the step's own and fails the trial, as it would without compiling.

When the state is kept: before each of the first ``SETTLING_CALLS`` calls of a compiled way, and again after
any call in which something compiled; and at the start of any compile (Dynamo's, AOTAutograd's lazy backward,
or a CUDA-graph recording) during a later call, before the new code runs. A settled compiled step that raises
in a call that compiled nothing raised on its own (out of memory, say): nothing was kept, and the error is the
trial's, as an eager step's would be.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch._dynamo

# The ways a step can run, declared once: what a trial's ``ablation.step`` tag says
CUDA_GRAPHS = "compiled with CUDA graphs"
COMPILED = "compiled"
EAGER = "eager"
# Calls of a newly compiled way during which it may still compile, warm up or capture: Dynamo compiles at the first
# call, Inductor's CUDA-graph trees run the second as a warm-up and record the graph at the third
SETTLING_CALLS = 3


@dataclass(frozen=True)
class Way:
    """One way to run the step: its name (``CUDA_GRAPHS``, ``COMPILED``, ``EAGER``) and the function."""

    name: str
    fn: Callable[..., Any]


def reason_of(err: BaseException) -> str:
    """``<ExceptionType>: <first line of its message>``, at most 200 characters; of the compiler's own error where
    Dynamo wraps it (``BackendCompilerFailed``, whose first line names only the backend)."""
    inner = getattr(err, "inner_exception", None)
    if isinstance(inner, BaseException):
        return f"{type(err).__name__}: {reason_of(inner)}"[:200]
    said = str(err).strip()
    return f"{type(err).__name__}: {said.splitlines()[0][:200]}" if said else type(err).__name__


class Kept:
    """The tensors a step may change and the random generators' states, as they were; ``restore`` puts them back
    in place (same storage: a CUDA graph replays on the same addresses)."""

    def __init__(self, tensors: list[torch.Tensor]):
        self.tensors = tensors
        with torch.no_grad():
            self.copies = [t.detach().clone() for t in tensors]
        self.cpu_rng = torch.get_rng_state()
        self.cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None

    def restore(self) -> None:
        with torch.no_grad():
            for t, c in zip(self.tensors, self.copies):
                t.copy_(c)
                if t.requires_grad:
                    t.grad = None
        torch.set_rng_state(self.cpu_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)


_RUNNING: list[Fallback] = []  # the fallbacks whose call is under way, innermost last


def _on_compile_start(args: Any) -> None:
    if _RUNNING:
        _RUNNING[-1].compiling()


class Fallback:
    """Calls the first of ``ways`` that works (the last one eager); ``state()`` lists the tensors a call may change.

    ``way`` names the way the calls take now; ``failures`` lists each way that failed, ``"<way> failed:
    <reason>"``, in order.
    """

    def __init__(self, ways: Sequence[Way], state: Callable[[], list[torch.Tensor]]):
        if not ways or ways[-1].name != EAGER:
            raise ValueError("the last way of a step is eager")
        self.ways, self.state = list(ways), state
        self.failures: list[str] = []
        self._calls = 0  # calls of the current way since it last compiled
        self._kept: Kept | None = None
        self._compiled = False  # something compiled during the call under way

    @property
    def way(self) -> str:
        return self.ways[0].name

    def describe(self) -> str:
        """How the steps ran, one line: the way, and where it fell back, each failure."""
        return self.way + (f" ({'; '.join(self.failures)})" if self.failures else "")

    def compiling(self) -> None:
        """A compile starts during the call under way, before the code it makes runs: keep the state if not yet."""
        self._compiled = True
        if self._kept is None:
            self._kept = Kept(self.state())

    def __call__(self, *args: Any) -> Any:
        while len(self.ways) > 1:
            callbacks = torch._dynamo.callback_handler.start_callbacks  # emptied by torch._dynamo.reset()
            if _on_compile_start not in callbacks:
                callbacks.append(_on_compile_start)
            self._compiled = False
            self._kept = Kept(self.state()) if self._calls < SETTLING_CALLS else None
            _RUNNING.append(self)
            try:
                out = self.ways[0].fn(*args)
            except Exception as err:  # noqa: BLE001 - whatever compiling raised; the eager way is the arbiter
                if self._kept is None:
                    raise  # a settled way that compiled nothing in this call: the step's own error
                self._kept.restore()
                self.failures.append(f"{self.way} failed: {reason_of(err)}")
                self.ways.pop(0)
                self._calls = 0
                continue
            finally:
                _RUNNING.pop()
                self._kept = None
            self._calls = 0 if self._compiled else self._calls + 1
            return out
        return self.ways[0].fn(*args)
