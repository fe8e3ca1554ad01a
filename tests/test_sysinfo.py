"""Machine facts: the JSON layouts that ``info --json``, reports (``system`` and ``context``)
and ``doctor --json`` / ``doctor --facts`` write and read. These layouts are files users keep
and compare; the golden layouts below are the ones 0.1.0 writes (key names and key order:
reports are written unsorted), so a change to how facts are gathered cannot change them."""

from __future__ import annotations

import json

import pytest

from xception_trt import __version__
from xception_trt.bundle.facts import DeviceFacts, FlavourFact, GpuFact
from xception_trt.cli import main
from xception_trt.errors import ConfigError
from xception_trt.trt import devices

#: ``info --json`` / a report's ``system``: top-level keys in the order a report writes them.
SYSTEM_KEYS = ["platform", "machine", "python_executable", "cpu", "cpu_int8", "cpu_count",
               "load_average", "software", "git_revision", "trt_importable", "devices"]
SOFTWARE_KEYS = ["python", "xception-trt", "torch", "onnx", "onnxruntime", "onnx-graphsurgeon",
                 "nvidia-modelopt", "tensorrt", "tensorrt-rtx", "cuda-python", "pycuda", "numpy",
                 "pillow"]
CPU_INT8_KEYS = ["vnni", "amx", "flags"]
DEVICES_KEYS = ["driver", "cuda_driver_api", "gpus", "probe", "reason"]
#: A report's ``context`` (power.run_context) and its parts.
CONTEXT_KEYS = ["load_average", "cpu", "jetson", "nvml"]
#: ``doctor --json``'s ``machine`` and the ``doctor --facts`` file.
MACHINE_KEYS = ["flavours", "gpus", "driver", "dla_cores", "ort_version", "ort_providers", "onnx",
                "host", "gpu_reason"]

#: A GPU as the CUDA driver reports it (what an H100 machine's ``info --json`` holds).
H100 = devices.DeviceReport("580.95.05", "13.0",
                            (devices.GpuInfo(0, "NVIDIA H100 80GB HBM3", "9.0", 85029158912),),
                            "cuda-python", "")


@pytest.fixture
def h100(monkeypatch):
    """This machine as an H100 machine (the driver probe answers; nothing else changes)."""
    monkeypatch.setattr(devices, "_via_cuda_python", lambda: H100)


def _info_json(capsys) -> dict:
    assert main(["info", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_info_json_layout(capsys, h100):
    facts = _info_json(capsys)
    assert sorted(facts) == sorted(SYSTEM_KEYS)
    assert list(facts["software"]) == sorted(SOFTWARE_KEYS)  # print_json sorts keys
    assert sorted(facts["cpu_int8"]) == sorted(CPU_INT8_KEYS)
    assert facts["devices"] == {
        "driver": "580.95.05", "cuda_driver_api": "13.0", "probe": "cuda-python", "reason": "",
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
                  "total_memory": 85029158912, "integrated": False, "pci_bus_id": None}]}
    assert facts["software"]["xception-trt"] == __version__
    assert isinstance(facts["cpu_count"], int) and isinstance(facts["cpu"], str)
    assert facts["load_average"] is None or len(facts["load_average"]) == 3
    assert all(isinstance(v, str) for v in facts["trt_importable"].values())


def test_info_text_names_the_gpu(capsys, h100):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "nvidia driver        580.95.05\n" in out
    assert "cuda driver api      13.0\n" in out
    assert "gpu 0                NVIDIA H100 80GB HBM3, compute capability 9.0, 79.2 GiB\n" in out


