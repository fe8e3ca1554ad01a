from __future__ import annotations

import json
import subprocess
import sys

import pytest

from xception_trt import __version__
from xception_trt.cli import build_parser, main
from xception_trt.errors import DataError


def test_help_lists_commands(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "xception-trt" in out and "info" in out


def test_no_command_prints_help_and_exits_2(capsys):
    assert main([]) == 2
    assert "usage: xception-trt" in capsys.readouterr().out


def test_every_subcommand_has_help(capsys):
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert text.startswith("usage: xception-trt " + name), name


def test_info_is_true_on_this_machine(capsys):
    from xception_trt.sysinfo import system_facts
    from xception_trt.trt import available_flavours

    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert f"xception-trt         {__version__}" in out
    facts = system_facts()
    flavours = {f.name: f.version for f in available_flavours()}
    if "tensorrt_rtx" in flavours:
        assert f"tensorrt-rtx         {flavours['tensorrt_rtx']} (importable" in out
    if not facts["devices"]["gpus"]:
        assert "gpus                 none" in out
        assert "nvidia driver        none (" in out
    import torch

    assert torch.__version__ in out


def test_info_json(capsys):
    assert main(["info", "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["software"]["xception-trt"] == __version__
    assert "devices" in facts and "trt_importable" in facts


def test_library_errors_become_one_line_and_exit_2(monkeypatch, capsys):
    import xception_trt.cli.info as info

    def boom(args):
        raise DataError("the folder x has no images; add images")

    monkeypatch.setattr(info, "run", boom)
    assert main(["info"]) == 2
    err = capsys.readouterr().err
    assert err == "error: the folder x has no images; add images\n"


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "xception_trt", "--version"],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"xception-trt {__version__}"


def test_convert_keras_to_safetensors(tmp_path, capsys):
    import numpy as np
    import torch
    from keras_reference import random_keras_layers, write_keras_h5

    from xception_trt.checkpoint import load_model
    from xception_trt.model import scaled_channels

    layers = random_keras_layers(np.random.default_rng(0),
                                 width_ch=lambda c: scaled_channels(c, 0.125),
                                 middle_blocks=1, num_classes=3)
    src = tmp_path / "w.h5"
    write_keras_h5(src, layers)
    labels = tmp_path / "labels.txt"
    labels.write_text("a\nb\nc\n")
    out = tmp_path / "w.safetensors"
    assert main(["convert", str(src), "-o", str(out), "--input-size", "80",
                 "--labels", str(labels)]) == 0
    assert "keras weights, 3 classes" in capsys.readouterr().out
    a, b = load_model(src, input_size=80), load_model(out)
    assert b.spec.class_names() == ("a", "b", "c") and b.spec.pool_padding.value == "tf-same"
    x = torch.randn(1, 3, 80, 80)
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    # a second run refuses to clobber the output
    assert main(["convert", str(src), "-o", str(out)]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err


def test_convert_bad_checkpoint_exit_2(tmp_path, capsys):
    assert main(["convert", str(tmp_path / "nope.pth"), "-o", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: checkpoint") and "does not exist" in err
    assert not (tmp_path / "o.safetensors").exists()


@pytest.mark.parametrize("argv,message", [
    (["serve", "m.onnx", "--http-port", "0"], "argument --http-port: 0 is outside 1..65535"),
    (["serve", "m.onnx", "--grpc-port", "x"], "argument --grpc-port: 'x' is not a port number"),
    (["triton-repo", "m.onnx", "-o", "r", "--max-queue-delay-us", "-1"], "-1 must be >= 0"),
    (["export", "c.safetensors", "-o", "x.onnx", "--parity-samples", "0"], "0 must be >= 1"),
])
def test_bounded_numeric_options_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_add_command_adds_the_shared_flags_only_when_asked():
    import argparse

    from xception_trt.cli._common import add_command

    top = argparse.ArgumentParser(prog="x")
    sub = top.add_subparsers(dest="command")
    p = add_command(sub, "full", run=lambda a: 0, help="h", description="one\n   two",
                    output="where", force="overwrite", json="the result")
    add_command(sub, "bare", run=lambda a: 1, help="h", description="d")
    assert p.description == "one two"
    args = top.parse_args(["full", "-o", "out", "--force", "--json"])
    assert (args.output, args.force, args.json, args.func(args)) == ("out", True, True, 0)
    args = top.parse_args(["bare"])
    assert not hasattr(args, "output") and not hasattr(args, "json") and args.func(args) == 1
    with pytest.raises(SystemExit):
        top.parse_args(["full"])  # -o is required when the command has one


def test_arg_type_says_what_is_wrong():
    import argparse

    from xception_trt.cli._common import arg_type

    parse = arg_type(float, expected="a number",
                     check=lambda v: None if 0 < v < 1 else "is outside (0, 1)")
    assert parse("0.25") == 0.25
    with pytest.raises(argparse.ArgumentTypeError, match="'x' is not a number"):
        parse("x")
    with pytest.raises(argparse.ArgumentTypeError, match=r"1.5 is outside \(0, 1\)"):
        parse("1.5")
