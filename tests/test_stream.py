"""The stream API and command on short videos the tests encode themselves: the demo's
handwritten digits as frames (lossless FFV1, so decoded frames equal the originals), each
frame's result checked against `infer` on the same frame saved as PNG."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest
from childproc import as_in_a_terminal
from PIL import Image

av = pytest.importorskip("av")

from xception_trt.classifier import Classifier  # noqa: E402
from xception_trt.cli import main  # noqa: E402
from xception_trt.errors import ConfigError, DataError  # noqa: E402

FPS = 10
N_FRAMES = 12


def _digit_frames(n: int = N_FRAMES) -> tuple[list[np.ndarray], list[int]]:
    """The first ``n`` demo digits, 8x8 grey -> 80x96 RGB (nearest, each cell a block)."""
    from xception_trt.demo.data import load_digits_arrays

    images, labels = load_digits_arrays()
    frames = []
    for img in images[:n]:
        big = np.asarray(Image.fromarray(img).resize((96, 80), Image.Resampling.NEAREST))
        rgb = np.stack([big, 255 - big, big // 2], axis=-1)  # three distinct channels
        frames.append(np.ascontiguousarray(rgb))
    return frames, [int(x) for x in labels[:n]]


def encode_video(path: Path, frames: list[np.ndarray], *, fps: int = FPS) -> list[tuple[int, int]]:
    """Encode RGB frames losslessly (FFV1 in Matroska); returns each packet's (pos, size)."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", format="matroska") as out:
        stream = out.add_stream("ffv1", rate=fps)
        stream.width, stream.height, stream.pix_fmt = w, h, "bgr0"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    with av.open(str(path)) as inp:
        return [(p.pos, p.size) for p in inp.demux(video=0) if p.size]


