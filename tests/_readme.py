"""Run the code blocks of a Markdown file the way a user pastes them into one terminal.

The convention every README section follows (and that this harness enforces):

- Fenced blocks tagged ``bash``/``sh``/``shell`` or ``python`` run in document order in ONE
  persistent bash session, started in the given directory: ``export``, ``cd``, shell
  variables and background jobs (``&``, ``kill %1``) carry over from block to block, as in a
  user's terminal. A Python block runs as ``python - < block.py`` in that session's cwd and
  environment. Blocks in other languages (``text``, ``json``, ...) are not run.
- A block preceded by the line ``<!-- readme: skip -->`` (blank lines may sit between) is
  illustration only and is not run.
- A bash block fails when any command in it fails outside a condition (the rule of
  ``set -e``, recorded with an ERR trap so the session survives) or with ``pipefail``;
  a Python block fails on a non-zero exit status. The error shows the block, its line, its
  output and the exit status.
- An opening fence that is never closed, or a new opening fence (```` ```lang ````) inside a
  block, is an error before anything runs: it is how a missing closing fence shows.
- After the last block the session waits (with a deadline) for background jobs it started;
  one still running means a README section did not stop its server: the harness fails,
  and in every case kills the whole process group, so nothing outlives a test.

``substitutions`` maps a block's exact text to what runs instead (``None``: nothing), for
set-up commands that cannot run inside a test (installing the checkout, recursing into
``pytest``).
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

SKIP_MARKER = "<!-- readme: skip -->"
BASH_LANGS = frozenset({"bash", "sh", "shell"})
PYTHON_LANGS = frozenset({"python", "py"})
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)\s*$")
_DONE = "__servekit_readme_block_done__"


class ReadmeError(AssertionError):
    """The Markdown is malformed or one of its blocks failed; the message says which."""


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language tag, text, 1-based line of the opening fence and
    whether the skip marker precedes it."""

    lang: str
    code: str
    line: int
    skip: bool

    @property
    def runnable(self) -> bool:
        """Whether the harness runs this block (a bash or Python block not marked skip)."""
        return not self.skip and (self.lang in BASH_LANGS or self.lang in PYTHON_LANGS)


def parse_blocks(text: str, source: str = "README.md") -> list[Block]:
    """The fenced code blocks of ``text`` in order.

    Raises ReadmeError for a fence that is not closed by the end of the file, or for an
    opening fence with a language tag found inside a block (its closing fence is missing).
    """
    blocks: list[Block] = []
    lines = text.splitlines()
    i = 0
    last_text = ""
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                last_text = lines[i].strip()
            i += 1
            continue
        fence, lang, start = m.group(1), m.group(2), i
        body: list[str] = []
        i += 1
        while True:
            if i >= len(lines):
                raise ReadmeError(f"{source}:{start + 1}: code fence {fence}{lang} is never closed")
            inner = _FENCE.match(lines[i])
            if inner and inner.group(1).startswith(fence[0]) and len(inner.group(1)) >= len(fence):
                if not inner.group(2):
                    break
                raise ReadmeError(
                    f"{source}:{start + 1}: code fence {fence}{lang} is not closed before the "
                    f"next opening fence at line {i + 1}"
                )
            body.append(lines[i])
            i += 1
        blocks.append(Block(lang, "\n".join(body) + "\n", start + 1, last_text == SKIP_MARKER))
        last_text = ""
        i += 1
    return blocks


