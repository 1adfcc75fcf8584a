"""The code sandbox's parts: limits, outcome classification, the refusals and error messages,
and the runner's mechanics (limits, process group, clean directory) on the opt-in unsandboxed
backend, which needs no system tool. The hostile programs are in test_code_sandbox_hostile.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

import pytest

from llm.sandbox import Job, Limits, SandboxPool, SandboxUnavailable, get_backend, run_program
from llm.sandbox.backend import slot_uid
from llm.sandbox.runner import classify, reap_uid

FAST = Limits(time_s=1.0, memory_mb=256, output_bytes=4096, tmp_mb=8)


def test_limits_validate_and_map_to_prlimit():
    lim = Limits(time_s=2.5, memory_mb=128, output_bytes=1000, max_files=16, max_processes=3)
    assert lim.cpu_s == 3
    args = lim.prlimit_args()
    assert args[0] == "prlimit" and args[-1] == "--"
    assert "--cpu=3:4" in args and f"--as={128 << 20}:{128 << 20}" in args
    assert "--fsize=1000:1000" in args and "--nofile=16:16" in args
    assert lim.nproc_args() == ["prlimit", "--nproc=3:3", "--"]
    for bad in (
        {"time_s": 0},
        {"time_s": float("inf")},
        {"time_s": True},
        {"memory_mb": 10},
        {"output_bytes": 0},
        {"max_processes": 1.5},
        {"max_files": 4},
    ):
        with pytest.raises(ValueError, match="Limits."):
            Limits(**bad)


@pytest.mark.parametrize(
    "kwargs, status",
    [
        ({"timed_out": True, "exit_code": None, "sig": 9}, "timeout"),
        ({"timed_out": False, "exit_code": 152, "sig": signal.SIGXCPU}, "timeout"),
        ({"timed_out": False, "exit_code": None, "sig": None}, "sandbox_error"),
        ({"timed_out": False, "exit_code": 0, "sig": None, "stdout_size": 4096}, "output_limit"),
        ({"timed_out": False, "exit_code": 1, "sig": None, "stdout_size": 5000}, "output_limit"),
        ({"timed_out": False, "exit_code": 0, "sig": None}, "ok"),
        (
            {"timed_out": False, "exit_code": 1, "sig": None, "stderr": b"Tb\nMemoryError\n"},
            "memory",
        ),
        (
            {
                "timed_out": False,
                "exit_code": 1,
                "sig": None,
                "stderr": b"MemoryError\nValueError: x",
            },
            "error",
        ),
        ({"timed_out": False, "exit_code": 139, "sig": 11}, "error"),
    ],
)
def test_classify_hand_values(kwargs, status):
    kwargs = {"stdout_size": 0, "stderr": b"", "limits": FAST, **kwargs}
    assert classify(**kwargs) == status


def test_missing_bwrap_names_the_package():
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        get_backend("bwrap", bwrap="/nonexistent/bwrap")


def test_bwrap_refused_by_kernel_says_why(tmp_path):
    """Where the kernel refuses namespaces (a container without the right, user namespaces off),
    bwrap fails at set-up: the pool refuses to start and the message says how to fix it."""
    fake = tmp_path / "bwrap"
    fake.write_text(
        "#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the "
        "kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(SandboxUnavailable, match="user namespaces") as info:
        SandboxPool(1, bwrap=str(fake))
    assert "unsandboxed" in str(info.value)


def test_unsandboxed_needs_explicit_opt_in():
    with pytest.raises(SandboxUnavailable, match="allow_unsandboxed=True"):
        SandboxPool(1, backend="unsandboxed")
    with pytest.raises(ValueError, match="unknown sandbox backend"):
        get_backend("docker")


def test_reaper_refuses_ordinary_uids():
    with pytest.raises(ValueError, match="not a sandbox slot uid"):
        reap_uid(0)
    with pytest.raises(ValueError, match="not a sandbox slot uid"):
        reap_uid(1000)
    assert slot_uid(0, pid=1) == (1 << 30) + 64 and slot_uid(63, pid=1) == (1 << 30) + 127
    with pytest.raises(ValueError):
        slot_uid(64)


@pytest.fixture(scope="module")
def loose():
    return SandboxPool(2, backend="unsandboxed", allow_unsandboxed=True)


def test_runner_mechanics_unsandboxed(loose, monkeypatch, tmp_path):
    """Limits, stdin, scrubbed environment, no inherited descriptors and a removed directory
    hold on every backend (the isolation itself is bwrap's: see the hostile suite)."""
    monkeypatch.setenv("TICGRPO_PARENT_SECRET", "s3cr3t")
    keep = os.open(os.devnull, os.O_RDONLY)  # not inheritable; must not show up inside
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # run directories land here
    jobs = [
        Job("print(sum(map(int, input().split())))", b"2 3 4\n"),
        Job("import os\nprint(sorted(os.environ))\nprint(sorted(os.listdir('/proc/self/fd')))"),
        Job("while True:\n    pass"),
        Job("x = bytearray(10 ** 9)"),
        Job("print('x' * 10 ** 6)"),
        Job("import sys\nsys.exit(4)"),
        Job("import os\nprint(os.getpgrp() == os.getpid(), os.getsid(0) == os.getpid())"),
    ]
    try:
        out = loose.run(jobs, FAST)
    finally:
        os.close(keep)
    assert [r.status for r in out] == [
        "ok",
        "ok",
        "timeout",
        "memory",
        "output_limit",
        "error",
        "ok",
    ]
    assert out[0].stdout == b"9\n"
    env, fds = out[1].stdout.decode().splitlines()
    assert env == "['HOME', 'LANG', 'LC_ALL', 'PATH']" and b"s3cr3t" not in out[1].stdout
    assert fds == "['0', '1', '2', '3']"  # stdio and the listdir's own descriptor
    assert out[2].seconds < FAST.time_s + 1.5
    assert len(out[4].stdout) == FAST.output_bytes
    assert out[5].exit_code == 4
    assert out[6].stdout == b"True True\n"  # its own session and process group
    assert list(tmp_path.iterdir()) == []  # every run directory removed


def test_group_cut_short(loose):
    """After a rejected result, the group's jobs that have not started are skipped; other
    groups run on."""
    jobs = [Job("import sys\nsys.exit(1)", group="a"), Job("print(1)", group="b")]
    jobs += [Job("print(2)", group="a"), Job("print(3)", group="b")]
    out = loose.run(jobs, FAST, keep_going=lambda i, r: r.status == "ok")
    assert [r.status for r in out] == ["error", "ok", "skipped", "ok"]


def test_pool_worker_count_checked():
    for bad in (0, 64, 2.0, True):
        with pytest.raises(ValueError, match="workers"):
            SandboxPool(bad, backend="unsandboxed", allow_unsandboxed=True)


@pytest.mark.skipif(
    shutil.which("bwrap") is None and not os.environ.get("CI"), reason="bubblewrap not installed"
)  # CI installs it (.ci/run): there a missing bwrap fails
def test_bwrap_program_is_read_only_and_tmp_is_private():
    backend = get_backend("bwrap")
    src = (
        "import os\nprint(os.access('/sandbox/main.py', os.W_OK), os.listdir('/tmp'))\n"
        "open('/tmp/mine', 'w').write('x')"
    )
    first = run_program(src, b"", FAST, backend, slot=0)
    second = run_program(src, b"", FAST, backend, slot=0)
    assert first.status == second.status == "ok"
    assert first.stdout == second.stdout == b"False []\n"  # no state left from run to run
    assert not os.path.exists("/tmp/mine")  # the sandbox's /tmp is its own tmpfs
