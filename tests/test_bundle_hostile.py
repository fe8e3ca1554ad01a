"""Hostile bundles (issue 27): everything in a bundle is untrusted input (docs/contributing.md,
"Three rules learned the hard way"). Each bundle here is crafted by ``tests/bundle_forge.py``;
none is checked in."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from bundle_forge import forge, forge_bomb, manifest_dict

from xception_trt.bundle.cache import resolve
from xception_trt.bundle.facts import DeviceFacts
from xception_trt.bundle.format import MANIFEST, Bundle, Manifest
from xception_trt.errors import BundleError

#: A CPU machine with ONNX Runtime: opening a bundle copies its ONNX member into the cache.
CPU = DeviceFacts(ort_version="1.x", ort_providers=("CPUExecutionProvider",), onnx=True,
                  gpu_reason="no NVIDIA driver found")


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root`` except ``skip``'s subtree: kind and content hash (files),
    link target (links)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here == skip or skip in here.parents:
            continue
        for name in dirnames + filenames:
            p = here / name
            if p == skip:
                continue
            if p.is_symlink():
                out[str(p)] = ("link", os.readlink(p))
            elif p.is_file():
                out[str(p)] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[str(p)] = ("dir", "")
    return out


def _aim(member: str, sha: str):
    def edit(m):
        m["members"][member]["sha256"] = sha
    return edit


# -- item 1: no manifest field reaches a path before it is verified ---------------------------

@pytest.mark.parametrize("sha,name,message", [
    ("../../victim/q", None, "invalid SHA-256"),         # the lock file landed in victim/
    ("../../victim/v", None, "invalid SHA-256"),
    ("/victim/q", None, "invalid SHA-256"),
    ("A" * 64, None, "invalid SHA-256"),
    ("ab" * 8, None, "invalid SHA-256"),
    (None, "/victim/fp32.onnx", "invalid member"),
    (None, "../victim/fp32.onnx", "invalid member"),
    (None, "onnx/../../victim/fp32.onnx", "invalid member"),
    (None, "onnx/x/..", "invalid member"),
    (None, "./onnx/fp32.onnx", "invalid member"),
    (None, "..\\victim\\fp32.onnx", "invalid member"),
])
def test_manifest_fields_aimed_outside_the_cache_touch_nothing(tmp_path, sha, name, message):
    """Issue 27 item 1: hashes and member names aimed outside the cache are refused when the
    manifest is parsed; nothing outside the cache is created, changed or deleted."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "v.json").write_text("{}")  # what the crafted bundle of the issue deleted
    (victim / "q").write_text("keep")
    if name is not None:  # the zip entry carries the crafted name too
        bad = forge(tmp_path / "bad.xtrt", {name: b"not really onnx", "labels.txt": b"x\n"},
                    variants={"fp32": name})
    else:
        bad = forge(tmp_path / "bad.xtrt", edit=_aim("onnx/fp32.onnx", sha))
    cache = tmp_path / "cache"
    before = _snapshot(tmp_path, cache)
    with pytest.raises(BundleError, match=message):
        resolve(bad, precision="fp32", cache_dir=cache, facts=CPU)
    assert _snapshot(tmp_path, cache) == before


def _good(tmp_path: Path, tiny_onnx_files) -> Path:
    """A valid bundle of the tiny FP32 graph."""
    from xception_trt.onnx_meta import read_file_metadata

    graph = Path(tiny_onnx_files["float"])
    spec = read_file_metadata(graph).spec
    return forge(tmp_path / "good.xtrt", {"onnx/fp32.onnx": graph.read_bytes(),
                                          "labels.txt": b"a\n"},
                 edit=lambda m: m.update(model_spec=spec.to_dict()))


def test_a_cache_folder_linked_outside_is_refused(tmp_path, tiny_onnx_files):
    """Issue 27 item 1, symlinked folders: a folder of the cache replaced by a link to
    elsewhere is refused, and nothing is written through it."""
    good = _good(tmp_path, tiny_onnx_files)
    cache, outside = tmp_path / "cache", tmp_path / "outside"
    outside.mkdir()
    (cache / "onnx").parent.mkdir()
    (cache / "onnx").symlink_to(outside, target_is_directory=True)
    before = _snapshot(tmp_path, cache)
    with pytest.raises(BundleError, match="leads outside the cache"):
        resolve(good, precision="fp32", cache_dir=cache, facts=CPU)
    assert _snapshot(tmp_path, cache) == before
    assert list(outside.iterdir()) == []


def test_a_tampered_member_is_refused_before_a_cache_file_or_lock_is_made(tmp_path):
    """Issue 27 item 1: a member is verified before anything is written for it (the old code
    made the lock file named after the stated hash, then found the mismatch)."""
    bad = forge(tmp_path / "bad.xtrt", edit=_aim("onnx/fp32.onnx", "0" * 64))
    cache = tmp_path / "cache"
    with pytest.raises(BundleError, match="does not match the SHA-256"):
        resolve(bad, precision="fp32", cache_dir=cache, facts=CPU)
    assert [p for p in (cache / "onnx").iterdir()] == []