def test_report_system_and_context_layout(h100):
    from xception_trt.power import run_context
    from xception_trt.report import build_report

    doc = build_report("golden", kind="bench")
    assert list(doc["system"]) == SYSTEM_KEYS
    assert list(doc["system"]["software"]) == SOFTWARE_KEYS
    assert list(doc["system"]["cpu_int8"]) == CPU_INT8_KEYS
    assert list(doc["system"]["devices"]) == DEVICES_KEYS
    assert list(doc["system"]["devices"]["gpus"][0]) == ["index", "name", "compute_capability",
                                                        "total_memory", "integrated",
                                                        "pci_bus_id"]
    assert list(doc["context"]) == CONTEXT_KEYS
    ctx = run_context(root="/nonexistent-root", probe_nvml=False)
    assert list(ctx) == CONTEXT_KEYS
    assert {k: v for k, v in ctx.items() if k != "load_average"} == {
        "cpu": {"governors": None, "cur_freq_mhz": None, "min_pinned_to_max": None,
                "reason": "no cpufreq in sysfs (a VM or container, or not Linux)"},
        "jetson": None,
        "nvml": {"available": False, "reason": "not probed", "driver": None, "gpus": []}}


GOLDEN_MACHINE = {
    "flavours": [{"name": "tensorrt", "version": "10.3.0.30"}],
    "gpus": [{"index": 0, "name": "Orin", "compute_capability": "8.7", "integrated": True}],
    "driver": "540.4.0", "dla_cores": 2, "ort_version": "1.20.1",
    "ort_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"], "onnx": True,
    "host": "orin (aarch64, Linux)", "gpu_reason": ""}


def test_device_facts_file_layout():
    facts = DeviceFacts(flavours=(FlavourFact("tensorrt", "10.3.0.30"),),
                        gpus=(GpuFact(0, "Orin", "8.7", True),), driver="540.4.0", dla_cores=2,
                        ort_version="1.20.1",
                        ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"),
                        onnx=True, host="orin (aarch64, Linux)")
    d = facts.to_dict()
    assert d == GOLDEN_MACHINE and list(d) == MACHINE_KEYS
    assert list(d["flavours"][0]) == ["name", "version"]
    assert list(d["gpus"][0]) == ["index", "name", "compute_capability", "integrated"]
    assert DeviceFacts.from_dict(d) == facts


def test_doctor_json_machine_layout(capsys, h100):
    assert main(["doctor", "--json"]) == 0
    machine = json.loads(capsys.readouterr().out)["machine"]
    assert sorted(machine) == sorted(MACHINE_KEYS)
    assert machine["gpus"] == [{"index": 0, "name": "NVIDIA H100 80GB HBM3",
                                "compute_capability": "9.0", "integrated": False}]
    assert machine["driver"] == "580.95.05" and machine["gpu_reason"] == ""


def test_doctor_facts_file_round_trips(tmp_path, capsys):
    """A facts file (the ``machine`` object) is read back as it was written."""
    path = tmp_path / "orin.json"
    path.write_text(json.dumps({"machine": GOLDEN_MACHINE}))
    assert main(["doctor", "--facts", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["machine"] == GOLDEN_MACHINE


def test_doctor_facts_of_an_earlier_version_still_load(tmp_path, capsys):
    """Facts recorded before ``onnx``, ``host``, ``gpu_reason``, the ONNX Runtime fields and a
    GPU's ``integrated`` existed: the missing fields take their defaults."""
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"flavours": [{"name": "tensorrt", "version": "8.6.2"}],
                                "gpus": [{"index": 0, "name": "Xavier",
                                          "compute_capability": "7.2"}],
                                "driver": "35.4.1", "dla_cores": 2}))
    assert main(["doctor", "--facts", str(path), "--json"]) == 0
    machine = json.loads(capsys.readouterr().out)["machine"]
    assert machine == {"flavours": [{"name": "tensorrt", "version": "8.6.2"}],
                       "gpus": [{"index": 0, "name": "Xavier", "compute_capability": "7.2",
                                 "integrated": False}],
                       "driver": "35.4.1", "dla_cores": 2, "ort_version": None,
                       "ort_providers": [], "onnx": False, "host": "", "gpu_reason": ""}