@pytest.fixture(scope="module")
def digits_video(tmp_path_factory):
    """(video path, PNG paths of the same frames, frames, digit labels)."""
    root = tmp_path_factory.mktemp("video")
    frames, labels = _digit_frames()
    video = root / "digits.mkv"
    encode_video(video, frames)
    pngs = []
    for i, f in enumerate(frames):
        pngs.append(root / "png" / f"{i:03d}.png")
        pngs[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(f).save(pngs[-1])
    return video, pngs, frames, labels


@pytest.mark.parametrize("key,batch", [("float", 4), ("uint8", 1), ("static2", 3)])
def test_stream_api_matches_infer(tiny_onnx_files, digits_video, key, batch):
    video, pngs, frames, _ = digits_video
    with Classifier(tiny_onnx_files[key], batch_size=2) as clf:
        want = clf.classify([str(p) for p in pngs], top_k=3)
        got = list(clf.stream(video, top_k=3, batch=batch, keep_frames=True))
    assert [r.index for r in got] == list(range(N_FRAMES))
    assert [r.timestamp for r in got] == pytest.approx([i / FPS for i in range(N_FRAMES)])
    for r, w, frame in zip(got, want, frames):
        np.testing.assert_array_equal(r.image, frame)  # lossless decode
        assert [p.index for p in r.predictions] == [p.index for p in w]
        np.testing.assert_allclose([p.probability for p in r.predictions],
                                   [p.probability for p in w], rtol=0, atol=1e-5)
        assert r.latency_ms > 0


def test_stream_folder_and_iterable_sources(tiny_onnx_files, digits_video):
    video, pngs, frames, _ = digits_video
    with Classifier(tiny_onnx_files["float"]) as clf:
        from_folder = list(clf.stream(pngs[0].parent, top_k=2, batch=2))
        from_list = list(clf.stream(iter(frames), top_k=2))
        want = clf.classify(frames, top_k=2)
    for results in (from_folder, from_list):
        assert [r.index for r in results] == list(range(N_FRAMES))
        assert [r.timestamp for r in results] == [None] * N_FRAMES
        assert [[p.index for p in r.predictions] for r in results] == \
            [[p.index for p in w] for w in want]


def test_stream_cli_json_lines_match_infer(tiny_onnx_files, digits_video, capsys):
    video, pngs, _, _ = digits_video
    model = str(tiny_onnx_files["float"])
    assert main(["infer", model, *map(str, pngs), "--top-k", "2", "--json"]) == 0
    want = json.loads(capsys.readouterr().out)["results"]
    assert main(["stream", model, str(video), "--top-k", "2", "--batch", "3",
                 "--json-lines"]) == 0
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    frames, totals = lines[:-1], lines[-1]
    assert [f["frame"] for f in frames] == list(range(N_FRAMES))
    for f, w in zip(frames, want):
        assert [p["index"] for p in f["predictions"]] == [p["index"] for p in w["predictions"]]
        np.testing.assert_allclose([p["probability"] for p in f["predictions"]],
                                   [p["probability"] for p in w["predictions"]], atol=1e-5)
    assert totals["totals"]["frames"] == N_FRAMES and totals["interrupted"] is False
    assert "stream ended: 12 frames" in captured.err


def test_stream_cli_annotated_video(tiny_onnx_files, digits_video, tmp_path, capsys):
    video, _, frames, _ = digits_video
    out = tmp_path / "annotated.mp4"
    assert main(["stream", str(tiny_onnx_files["uint8"]), str(video), "-o", str(out)]) == 0
    with av.open(str(out)) as inp:
        decoded = [f.to_ndarray(format="rgb24") for f in inp.decode(video=0)]
    assert len(decoded) == N_FRAMES
    assert decoded[0].shape == frames[0].shape
    # the label band is drawn: the top-left corner is dark, unlike the source frame's
    assert frames[0][:4, :4].mean() > 80 > 20 > decoded[0][:4, :4].mean()
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind
    # an existing output needs --force
    assert main(["stream", str(tiny_onnx_files["uint8"]), str(video), "-o", str(out)]) == 2
    assert "--force" in capsys.readouterr().err


def test_corrupt_frame_mid_file_is_skipped(tiny_onnx_files, digits_video, tmp_path, caplog):
    _, _, frames, _ = digits_video
    video = tmp_path / "corrupt.mkv"
    packets = encode_video(video, frames)
    data = bytearray(video.read_bytes())
    pos, size = packets[5]
    for i in range(pos + size // 4, pos + size // 2):
        data[i] ^= 0x5A
    video.write_bytes(bytes(data))
    with Classifier(tiny_onnx_files["float"]) as clf:
        results = list(clf.stream(video, top_k=1))
        want = clf.classify(frames, top_k=1)
    assert [r.index for r in results] == [i for i in range(N_FRAMES) if i != 5]
    assert [r.predictions[0].index for r in results] == \
        [w[0].index for i, w in enumerate(want) if i != 5]
    assert "frame 5 of" in caplog.text and "cannot be decoded" in caplog.text


def test_unopenable_sources(tiny_onnx_files, tmp_path, capsys):
    model = str(tiny_onnx_files["float"])
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    for source, needle in ((tmp_path / "missing.mp4", "does not exist"),
                           (junk, "cannot open video source"),
                           ("/dev/video987", "camera /dev/video987 does not exist")):
        assert main(["stream", model, str(source)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and "Traceback" not in err
    with Classifier(model) as clf, pytest.raises(DataError, match="does not exist"):
        next(clf.stream(tmp_path / "missing.mkv"))
    with Classifier(model) as clf, pytest.raises(ConfigError):
        next(clf.stream(iter([np.zeros((8, 8, 3), np.uint8)]), stall_timeout=0))


def test_stall_times_out_and_keeps_results(tiny_onnx_files, digits_video):
    _, _, frames, _ = digits_video
    release = threading.Event()

    def stalling():
        yield from frames[:3]
        release.wait(30)  # a source that stops delivering without ending

    got = []
    with Classifier(tiny_onnx_files["float"]) as clf:
        with pytest.raises(DataError, match="stalled"):
            for r in clf.stream(stalling(), stall_timeout=0.3):
                got.append(r.index)
    release.set()
    assert got == [0, 1, 2]


def test_source_failure_mid_stream_keeps_results(tiny_onnx_files, digits_video):
    _, _, frames, _ = digits_video

    def unplugged():
        yield from frames[:4]
        raise DataError("camera unplugged")

    got, totals = [], []
    with Classifier(tiny_onnx_files["float"]) as clf:
        with pytest.raises(DataError, match="unplugged"):
            for r in clf.stream(unplugged(), on_end=totals.append):
                got.append(r.index)
    assert got == [0, 1, 2, 3]
    assert totals[0].frames == 4


def test_live_source_drops_stale_frames(tiny_onnx_files, digits_video):
    """A live source faster than the runner: frames are dropped, the newest is classified."""
    _, _, frames, _ = digits_video
    gate = threading.Event()
    many = [frames[i % N_FRAMES] for i in range(60)]

    def burst():
        for i, f in enumerate(many):
            yield f
            if i == 0:
                gate.wait(10)  # hold until the consumer has the first result

    got, totals = [], []
    with Classifier(tiny_onnx_files["float"]) as clf:
        for r in clf.stream(burst(), live=True, on_end=totals.append):
            got.append(r.index)
            gate.set()
    assert got[0] == 0 and got[-1] == len(many) - 1  # the last frame always comes through
    assert totals[0].dropped == len(many) - len(got) > 0
    assert got == sorted(got)


def test_ctrl_c_finishes_output_and_prints_totals(tiny_onnx_files, digits_video, tmp_path,
                                                  monkeypatch, capsys):
    from xception_trt.stream import source as source_mod

    video, _, _, _ = digits_video
    real = source_mod.VideoSource.frames

    def interrupted(self, on_error):
        for i, frame in enumerate(real(self, on_error)):
            if i == 5:
                raise KeyboardInterrupt
            yield frame

    monkeypatch.setattr(source_mod.VideoSource, "frames", interrupted)
    out = tmp_path / "partial.mkv"
    code = main(["stream", str(tiny_onnx_files["float"]), str(video), "-o", str(out),
                 "--json-lines"])
    captured = capsys.readouterr()
    assert code == 130
    assert json.loads(captured.out.splitlines()[-1])["interrupted"] is True
    assert "stream interrupted: 5 frames" in captured.err
    with av.open(str(out)) as inp:
        assert len(list(inp.decode(video=0))) == 5


class _AsyncStagingRunner:
    """An ONNX Runtime runner dressed as a CUDA runner: a staging ``input_buffer`` and
    ``infer_async`` handles, checking that the pipeline preprocesses into the buffer and never
    rewrites it while a call is in flight."""

    def __init__(self, inner):
        self._inner = inner
        for name in ("name", "spec", "input_format", "precision", "input_spec", "output_spec",
                     "device", "describe", "close"):
            setattr(self, name, getattr(inner, name))
        self.max_batch = 8
        self._buf = np.zeros((8, *inner.input_spec.shape[1:]), inner.input_spec.dtype)
        self.in_flight = None
        self.staged_calls = 0

    def input_buffer(self, n):
        assert self.in_flight is None, "staging buffer requested while a call is in flight"
        return self._buf[:n]

    def infer_async(self, x):
        assert self.in_flight is None, "a second call started before the first was waited"
        if x.ctypes.data == self._buf.ctypes.data:
            self.staged_calls += 1
        runner, logits = self, self._inner(x.copy())
        self.in_flight = logits

        class Handle:
            def wait(self, timeout=None):
                runner.in_flight = None
                return logits

        return Handle()

    def __call__(self, x):
        raise AssertionError("the pipeline must use infer_async on a runner that has it")


def test_async_runner_gets_staging_buffer_and_overlap(tiny_onnx_files, digits_video):
    from xception_trt.runners import open_runner

    video, pngs, _, _ = digits_video
    with open_runner(tiny_onnx_files["uint8"]) as inner:
        runner = _AsyncStagingRunner(inner)
        got = list(Classifier(runner).stream(video, top_k=2, batch=4))
        want = Classifier(inner).classify([str(p) for p in pngs], top_k=2)
    assert [r.index for r in got] == list(range(N_FRAMES))
    assert [[p.index for p in r.predictions] for r in got] == [[p.index for p in w] for w in want]
    assert runner.staged_calls >= N_FRAMES // 4


def _fifo_stream(tmp_path, frames, argv_tail):
    """Run `xception-trt stream` in a subprocess on a FIFO that delivers a whole video and
    then stays open without data (a live pipe that stops sending)."""
    import os
    import subprocess
    import sys

    video = tmp_path / "src.mkv"
    encode_video(video, frames)
    fifo = tmp_path / "pipe.mkv"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "xception_trt", "stream", *argv_tail[:1],
                             str(fifo), *argv_tail[1:]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=as_in_a_terminal)
    writer = open(fifo, "wb")  # noqa: SIM115 - held open until the test ends
    writer.write(video.read_bytes())
    writer.flush()
    return proc, writer


def test_ctrl_c_on_a_real_process(tiny_onnx_files, digits_video, tmp_path):
    import signal

    _, _, frames, _ = digits_video
    out = tmp_path / "annotated.mkv"
    proc, writer = _fifo_stream(tmp_path, frames, [str(tiny_onnx_files["float"]), "--json-lines",
                                                   "-o", str(out), "--stall-timeout", "60"])
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        assert all(json.loads(line)["frame"] == i for i, line in enumerate(lines))
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        writer.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    totals = json.loads(rest.splitlines()[-1])
    assert totals["interrupted"] is True and totals["totals"]["frames"] >= 5
    assert "stream interrupted" in err and "Traceback" not in err
    with av.open(str(out)) as inp:  # complete and playable
        assert len(list(inp.decode(video=0))) == totals["totals"]["frames"]


def test_stalled_pipe_times_out(tiny_onnx_files, digits_video, tmp_path):
    _, _, frames, _ = digits_video
    proc, writer = _fifo_stream(tmp_path, frames, [str(tiny_onnx_files["float"]), "--json-lines",
                                                   "--stall-timeout", "0.5"])
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        writer.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 2
    assert err.strip().splitlines()[-1].startswith("error: no frame from")
    assert "stalled" in err and "Traceback" not in err
    frames_out = [json.loads(line) for line in out.splitlines() if '"frame"' in line]
    assert len(frames_out) >= N_FRAMES - 2  # what the decoder could deliver was kept


def test_missing_pyav_names_the_stream_extra(digits_video, tmp_path, monkeypatch):
    import sys

    from xception_trt.errors import DependencyError
    from xception_trt.stream import open_source
    from xception_trt.stream.annotate import VideoWriter

    video = digits_video[0]
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(DependencyError, match=r"pip install 'xception-trt\[stream\]'"):
        open_source(video)
    with pytest.raises(DependencyError, match=r"xception-trt\[stream\]"):
        VideoWriter(tmp_path / "x.mp4")
    open_source(digits_video[1][0].parent).close()  # image folders need no PyAV


def test_truncated_file_keeps_results_and_says_so(tiny_onnx_files, digits_video, tmp_path,
                                                  caplog):
    _, _, frames, _ = digits_video
    video = tmp_path / "truncated.mkv"
    packets = encode_video(video, frames)
    pos, size = packets[7]
    video.write_bytes(video.read_bytes()[:pos + size // 2])
    with Classifier(tiny_onnx_files["float"]) as clf:
        got = [r.index for r in clf.stream(video)]
    assert got == list(range(7))
    assert "looks truncated" in caplog.text
    caplog.clear()
    with Classifier(tiny_onnx_files["float"]) as clf:  # a complete file: no such warning
        assert len(list(clf.stream(digits_video[0]))) == N_FRAMES
    assert "truncated" not in caplog.text


def test_http_url_source_and_refused_rtsp(tiny_onnx_files, digits_video):
    import functools
    import http.server

    video, pngs, _, _ = digits_video
    handler = functools.partial(http.server.SimpleHTTPRequestHandler,
                                directory=str(video.parent))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{video.name}"
        with Classifier(tiny_onnx_files["float"]) as clf:
            got = [[p.index for p in r.predictions] for r in clf.stream(url, top_k=2)]
            want = [[p.index for p in w] for w in clf.classify([str(p) for p in pngs], top_k=2)]
            assert got == want
            with pytest.raises(DataError, match="cannot open video source rtsp://"):
                next(clf.stream("rtsp://127.0.0.1:1/none"))
    finally:
        server.shutdown()
        server.server_close()


_FULL_DISK = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) past the limit then fails with EFBIG
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
from xception_trt.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_annotated_video_onto_a_file_size_limit_is_one_error_line(tiny_onnx_files, digits_video,
                                                                    tmp_path):
    """Issue 27 item 3: a write that the kernel refuses mid-video (RLIMIT_FSIZE: write(2) fails
    with EFBIG, getrlimit(2); it reaches FFmpeg's muxer like ENOSPC) ends in one `error:` line,
    exit 2, no temporary file and no crash (the old code died with SIGSEGV in
    container.close() after the failed mux)."""
    import os
    import subprocess
    import sys

    video = digits_video[0]
    out = tmp_path / "out" / "annotated.mp4"
    out.parent.mkdir()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    proc = subprocess.run([sys.executable, "-c", _FULL_DISK, "2048", "stream",
                           str(tiny_onnx_files["uint8"]), str(video), "-o", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "File too large" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(out.parent.iterdir()) == []


def test_annotated_video_onto_a_full_disk(monkeypatch, tmp_path):
    """Issue 27 item 3: ENOSPC from the file PyAV writes (injected at the writer's file object,
    as write(2) reports a full disk: OSError errno ENOSPC) is the one-line "No space left on
    device" error that bundle and quantize give; nothing is left."""
    import errno

    from xception_trt.stream import annotate

    real = annotate._Sink.write
    budget = {"left": 3000}

    def write(self, data):
        budget["left"] -= len(data)
        if budget["left"] < 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(annotate._Sink, "write", write)
    out = tmp_path / "annotated.mp4"
    frames, _ = _digit_frames()
    writer = annotate.VideoWriter(out, fps=FPS)
    with pytest.raises(DataError, match="No space left on device; free disk space"):
        for f in frames * 4:
            writer.write(f)
        writer.close()
    writer.close()  # idempotent after the failure
    assert list(tmp_path.iterdir()) == []


def test_annotated_video_follows_the_umask(digits_video, tmp_path):
    """Issue 27 item 21: the video was renamed into place with mkstemp's 0600; every other
    output follows the umask (fsio.default_file_mode)."""
    from xception_trt.fsio import default_file_mode
    from xception_trt.stream.annotate import VideoWriter

    out = tmp_path / "annotated.mp4"
    with VideoWriter(out, fps=FPS) as writer:
        writer.write(digits_video[2][0])
    assert out.stat().st_mode & 0o777 == default_file_mode()


def test_sigterm_on_a_real_process_ends_like_ctrl_c(tiny_onnx_files, digits_video, tmp_path):
    """Issue 27 item 20: SIGTERM ended `stream` at once (no totals line, the annotated video of
    the frames already encoded discarded, its temp file left); now it is treated like SIGINT,
    as `serve` does, and exits 128 + 15."""
    import signal

    _, _, frames, _ = digits_video
    out = tmp_path / "annotated.mkv"
    proc, writer = _fifo_stream(tmp_path, frames, [str(tiny_onnx_files["float"]), "--json-lines",
                                                   "-o", str(out), "--stall-timeout", "60"])
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        assert all(json.loads(line)["frame"] == i for i, line in enumerate(lines))
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=60)
    finally:
        writer.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    totals = json.loads(rest.splitlines()[-1])
    assert totals["interrupted"] is True and totals["totals"]["frames"] >= 5
    assert "stream interrupted" in err and "Traceback" not in err
    with av.open(str(out)) as inp:  # complete and playable
        assert len(list(inp.decode(video=0))) == totals["totals"]["frames"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_stream_takes_a_bundle_and_its_precision(tiny_onnx_files, capsys):
    """Issue 27 item 25: `stream` accepted a bundle, but its help did not list .xtrt and it had
    no --precision; --precision without a bundle is refused as for infer."""
    with pytest.raises(SystemExit):
        main(["stream", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert ".xtrt" in text and "--precision" in text
    assert main(["stream", str(tiny_onnx_files["float"]), "x.mp4", "--precision", "fp16"]) == 2
    assert "a bundle MODEL (.xtrt)" in capsys.readouterr().err


def _stream_on_a_fifo_without_writer(tmp_path, tiny_onnx_files, stall_timeout):
    import os
    import subprocess
    import sys

    fifo = tmp_path / "nobody.mkv"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen([sys.executable, "-m", "xception_trt", "-v", "stream",
                             str(tiny_onnx_files["float"]), str(fifo), "--stall-timeout",
                             stall_timeout], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, preexec_fn=as_in_a_terminal)


def test_a_fifo_without_a_writer_is_bounded_by_the_stall_timeout(tiny_onnx_files, tmp_path):
    """Issue 27 item 11: FFmpeg's open() of a FIFO with no writer blocked forever, whatever
    --stall-timeout said. (The communicate() limit only catches that hang.)"""
    proc = _stream_on_a_fifo_without_writer(tmp_path, tiny_onnx_files, "0.5")
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 2, err
    assert "no data arrived on the FIFO" in err and "Traceback" not in err


def test_ctrl_c_while_waiting_for_a_fifo_writer_exits_130(tiny_onnx_files, tmp_path):
    """Issue 27 item 11: Ctrl-C during that wait exited 2 instead of 130. The signal is sent
    once the process says (-v) that it waits."""
    import signal

    proc = _stream_on_a_fifo_without_writer(tmp_path, tiny_onnx_files, "600")
    lines: list[str] = []
    waiting = threading.Event()

    def read() -> None:
        for line in proc.stderr:
            lines.append(line)
            if "waiting for data on the FIFO" in line:
                waiting.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert waiting.wait(timeout=120), "".join(lines)  # the limit only catches a hang
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join()
    err = "".join(lines)
    assert proc.returncode == 130, err
    assert "Traceback" not in err


def test_a_stall_is_detected_while_a_batch_waits_to_fill(tiny_onnx_files, digits_video):
    """Issue 27 item 12: with --max-wait-ms above --stall-timeout a stalled source was not
    detected (the partial batch waited max-wait, then the stall was timed from there); now the
    stall is timed from the last frame and the partial batch is classified first."""
    _, _, frames, _ = digits_video
    release = threading.Event()

    def stalling():
        yield from frames[:6]
        release.wait(30)  # stops delivering; ends (no stall error) if nobody noticed

    got = []
    with Classifier(tiny_onnx_files["float"]) as clf:
        with pytest.raises(DataError, match="stalled"):
            for r in clf.stream(stalling(), batch=4, max_wait_ms=600_000, stall_timeout=0.3):
                got.append(r.index)
    release.set()
    assert got == [0, 1, 2, 3, 4, 5]


def test_a_failure_keeps_the_frames_of_the_unfilled_batch(tiny_onnx_files, digits_video):
    """Issue 27 item 12: the frames gathered for a batch that had not filled were dropped when
    the source failed (39 decoded, 32-36 reported); the README promises every result before
    the failure."""
    _, _, frames, _ = digits_video

    def unplugged():
        yield from frames[:6]
        raise DataError("camera unplugged")

    got = []
    with Classifier(tiny_onnx_files["float"]) as clf:
        with pytest.raises(DataError, match="unplugged"):
            for r in clf.stream(unplugged(), batch=4, max_wait_ms=600_000):
                got.append(r.index)
    assert got == [0, 1, 2, 3, 4, 5]


def test_opening_a_url_waits_no_longer_than_the_stall_timeout(tiny_onnx_files, monkeypatch,
                                                              capsys):
    """Issue 27 item 12: opening a URL used FFmpeg's fixed 10 s timeout whatever
    --stall-timeout said. The double stands for VideoSource's open (av.open(timeout=...)),
    refusing as a failed open does."""
    from xception_trt.stream import source

    seen = {}

    def opened(self, target, *, name, live, fmt=None, timeout=None):
        seen["timeout"] = timeout
        raise DataError(f"cannot open video source {name}: Connection timed out")

    monkeypatch.setattr(source.VideoSource, "__init__", opened)
    assert main(["stream", str(tiny_onnx_files["float"]), "rtsp://127.0.0.1:9/x",
                 "--stall-timeout", "2.5"]) == 2
    assert seen["timeout"] == 2.5
    assert "Connection timed out" in capsys.readouterr().err