def test_duplicate_member_names_in_the_manifest_data_are_refused():
    """A name that normalises to another (``onnx//fp32.onnx``) is refused as not normalised,
    so two manifest keys cannot name one file."""
    data = manifest_dict({"onnx/fp32.onnx": b"x"})
    data["members"]["onnx//fp32.onnx"] = data["members"]["onnx/fp32.onnx"]
    with pytest.raises(BundleError, match="invalid member"):
        Manifest.from_dict(data, sidecars={}, where="m")


# -- item 2: zip bombs ----------------------------------------------------------------------

GIB = 1 << 30
# VmHWM (proc(5): "peak resident set size") of the child's own address space. Not ru_maxrss:
# Linux carries the parent's high-water mark into it across fork/vfork + exec (exec_mmap keeps
# the larger of the old and new mm's), so a pytest process holding torch would be measured.
_PEAK = """
import sys
from xception_trt.cli import main
rc = main(sys.argv[1:])
with open("/proc/self/status") as fh:
    hwm = next(line.split()[1] for line in fh if line.startswith("VmHWM:"))
print("PEAK_KIB", hwm, file=sys.stderr)
sys.exit(rc)
"""


def _run_peak(args, cwd: Path) -> tuple[int, int, str]:
    """Run the CLI in a child process; its exit code, peak RSS in MiB (its VmHWM) and
    stderr."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]) + os.pathsep
               + str(Path(__file__).resolve().parent), XDG_CACHE_HOME=str(cwd / "xdg"))
    proc = subprocess.run([sys.executable, "-c", _PEAK, *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)
    peak = [ln for ln in proc.stderr.splitlines() if ln.startswith("PEAK_KIB")]
    assert peak, proc.stderr
    return proc.returncode, int(peak[-1].split()[1]) // 1024, proc.stderr


@pytest.fixture(scope="module")
def bombs(tmp_path_factory, tiny_onnx_files):
    root = tmp_path_factory.mktemp("bombs")
    graph = {"onnx/fp32.onnx": Path(tiny_onnx_files["float"]).read_bytes()}
    return {
        "labels, lying": forge_bomb(root / "labels_lying.xtrt", "labels.txt", GIB, honest=False,
                                    others=graph),
        "labels, honest": forge_bomb(root / "labels_honest.xtrt", "labels.txt", GIB,
                                     honest=True, others=graph),
        "onnx, lying": forge_bomb(root / "onnx_lying.xtrt", "onnx/fp32.onnx", GIB, honest=False,
                                  others={"labels.txt": b"cat\ndog\nbird\n"}),
    }


@pytest.mark.slow
@pytest.mark.parametrize("command,which,code,message", [
    ("doctor", "labels, lying", 2, "labels.txt is 1073741824 bytes but its manifest says 13"),
    ("doctor", "labels, honest", 0, "members verified"),
    ("infer", "onnx, lying", 2, "onnx/fp32.onnx is 1073741824 bytes but its manifest says 13"),
])
def test_a_zip_bomb_stays_under_200_mb(bombs, tmp_path, image_folder, command, which, code,
                                       message):
    """Issue 27 item 2: peak RSS of ``doctor``/``infer`` on a bundle whose member inflates to
    1 GiB stays under 200 MB (a size that lies is refused before inflating; an honest one is
    hashed in 1 MiB chunks)."""
    facts = tmp_path / "cpu.json"
    facts.write_text(json.dumps(CPU.to_dict()))
    args = [command, str(bombs[which])]
    if command == "doctor":
        args += ["--facts", str(facts)]
    else:
        args += [str(next(p for p in Path(image_folder).rglob("*") if p.is_file()))]
    rc, peak_mb, err = _run_peak(args, tmp_path)
    out = err if rc else err + "members verified"  # doctor prints its report on stdout
    assert rc == code, err
    assert message in out
    assert peak_mb < 200, f"peak RSS {peak_mb} MiB"


# -- items 6 and 15: duplicate entries, unknown compression, encryption -------------------------

def _patch_entry(path: Path, name: str, *, method: int | None = None,
                 flag: int | None = None) -> None:
    """Set the compression method / general-purpose flag bits of entry ``name`` in both its
    local header and its central-directory record (PKWARE APPNOTE 4.3.7 and 4.3.12: method at
    offsets 8 and 10, flags at 6 and 8)."""
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        local = zf.getinfo(name).header_offset
    pos = raw.find(b"PK\x01\x02")
    while pos >= 0:
        n = int.from_bytes(raw[pos + 28:pos + 30], "little")
        if raw[pos + 46:pos + 46 + n] == name.encode():
            for base, m_off, f_off in ((local, 8, 6), (pos, 10, 8)):
                if method is not None:
                    raw[base + m_off:base + m_off + 2] = method.to_bytes(2, "little")
                if flag is not None:
                    raw[base + f_off:base + f_off + 2] = flag.to_bytes(2, "little")
        pos = raw.find(b"PK\x01\x02", pos + 4)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("how,message", [
    ("unknown compression", "uses compression method 6"),
    ("encrypted", "is encrypted"),
    ("duplicate manifest", "holds member 'manifest.json' twice"),
    ("duplicate member", "holds member 'labels.txt' twice"),
])
def test_odd_zip_entries_are_one_clear_error(tmp_path, how, message):
    """Issue 27 items 6 and 15: zipfile raises NotImplementedError/RuntimeError on these, and
    reads the last of two same-named entries while ``unzip`` shows the first."""
    path = tmp_path / "odd.xtrt"
    if how == "duplicate manifest":
        other = manifest_dict({"onnx/fp32.onnx": b"other"})
        with pytest.warns(UserWarning, match="Duplicate name"):
            forge(path, extra=[(MANIFEST, json.dumps(other).encode())])
    elif how == "duplicate member":
        with pytest.warns(UserWarning, match="Duplicate name"):
            forge(path, extra=[("labels.txt", b"cat\ndog\nbird\n")])
    else:
        forge(path)
        _patch_entry(path, "onnx/fp32.onnx", **({"method": 6} if how == "unknown compression"
                                                else {"flag": 1}))
    with pytest.raises(BundleError, match=message):
        with Bundle(path) as b:
            b.verify()
    with pytest.raises(BundleError, match=message):
        resolve(path, precision="fp32", cache_dir=tmp_path / "cache", facts=CPU)


# -- items 16 and 17: the graph is what the manifest says; a warm cache re-verifies --------------

def _graphs(tiny_onnx_files) -> dict[str, bytes]:
    fp32 = Path(tiny_onnx_files["float"]).read_bytes()
    return {"onnx/fp32.onnx": fp32, "onnx/int8.onnx": fp32, "labels.txt": b"a\n"}


def test_a_variant_whose_graph_is_another_precision_is_refused(tiny_onnx_files, tmp_path):
    """Issue 27 item 16: a hash-consistent bundle whose int8 member is the FP32 graph ran FP32
    as "int8"; the graph's own metadata (onnx_meta) now has to agree with the manifest."""
    from xception_trt.onnx_meta import read_file_metadata

    spec = read_file_metadata(tiny_onnx_files["float"]).spec

    def edit(m):
        m["model_spec"] = spec.to_dict()

    bad = forge(tmp_path / "bad.xtrt", _graphs(tiny_onnx_files), edit=edit,
                variants={"fp32": "onnx/fp32.onnx", "int8": "onnx/int8.onnx"})
    with pytest.raises(BundleError, match="listed as the int8 variant but its graph is fp32"):
        resolve(bad, precision="int8", cache_dir=tmp_path / "cache", facts=CPU)
    assert resolve(bad, precision="fp32", cache_dir=tmp_path / "cache", facts=CPU).path