@pytest.mark.parametrize("bad", [
    {"gpus": [{"index": "first", "name": "X", "compute_capability": "8.6"}]},
    {"gpus": [{"name": "X"}]},
    {"gpus": [{"index": 0, "name": "X", "compute_capability": "8.7", "integrated": "yes"}]},
    {"flavours": [{"name": "tensorrt"}]},
    {"dla_cores": "two"},
    [1, 2],
])
def test_doctor_facts_file_is_validated(tmp_path, capsys, bad):
    """A facts file is untrusted input: a malformed one is a one-line error, exit code 2."""
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    assert main(["doctor", "--facts", str(path)]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    with pytest.raises(ConfigError):
        from xception_trt.bundle.doctor import recorded_facts

        recorded_facts(path)


# ---------------------------------------------------------------------------------------------
# one module, each probe once per process


def test_each_probe_runs_once_per_process(monkeypatch, capsys, h100):
    """``info`` (text and JSON), ``doctor`` (text and JSON), the bundle's facts and a report in
    one process: the driver is asked once, each TensorRT flavour imported once, ONNX Runtime
    and git asked once."""
    from collections import Counter

    from xception_trt import sysinfo, trt
    from xception_trt.bundle.facts import probe_facts
    from xception_trt.report import build_report

    calls: Counter[str] = Counter()

    def count(module, name):
        real = getattr(module, name)

        def counted(*args, **kwargs):
            calls[name] += 1
            return real(*args, **kwargs)
        monkeypatch.setattr(module, name, counted)

    for module, name in ((devices, "query_devices"), (devices, "query_dla_cores"),
                         (trt, "import_flavour"), (sysinfo, "_git_revision"),
                         (sysinfo, "_ort"), (sysinfo, "cpu_model"),
                         (sysinfo, "software_versions")):
        count(module, name)
    for argv in (["info"], ["info", "--json"], ["doctor"], ["doctor", "--json"]):
        assert main(argv) == 0
    capsys.readouterr()
    assert probe_facts() == probe_facts()
    build_report("once", kind="bench", context={})
    assert calls == {"query_devices": 1, "import_flavour": len(trt.FLAVOURS),
                     "_git_revision": 1, "_ort": 1, "cpu_model": 1, "software_versions": 1,
                     # asked only where NVIDIA TensorRT imports and a GPU is present
                     **({"query_dla_cores": 1} if sysinfo.flavours()
                        and sysinfo.flavours()[0].name == "tensorrt" else {})}
    sysinfo.refresh()
    sysinfo.devices()
    assert calls["query_devices"] == 2


def test_machine_facts_are_typed_and_frozen(h100):
    import dataclasses

    from xception_trt import sysinfo

    facts = sysinfo.machine_facts()
    assert facts.devices == H100 and facts.devices.gpus[0].sm == "sm_90"
    assert facts.version("xception-trt") == __version__
    assert facts.platform.python_executable and facts.cpu.count
    assert {b.name for b in facts.cuda_bindings} == {"cuda-python", "pycuda"}
    assert facts.dla_cores == 0  # no NVIDIA TensorRT here, or no DLA
    with pytest.raises(dataclasses.FrozenInstanceError):
        facts.cpu.model = "changed"  # type: ignore[misc]
    assert sysinfo.machine_facts() == facts  # the same answers: nothing probed again


def test_load_average_is_read_each_time(monkeypatch):
    """The load average is a reading of the moment (before and after a run), not a fact."""
    from xception_trt import sysinfo

    readings = iter([(1.0, 1.0, 1.0), (2.0, 2.0, 2.0)])
    monkeypatch.setattr("os.getloadavg", lambda: next(readings))
    assert sysinfo.system_facts(probe_gpus=False)["load_average"] == [1.0, 1.0, 1.0]
    assert sysinfo.system_facts(probe_gpus=False)["load_average"] == [2.0, 2.0, 2.0]


def test_importing_the_facts_module_probes_and_imports_nothing_heavy():
    import subprocess
    import sys

    code = ("import sys, xception_trt.sysinfo, xception_trt.bundle.facts; "
            "heavy = [m for m in ('torch', 'onnx', 'onnxruntime', 'tensorrt', 'tensorrt_rtx', "
            "'cuda', 'pycuda') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "from xception_trt.trt import probed_flavours; "
            "from xception_trt.trt.devices import probed_devices; "
            "assert not xception_trt.sysinfo._answers; "
            "assert probed_devices.cache_info().currsize == probed_flavours.cache_info().currsize"
            " == 0; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