class _Session:
    """One bash process fed block by block; each block's output goes to a file."""

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            cwd=cwd,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: background jobs are killed with it
        )
        self._pending = b""
        self.selector = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self.selector.register(self.proc.stdout, selectors.EVENT_READ)
        self._send("set -o pipefail")

    def _send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        self.proc.stdin.flush()

    def run(self, command: str, timeout: float) -> str | None:
        """Run ``command`` in the session; the status line it reports, or None on timeout.

        The session's own output (block output goes to files) is read raw and split here, so
        a line bash prints itself (a job's "Terminated" notice) never hides the status line
        in a buffer that ``select`` cannot see."""
        self._send(f"{command}\nprintf '%s %s\\n' {_DONE} \"$__status\"")
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            for line in self._pending.decode(errors="replace").splitlines():
                if line.startswith(_DONE):
                    self._pending = b""
                    return line[len(_DONE) :].strip()
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self.selector.select(left):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise ReadmeError("the bash session exited (a block ran `exit`?)")
            self._pending += chunk

    def close(self) -> None:
        """Kill the session and everything it started (its process group)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                continue
        self.selector.close()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()


def _block_command(block: Block, index: int, scratch: Path) -> str:
    out = scratch / f"block{index}.out"
    if block.lang in PYTHON_LANGS:
        script = scratch / f"block{index}.py"
        script.write_text(block.code)
        return f"python - < '{script}' > '{out}' 2>&1; __status=$?"
    script = scratch / f"block{index}.sh"
    script.write_text(block.code)
    # The ERR trap records the first failing command without ending the session, so the
    # block's exports and background jobs persist for the next block, as in a terminal.
    return (
        "__first_error=; trap '__first_error=${__first_error:-"
        '"exit status $? at line $LINENO: $BASH_COMMAND"}\' ERR; '
        f"source '{script}' > '{out}' 2>&1 < /dev/null; "
        "trap - ERR; "
        "__status=${__first_error:-0}"
    )


def _failure(source: str, block: Block, status: str, output: str) -> ReadmeError:
    shown = output if len(output) <= 6000 else "...\n" + output[-6000:]
    return ReadmeError(
        f"{source}:{block.line}: {block.lang} block failed ({status})\n"
        f"--- block ---\n{block.code}--- output ---\n{shown}"
    )


def run_markdown(
    path: Path,
    cwd: Path,
    *,
    substitutions: dict[str, str | None] | None = None,
    env: dict[str, str] | None = None,
    block_timeout: float = 900.0,
    jobs_timeout: float = 60.0,
) -> list[Block]:
    """Run every runnable block of the Markdown file ``path`` in one bash session in ``cwd``.

    ``substitutions`` replaces a block whose stripped text matches a key with the value
    (``None``: the block is not run); ``env`` is the session's environment (default: this
    process's, with this interpreter's directory first on PATH so ``python`` and ``servekit``
    are the ones under test). Returns the blocks that ran.

    Raises ReadmeError for a malformed file, a failing block, a block running longer than
    ``block_timeout`` seconds, or background jobs still running ``jobs_timeout`` seconds
    after the last block.
    """
    source = path.name
    blocks = parse_blocks(path.read_text(), source)
    subs = {key.strip(): value for key, value in (substitutions or {}).items()}
    if env is None:
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    scratch = cwd / ".readme-harness"
    scratch.mkdir(parents=True, exist_ok=True)
    session = _Session(cwd, env, scratch)
    ran: list[Block] = []
    try:
        for index, block in enumerate(blocks):
            if not block.runnable:
                continue
            key = block.code.strip()
            if key in subs:
                replacement = subs[key]
                if replacement is None:
                    continue
                block = Block("bash", replacement + "\n", block.line, False)
            status = session.run(_block_command(block, index, scratch), block_timeout)
            output = (scratch / f"block{index}.out").read_text(errors="replace")
            if status is None:
                raise _failure(source, block, f"still running after {block_timeout:g} s", output)
            if status != "0":
                label = status if not status.isdigit() else f"exit status {status}"
                raise _failure(source, block, label, output)
            ran.append(block)
        jobs = scratch / "jobs.txt"
        status = session.run(f"jobs -l > '{jobs}'; wait; __status=0", jobs_timeout)
        if status is None:
            raise ReadmeError(
                f"{source}: background jobs still running {jobs_timeout:g} s after the last "
                "block: a section starts a server (`&`) and never stops it (`kill %1`, then "
                f"`wait %1` before the next server starts):\n{jobs.read_text()}"
            )
    finally:
        session.close()
    return ran
