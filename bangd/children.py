"""Work on a million entries done by a child interpreter, and the daemon's talk with it.

In a thread, such work still shares the daemon's GIL: every time the event loop wakes (a
control client's line, an aiosqlite answer) it waits for the thread to let go, up to the
switch interval, and one `status` wakes it a dozen times. Measured during a 1M-line parse
in a thread: status answers of 21-35 ms against 1.5 ms otherwise. A child has a GIL of its
own, and its memory is given back whole when it ends: a million strings the daemon never
builds are 70 MiB its resident size never reaches.

The child is a module of this same bangd run by the daemon's own interpreter (`python -I`,
with the daemon's copy of bangd first on its path), so both sides run the same code; its
side is `bangd.child`. Both ways, messages are frames: the length in ASCII digits, a
newline, that many bytes. What the daemon sends is trusted; what a child answers is not
unpickled, only read by the caller as JSON or as ASCII lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

from .child import HEAD_MAX
from .errors import BangdError
from .lines import LinesReceiver, TextLines

_PACKAGE_ROOT: Final = str(Path(__file__).resolve().parent.parent)
_BOOT: Final = (
    "import sys; sys.path.insert(0, sys.argv[1]); "
    "from bangd.child import serve; serve(sys.argv[2])"
)
_PIECE: Final = 1 << 18  # bytes written or read at a time: ~18k entries
# Seconds a child may take over one step (reading what it is sent, one answer): a million
# entries take ~3 s here, so a child this slow hangs, and it holds up its caller's lock.
STEP_LIMIT: Final = 300.0


class ChildFailed(BangdError):
    """The child died, or answered something that is not a frame."""


class Child:
    """One child process and the frames exchanged with it; `async with` it, so that it
    never outlives the work (a cancelled task kills and reaps it)."""

    def __init__(self, proc: asyncio.subprocess.Process, role: str) -> None:
        self._proc = proc
        self.role = role  # what the errors call it: "the parser process"
        self._step_limit = STEP_LIMIT
        assert proc.stderr is not None
        # Read all along: a child that writes much to stderr must never block on the pipe.
        self._errors = asyncio.ensure_future(proc.stderr.read())

    @classmethod
    async def start(cls, module: str, role: str) -> Child:
        """Run `module`'s `child_main(stdin, stdout)`; OSError if no process can start."""
        if not sys.executable:
            raise OSError("this interpreter does not know its own executable")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-I", "-c", _BOOT, _PACKAGE_ROOT, module,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc, role)

    async def __aenter__(self) -> Child:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def send(self, payload: bytes | bytearray | memoryview) -> None:
        """One frame."""
        await self.send_raw(b"%d\n" % len(payload))
        await self.send_raw(payload)

    async def send_pieces(self, pieces: Sequence[bytes | memoryview]) -> None:
        """One frame, made of these pieces (never joined into one copy)."""
        await self.send_raw(b"%d\n" % sum(map(len, pieces)))
        for piece in pieces:
            await self.send_raw(piece)

    async def send_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes as they are (a stream the child reads to its end), a piece at a time: the
        pipe's transport copies whatever the pipe does not take at once, and a 15 MiB
        payload would be in memory twice."""
        stdin = self._proc.stdin
        assert stdin is not None
        view = memoryview(data)
        try:
            async with self._step():
                for start in range(0, len(view), _PIECE):
                    stdin.write(view[start : start + _PIECE])
                    await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            raise await self._failure("ended before it had read its input") from None

    async def end_input(self) -> None:
        """No more frames: the child reads the end of its input."""
        stdin = self._proc.stdin
        assert stdin is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.close()
            await stdin.wait_closed()

    async def receive(self) -> bytes:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            async with self._step():
                return await stdout.readexactly(await self._frame_size())
        except asyncio.IncompleteReadError:
            raise await self._failure() from None

    async def receive_lines(self) -> TextLines:
        """A frame of lines (ASCII, each ended by a newline), indexed as it comes in, and
        kept as its text (`lines`): a million of them are 18 MiB, not 70 of strings."""
        stdout = self._proc.stdout
        assert stdout is not None
        receiver = LinesReceiver()
        async with self._step():
            left = await self._frame_size()
            while left:
                piece = await stdout.read(min(left, _PIECE))
                if not piece:
                    raise await self._failure()
                left -= len(piece)
                try:
                    receiver.add(piece)
                except ValueError as exc:  # not ASCII
                    raise self.garbage(str(exc)) from None
        try:
            return receiver.lines()
        except ValueError as exc:  # the last line unended
            raise self.garbage(str(exc)) from None

    async def _frame_size(self) -> int:
        stdout = self._proc.stdout
        assert stdout is not None
        try:
            head = await stdout.readuntil(b"\n")
        except asyncio.IncompleteReadError:
            raise await self._failure() from None
        except asyncio.LimitOverrunError as exc:
            raise self.garbage(str(exc)) from None
        if len(head) > HEAD_MAX or not head[:-1].isdigit():
            raise self.garbage(f"not a frame: {head[:HEAD_MAX]!r}")
        return int(head)

    def garbage(self, why: str) -> ChildFailed:
        """The error for an answer that is not what was asked (the caller's checks too)."""
        return ChildFailed(f"{self.role} answered garbage ({why})")

    async def finish(self) -> None:
        """Wait for the child to end; an exit but a clean one is its failure."""
        async with self._step():
            await self._proc.wait()
        if self._proc.returncode != 0:
            raise await self._failure()

    @contextlib.asynccontextmanager
    async def _step(self) -> AsyncIterator[None]:
        """One step of the conversation, within the step limit: a child that hangs is
        stopped and said to, rather than holding its caller (and its caller's lock)."""
        try:
            async with asyncio.timeout(self._step_limit):
                yield
        except TimeoutError:
            await self.close()
            raise ChildFailed(
                f"{self.role} did not answer within {self._step_limit:g} s and was stopped"
            ) from None

    async def close(self) -> None:
        if self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
            await asyncio.shield(self._proc.wait())
        await asyncio.shield(self._errors)

    async def _failure(
        self, if_clean: str = "answered garbage (its answer ended early)"
    ) -> ChildFailed:
        """Why the conversation broke: how the child ended, and its last word. A clean
        exit is not a failure of the child's own: `if_clean` says what it did wrong."""
        code = await self._proc.wait()
        if code == 0:
            return ChildFailed(f"{self.role} {if_clean}")
        errors = await asyncio.shield(self._errors)
        lines = errors.decode("utf-8", "replace").strip().splitlines()
        last = f": {lines[-1][:200]}" if lines else ""
        return ChildFailed(f"{self.role} {exit_reason(code)}{last}")


def exit_reason(code: int) -> str:
    """How a process ended, from its return code (negative: the signal that killed it)."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:  # a real-time signal has no name of its own
            name = f"signal {-code}"
        hint = " (out of memory?)" if -code == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"exited with status {code}"
