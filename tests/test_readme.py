"""The README runs as written, and the harness that runs it catches what it must.

``test_readme_runs_as_written`` runs every bash and Python block of README.md in order, in one
bash session in a fresh temporary directory, as a user who pasted them into one terminal (see
``_readme.py`` for the convention). The README's two set-up blocks are treated so:

- ``pip install -e '.[all,dev]' && servekit demo`` runs as ``servekit demo --quick``: the
  package under test is already installed, and the examples need only the files the demo
  writes (``.ci/run`` runs the full demo once, exactly as written);
- ``pytest`` is not run (it is the suite this test belongs to).

Every other block runs unchanged; a block marked ``<!-- readme: skip -->`` is illustration.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

import pytest

from _readme import ReadmeError, parse_blocks, run_markdown

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

README_SUBSTITUTIONS: dict[str, str | None] = {
    "pip install -e '.[all,dev]' && servekit demo": "servekit demo --quick",
    "pytest": None,
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.slow
@pytest.mark.timeout(1800)  # about 3 minutes on an idle 2-core machine, 10+ on a shared one
def test_readme_runs_as_written(tmp_path: Path) -> None:
    ran = run_markdown(README, tmp_path, substitutions=README_SUBSTITUTIONS)
    assert len(ran) >= 15  # the demo and every example after it


def test_readme_set_up_blocks_are_the_ones_substituted() -> None:
    codes = [b.code.strip() for b in parse_blocks(README.read_text()) if b.runnable]
    assert codes[:2] == list(README_SUBSTITUTIONS)


def test_state_carries_over_between_blocks(tmp_path: Path) -> None:
    doc = _write(
        tmp_path,
        """\
        ```bash
        export GREETING=hello
        mkdir sub && cd sub
        sleep 60 > sleep.log 2>&1 &
        ```

        ```python
        import os
        open("from_python.txt", "w").write(os.environ["GREETING"])
        ```

        ```bash
        test "$(cat from_python.txt)" = hello
        kill %1
        ```
        """,
    )
    ran = run_markdown(doc, tmp_path)
    assert [b.lang for b in ran] == ["bash", "python", "bash"]
    assert (tmp_path / "sub" / "from_python.txt").read_text() == "hello"


def test_fails_on_a_broken_bash_block_with_its_output(tmp_path: Path) -> None:
    doc = _write(
        tmp_path,
        """\
        ```bash
        echo before
        ls no-such-file
        echo after
        ```

        ```bash
        touch never-reached
        ```
        """,
    )
    with pytest.raises(ReadmeError) as err:
        run_markdown(doc, tmp_path)
    message = str(err.value)
    assert "doc.md:1: bash block failed" in message
    assert "at line 2: ls no-such-file" in message
    assert "ls no-such-file" in message.split("--- block ---")[1]
    assert "before" in message.split("--- output ---")[1]
    assert not (tmp_path / "never-reached").exists()


def test_fails_on_a_broken_python_block(tmp_path: Path) -> None:
    doc = _write(
        tmp_path,
        """\
        ```python
        print("running")
        raise SystemExit(3)
        ```
        """,
    )
    with pytest.raises(ReadmeError, match=r"doc.md:1: python block failed \(exit status 3\)"):
        run_markdown(doc, tmp_path)


def test_a_failure_inside_a_pipeline_fails_the_block(tmp_path: Path) -> None:
    doc = _write(tmp_path, "```bash\nfalse | cat\n```\n")
    with pytest.raises(ReadmeError, match="bash block failed"):
        run_markdown(doc, tmp_path)


def test_a_handled_failure_does_not_fail_the_block(tmp_path: Path) -> None:
    doc = _write(
        tmp_path, '```bash\nfalse || echo "refused (exit $?)"\nif false; then :; fi\n```\n'
    )
    assert len(run_markdown(doc, tmp_path)) == 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ("intro\n\n```bash\necho hi\n", r"doc.md:7: code fence ```bash is never closed"),
        (
            "```python\nx = 1\n\n## Next\n\n```bash\necho hi\n```\n",
            r"doc.md:5: code fence ```python is not closed before the next opening fence "
            r"at line 10",
        ),
    ],
    ids=["at-end-of-file", "before-next-block"],
)
def test_fails_on_an_unclosed_fence_before_running_anything(
    tmp_path: Path, text: str, expected: str
) -> None:
    doc = _write(tmp_path, "```bash\ntouch ran\n```\n\n" + text)
    with pytest.raises(ReadmeError, match=expected):
        run_markdown(doc, tmp_path)
    assert not (tmp_path / "ran").exists()


def test_skip_marker_and_other_languages_are_not_run(tmp_path: Path) -> None:
    doc = _write(
        tmp_path,
        """\
        <!-- readme: skip -->

        ```bash
        exit 1
        ```

        ```text
        not a command
        ```

        ```bash
        touch ran
        ```
        """,
    )
    assert len(run_markdown(doc, tmp_path)) == 1
    assert (tmp_path / "ran").exists()


def test_substitutions_replace_or_drop_a_block(tmp_path: Path) -> None:
    doc = _write(tmp_path, "```bash\npip install -e .\n```\n\n```bash\npytest\n```\n")
    run_markdown(doc, tmp_path, substitutions={"pip install -e .": "touch set-up", "pytest": None})
    assert (tmp_path / "set-up").exists()


def test_a_server_left_running_fails_and_is_killed(tmp_path: Path) -> None:
    doc = _write(tmp_path, "```bash\nsleep 300 > sleep.log 2>&1 &\necho $! > pid\n```\n")
    with pytest.raises(ReadmeError, match="never stops it"):
        run_markdown(doc, tmp_path, jobs_timeout=1)
    pid = (tmp_path / "pid").read_text().strip()
    state = subprocess.run(["ps", "-o", "stat=", "-p", pid], capture_output=True, text=True)
    assert state.stdout.strip() in ("", "Z"), f"process {pid} still running: {state.stdout}"


def test_a_block_that_hangs_fails_and_is_killed(tmp_path: Path) -> None:
    doc = _write(tmp_path, "```bash\necho waiting\nsleep 300\n```\n")
    with pytest.raises(ReadmeError, match=r"still running after 1 s(.|\n)*waiting"):
        run_markdown(doc, tmp_path, block_timeout=1)


def test_a_job_notice_from_bash_does_not_stall_the_session(tmp_path: Path) -> None:
    # bash itself reports a job killed by a signal on the session's stderr ("Terminated").
    doc = _write(
        tmp_path,
        "```bash\nsleep 300 > s.log 2>&1 &\nkill %1\n```\n\n```bash\ntouch next\n```\n",
    )
    assert len(run_markdown(doc, tmp_path, block_timeout=60)) == 2
    assert (tmp_path / "next").exists()