@pytest.mark.parametrize("content", [b"", b"garbage, not protobuf \xff\xff"])
def test_doctor_refuses_an_onnx_member_that_is_not_a_graph(content, tmp_path, capsys):
    """Issue 27 item 17: doctor said ONNX Runtime would run a bundle whose ONNX member is empty
    or garbage (hash-consistent), while infer refused it."""
    from xception_trt.cli import main

    bad = forge(tmp_path / "bad.xtrt", {"onnx/fp32.onnx": content, "labels.txt": b"a\n"})
    facts = tmp_path / "cpu.json"
    facts.write_text(json.dumps(CPU.to_dict()))
    code = main(["doctor", str(bad), "--facts", str(facts)])
    err = capsys.readouterr().err
    assert code == 2 and "member onnx/fp32.onnx is not an ONNX model" in err, err


def test_a_warm_cache_does_not_excuse_a_tampered_member(tiny_onnx_files, tmp_path):
    """Issue 27 item 17 (README: a tampered bundle is an error): after a first open filled the
    cache, a bundle whose member was changed since (same size, manifest untouched) is refused;
    the old code served the verified copy from the cache."""
    graphs = _graphs(tiny_onnx_files)
    path = _good(tmp_path, tiny_onnx_files)
    cache = tmp_path / "cache"
    first = resolve(path, precision="fp32", cache_dir=cache, facts=CPU)
    assert not first.cache_hit
    assert resolve(path, precision="fp32", cache_dir=cache, facts=CPU).cache_hit
    raw = bytearray(path.read_bytes())
    graph = graphs["onnx/fp32.onnx"]
    at = raw.find(graph) + len(graph) // 2  # a stored member: its bytes are in the file as is
    raw[at] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="onnx/fp32.onnx"):
        resolve(path, precision="fp32", cache_dir=cache, facts=CPU)


def test_engine_cache_errors_name_a_fix_that_exists(tiny_onnx_files, tmp_path, monkeypatch,
                                                    capsys, image_folder):
    """Issue 27 item 22: every engine-cache error told the user to pass --cache-dir, which no
    command has; the fix named now is XDG_CACHE_HOME (and cache_dir= in Python)."""
    from xception_trt.cli import main

    good = _good(tmp_path, tiny_onnx_files)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    image = next(p for p in Path(image_folder).rglob("*") if p.is_file())
    assert main(["infer", str(good), str(image)]) == 2
    err = capsys.readouterr().err
    assert "--cache-dir" not in err and "set XDG_CACHE_HOME" in err, err
    assert err.count("error:") == 1
