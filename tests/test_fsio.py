"""Atomic writers and owner-named temporaries: a temp left by a killed writer (dead pid) is swept
by the next write of the same target; a live writer's, another host's and foreign files stay."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from xception_trt import fsio


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert not fsio.pid_alive(proc.pid)
    return proc.pid


def _host() -> str:
    return fsio._host_tag()


def test_pid_alive():
    assert fsio.pid_alive(os.getpid())
    assert not fsio.pid_alive(_dead_pid())
    assert not fsio.pid_alive(0)


def test_temp_sibling_names_its_owner(tmp_path):
    target = tmp_path / "x.onnx"
    tmp = fsio.temp_sibling(target)
    assert tmp.parent == tmp_path and tmp.is_file()
    assert tmp.name.startswith(f".x.onnx.{os.getpid()}-{_host()}-") and tmp.name.endswith(".tmp")
    folder = fsio.temp_sibling(target, directory=True, suffix=".old")
    assert folder.is_dir() and folder.name.endswith(".old")


@pytest.mark.parametrize("writer", ["bytes", "json"])
def test_atomic_write_sweeps_stale_temps_of_dead_writers_only(tmp_path, writer):
    target = tmp_path / "x.onnx"
    dead, host = _dead_pid(), _host()
    stale_file = tmp_path / f".x.onnx.{dead}-{host}-0123abcd.tmp"
    stale_file.write_bytes(b"half")
    stale_dir = tmp_path / f".x.onnx.{dead}-{host}-89abcdef.old"
    (stale_dir / "sub").mkdir(parents=True)
    live = tmp_path / f".x.onnx.{os.getpid()}-{host}-00000000.tmp"  # a writer still at work
    live.write_bytes(b"busy")
    other_host = tmp_path / f".x.onnx.{dead}-ffffff-00000000.tmp"
    if host == "ffffff":  # pragma: no cover - one host in 16 million
        other_host = tmp_path / f".x.onnx.{dead}-000000-00000000.tmp"
    other_host.write_bytes(b"nfs")
    other_target = tmp_path / f".y.onnx.{dead}-{host}-00000000.tmp"
    other_target.write_bytes(b"not ours")
    old_style = tmp_path / ".x.onnx.k2j3h4g5.tmp"  # no owner in the name: never guessed at
    old_style.write_bytes(b"old")
    if writer == "bytes":
        fsio.atomic_write_bytes(target, b"new")
    else:
        fsio.atomic_write_json(target, {"a": 1})
    assert target.exists()
    assert not stale_file.exists() and not stale_dir.exists()
    for kept in (live, other_host, other_target, old_style):
        assert kept.exists(), kept.name
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    assert leftovers == sorted(["x.onnx", live.name, other_host.name, other_target.name,
                                old_style.name])


def test_owned_temp_dir_sweeps_dead_owners_of_its_prefix_only(tmp_path):
    dead, host = _dead_pid(), _host()
    stale = tmp_path / f"xtrt-int8-{dead}-{host}-0123abcd"
    (stale / "job_0").mkdir(parents=True)
    (stale / "model.onnx").write_bytes(b"copy")
    live = tmp_path / f"xtrt-int8-{os.getpid()}-{host}-0123abcd"
    live.mkdir()
    other_prefix = tmp_path / f"xtrt-fp16-{dead}-{host}-0123abcd"
    other_prefix.mkdir()
    unrelated = tmp_path / "xtrt-int8-notours"
    unrelated.mkdir()
    made = fsio.owned_temp_dir("xtrt-int8-", tmp_path)
    assert made.is_dir() and made.name.startswith(f"xtrt-int8-{os.getpid()}-{host}-")
    assert (made.stat().st_mode & 0o777) == 0o700
    assert not stale.exists()
    assert live.exists() and other_prefix.exists() and unrelated.exists()


def test_atomic_path_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), fsio.atomic_path(target) as tmp:
        Path(tmp).write_bytes(b"partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
