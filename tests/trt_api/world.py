"""What the checking double answers, and the documented rules it enforces (RULES.md).

The double (double.py) checks *that* a call exists and is well formed; the world says *what it
returns* so that our code runs on: the network comes from the real ONNX file we parse, the
"plan" is a JSON record of the builder configuration we set, and the runtime reads that record
back. Nothing computes: an engine's outputs are never written.

Each ``_rule`` call cites the NVIDIA documentation it enforces (ids in RULES.md).
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass, field
from typing import Any

__all__ = ["World", "PLAN_MAGIC"]

PLAN_MAGIC = b"XTRT-DOUBLE-PLAN\n"
_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64"}


@dataclass
class World:
    """Scenario knobs and what the double saw.

    Attributes:
        num_dla_cores: ``Builder.num_DLA_cores`` / ``Runtime.num_DLA_cores`` (2 on AGX Orin).
        max_dla_batch: ``Builder.max_DLA_batch_size``.
        parse_errors: The ONNX parser reports this many errors (node 0).
        compute: ``compute(stream, {name: (address, shape, numpy dtype)}, onnx)`` is
            called by ``execute_async_v3`` to stand in for the engine (e.g. ONNX Runtime on
            emulated device memory); ``onnx`` is the bytes of the ONNX file the engine was
            parsed from, read when it was parsed (as TensorRT holds the parsed network, the
            file may be gone by then); ``None``: outputs are never written.
        capturing: ``capturing(stream) -> bool``: whether a stream is capturing a CUDA graph
            (the emulating CUDA backend knows); ``None``: never.
        build_cc, integrated: The build GPU (what ``builder._build_gpu`` says, and what the
            builder checks hardware compatibility against).
        device_key: The device properties a timing cache records (TC-1).
        engine_validity: What TensorRT-RTX's ``get_engine_validity`` answers (name of an
            ``EngineValidity`` member) and ``invalidity``, the diagnostics bit mask with it.
        built: Builder-config records of every build (what our code set).
    """

    num_dla_cores: int = 0
    max_dla_batch: int = 4096
    parse_errors: int = 0
    compute: Any = None
    capturing: Any = None
    engine_validity: str = "VALID"
    invalidity: int = 0
    build_cc: str = "8.6"
    integrated: bool = False
    device_key: str = "Double GPU, 8.6, 1410 MHz"
    built: list[dict[str, Any]] = field(default_factory=list)
    executed: int = 0
    parsed: dict[str, bytes] = field(default_factory=dict)  # ONNX bytes by parsed path

    def attach(self, api: Any) -> None:
        self.api = api
        self.trt = api.module
        self.major = int(api.version.split(".")[0])

    # -- plumbing ---------------------------------------------------------------------------
    def handler(self, owner: str, name: str) -> Any:
        owner = "module" if owner in ("tensorrt", "tensorrt_rtx") else owner
        return getattr(self, f"h_{owner.replace('.', '_')}__{name}", None)

    def constructed(self, obj: Any, name: str, args: dict[str, Any]) -> None:
        if name == "OnnxParser":
            obj._state["_network"] = args.get("network")
            obj._state["_logger"] = args.get("logger")
        elif name in ("Builder", "Runtime"):
            obj._state["_logger"] = args.get("logger")

    def _rule(self, call: str, rule: str) -> None:
        self.api.rule(call, rule)

    def _log(self, owner: Any, severity: str, msg: str) -> None:
        """TensorRT reports through the logger our code gave it: call it as TensorRT would."""
        logger = owner._state.get("_logger")
        if logger is not None:
            logger.log(getattr(self.trt.ILogger.Severity, severity), msg)

    def _dims(self, values: Any) -> Any:
        """A ``Dims`` double (a sequence through ``__len__``/``__getitem__``, as the real one)."""
        return self.api.instance("Dims", _dims=tuple(int(v) for v in values))

    def h_Dims____len__(self, obj: Any, args: dict, returns: str) -> int:
        return len(obj._state["_dims"])

    def h_Dims____getitem__(self, obj: Any, args: dict, returns: str) -> Any:
        return obj._state["_dims"][args["arg0"]]  # IndexError past the end, as pybind11

    def _enum(self, enum_name: str, member: str) -> Any:
        """An enum value as TensorRT returns it: a new object equal to the member (pybind11
        converts each returned value anew, so ``is`` does not match it)."""
        cls = self.api.classes[enum_name]
        return cls(getattr(cls, member).value)

    # -- module functions -------------------------------------------------------------------
    def h_module__nptype(self, obj: Any, args: dict, returns: str) -> Any:
        import numpy as np

        member = args["trt_type"]
        table = self.api.dump["nptype"]
        if table.get(member.name) is None:
            raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")
        return np.dtype(table[member.name]).type

    # -- builder ----------------------------------------------------------------------------
    def h_Builder__num_DLA_cores(self, obj: Any, args: dict, returns: str) -> int:
        return self.num_dla_cores

    def h_Builder__max_DLA_batch_size(self, obj: Any, args: dict, returns: str) -> int:
        """DLA's largest batch ("The maximum supported batch size is 4096", TensorRT "DLA
        Supported Layers and Restrictions")."""
        return self.max_dla_batch

    def h_Builder__create_network(self, obj: Any, args: dict, returns: str) -> Any:
        flags = int(args.get("flags", 0))
        names = [m.name for m in self.api.classes["NetworkDefinitionCreationFlag"]
                 .__members__.values()
                 if flags & (1 << int(m))]
        return self.api.instance("INetworkDefinition", _flags=names, _inputs=[], _outputs=[])

    def h_OnnxParser__parse_from_file(self, obj: Any, args: dict, returns: str) -> bool:
        import onnx

        model = onnx.load(args["model"], load_external_data=False)
        network = obj._state["_network"]

        def tensor(value: Any) -> Any:
            ttype = value.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else -1
                         for d in ttype.shape.dim)
            dtype = self._enum("DataType", _ONNX_TYPES[ttype.elem_type])
            return self.api.instance("ITensor", name=value.name, shape=self._dims(dims),
                                     dtype=dtype)
        init = {i.name for i in model.graph.initializer}
        network._state["_inputs"] = [tensor(v) for v in model.graph.input if v.name not in init]
        # the graph's own types decide a strongly typed network's precision (TYPE-1, DLA-5)
        ops = {n.op_type for n in model.graph.node}
        network._state["_graph_precision"] = (
            "int8" if {"QuantizeLinear", "DequantizeLinear"} & ops else
            "fp16" if any(i.data_type == 10 for i in model.graph.initializer) else "fp32")
        network._state["_outputs"] = [tensor(v) for v in model.graph.output]
        network._state["_onnx"] = args["model"]
        with open(args["model"], "rb") as f:
            self.parsed[args["model"]] = f.read()
        # QDQ-1: an INT8 initializer read by DequantizeLinear (pre-quantized weights)
        int8 = {i.name for i in model.graph.initializer if i.data_type == 3}
        network._state["_int8_weights"] = any(
            n.op_type == "DequantizeLinear" and n.input[0] in int8 for n in model.graph.node)
        if self.parse_errors:
            obj._state["num_errors"] = self.parse_errors
            return False
        obj._state["num_errors"] = 0
        return True

    def h_OnnxParser__parse(self, obj: Any, args: dict, returns: str) -> bool:
        """``parse(model bytes)``: as ``parse_from_file`` on those bytes."""
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".onnx", delete=False) as f:
            f.write(bytes(args["model"]))
        try:
            return self.h_OnnxParser__parse_from_file(obj, {"model": f.name}, returns)
        finally:
            import os

            os.unlink(f.name)

    def h_OnnxParser__get_error(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance("ParserError")

    def h_ParserError__node(self, obj: Any, args: dict, returns: str) -> int:
        return 0

    def h_ParserError__desc(self, obj: Any, args: dict, returns: str) -> str:
        return "unsupported operator (double)"

    def h_INetworkDefinition__num_inputs(self, obj: Any, args: dict, returns: str) -> int:
        return len(obj._state["_inputs"])

    def h_INetworkDefinition__num_outputs(self, obj: Any, args: dict, returns: str) -> int:
        return len(obj._state["_outputs"])

    def h_INetworkDefinition__get_input(self, obj: Any, args: dict, returns: str) -> Any:
        return obj._state["_inputs"][args["index"]]

    def h_INetworkDefinition__get_output(self, obj: Any, args: dict, returns: str) -> Any:
        return obj._state["_outputs"][args["index"]]

    def h_Builder__create_builder_config(self, obj: Any, args: dict, returns: str) -> Any:
        # TF32 is on in a new builder config (BuilderFlag.TF32: "enabled by default")
        flags = {"TF32"} & set(self.api.dump["classes"]["BuilderFlag"].get("enum", {}))
        return self.api.instance("IBuilderConfig", _flags=set(flags), _profiles=[], _pools={},
                                 _ccs={})

    def h_IBuilderConfig__clear_flag(self, obj: Any, args: dict, returns: str) -> None:
        obj._state["_flags"].discard(args["flag"].name)

    def h_Builder__create_optimization_profile(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance("IOptimizationProfile", _shapes={})

    def h_IOptimizationProfile__set_shape(self, obj: Any, args: dict, returns: str) -> None:
        lo, opt, hi = (tuple(args[k]) for k in ("min", "opt", "max"))
        if not all(a <= b <= c for a, b, c in zip(lo, opt, hi)):
            self._rule("IOptimizationProfile.set_shape", "DYN-1 min <= opt <= max per axis")
        obj._state["_shapes"][args["input"]] = [list(lo), list(opt), list(hi)]

    def h_IBuilderConfig__add_optimization_profile(self, obj: Any, args: dict,
                                                   returns: str) -> int:
        obj._state["_profiles"].append(args["profile"]._state["_shapes"])
        return len(obj._state["_profiles"]) - 1

    def h_IBuilderConfig__set_flag(self, obj: Any, args: dict, returns: str) -> None:
        obj._state["_flags"].add(args["flag"].name)

    def h_IBuilderConfig__get_flag(self, obj: Any, args: dict, returns: str) -> bool:
        return args["flag"].name in obj._state["_flags"]

    def h_IBuilderConfig__set_memory_pool_limit(self, obj: Any, args: dict, returns: str) -> None:
        obj._state["_pools"][args["pool"].name] = int(args["pool_size"])

    def h_IBuilderConfig__set_compute_capability(self, obj: Any, args: dict,
                                                 returns: str) -> bool:
        if args["index"] >= obj._state.get("num_compute_capabilities", 0):
            self._rule("IBuilderConfig.set_compute_capability",
                       "RTX-1 index < num_compute_capabilities (set the count first)")
            return False
        obj._state["_ccs"][int(args["index"])] = args["compute_capability"].name
        return True

    def h_IBuilderConfig__create_timing_cache(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance("ITimingCache", _blob=bytes(args["serialized_timing_cache"]))

    def h_IBuilderConfig__set_timing_cache(self, obj: Any, args: dict, returns: str) -> bool:
        blob = args["cache"]._state["_blob"]
        here = f"TC[{self.device_key}]".encode()
        if blob and not blob.startswith(here) and not args["ignore_mismatch"]:
            # TC-1: a cache from other device properties is refused unless ignore_mismatch
            return False
        obj._state["_timing_cache"] = args["cache"]
        return True

    def h_IBuilderConfig__get_timing_cache(self, obj: Any, args: dict, returns: str) -> Any:
        return obj._state.get("_timing_cache")

    def h_ITimingCache__serialize(self, obj: Any, args: dict, returns: str) -> Any:
        here = f"TC[{self.device_key}]".encode()
        blob = obj._state["_blob"]
        return self.api.instance("IHostMemory", _buffer=(blob if blob.startswith(here)
                                                         else here) + b"+timing")

    def h_Builder__build_serialized_network(self, obj: Any, args: dict, returns: str) -> Any:
        network, cfg = args["network"], args["config"]
        state = cfg._state
        flags = sorted(state["_flags"])
        strongly_typed = "STRONGLY_TYPED" in network._state["_flags"] or self.major >= 11 \
            or self.api.label.startswith("tensorrt_rtx")
        if strongly_typed and {"FP16", "INT8", "BF16", "FP8"} & set(flags):
            self._rule("IBuilderConfig.set_flag", "TYPE-1 a strongly typed network takes no "
                       f"precision flags (set: {flags})")
            return None
        dims = [t._state["shape"]._state["_dims"] for t in network._state["_inputs"]]
        if any(-1 in d for d in dims) and not state["_profiles"]:
            self._rule("Builder.build_serialized_network",
                       "DYN-2 a network with dynamic inputs needs an optimisation profile")
            return None
        if network._state.get("_int8_weights") and self.major < 10 \
                and not self.api.label.startswith("tensorrt_rtx"):
            self._rule("OnnxParser.parse_from_file", "QDQ-1 TensorRT 8.6 takes the weights of "
                       "Q/DQ models in FP32 only (pre-quantized INT8 weights: 10.0+)")
            return None
        if strongly_typed:
            precision = network._state.get("_graph_precision", "fp32")
        else:
            precision = "int8" if "INT8" in flags else "fp16" if "FP16" in flags else "fp32"
        if precision == "fp32" and "TF32" in flags:
            self._rule("IBuilderConfig.set_flag", "TF32-1 an FP32 build clears BuilderFlag.TF32 "
                       "(on by default: FP32 conv/GEMM would round to TF32 on Ampere+)")
        hw = state.get("hardware_compatibility_level")
        if hw is not None and hw.name == "AMPERE_PLUS" and (
                tuple(int(v) for v in self.build_cc.split(".")) < (8, 0) or self.integrated):
            self._rule("IBuilderConfig.hardware_compatibility_level", "HWC-1 hardware "
                       "compatibility needs an Ampere+ build GPU and is not supported on JetPack")
        device = state.get("default_device_type")
        dla_core = state.get("DLA_core")
        if device is not None and device.name == "DLA":
            if dla_core is None or not 0 <= dla_core < self.num_dla_cores:
                self._rule("IBuilderConfig.DLA_core",
                           "DLA-1 DLA_core in 0..num_DLA_cores-1 when building for DLA")
            if any(not p[0] == p[1] == p[2] for prof in state["_profiles"]
                   for p in prof.values()):
                self._rule("IBuilderConfig.default_device_type", "DLA-4 DLA needs min = opt = "
                           "max in every profile (else every layer falls back to the GPU)")
            if precision == "fp32":
                self._rule("IBuilderConfig.default_device_type", "DLA-5 DLA runs FP16 and INT8 "
                           "only (an FP32 network falls back to the GPU)")
        monitor = state.get("progress_monitor")
        if monitor is not None:  # TensorRT calls the monitor from the build, as documented
            monitor.phase_start("Building engine", None, 2)
            for step in range(2):
                if not monitor.step_complete("Building engine", step):
                    monitor.phase_finish("Building engine")
                    return None
            # TensorRT calls the monitor from several internal threads (PROG-2)
            import threading

            def tactic(i: int) -> None:
                monitor.phase_start(f"Tactic {i}", "Building engine", 1)
                monitor.step_complete(f"Tactic {i}", 0)
                monitor.phase_finish(f"Tactic {i}")
            threads = [threading.Thread(target=tactic, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            monitor.phase_finish("Building engine")
        record = {
            "version": self.api.version, "flags": flags,
            "network_flags": network._state["_flags"],
            "inputs": [_tensor_record(t) for t in network._state["_inputs"]],
            "outputs": [_tensor_record(t) for t in network._state["_outputs"]],
            "profiles": state["_profiles"],
            "verbosity": getattr(state.get("profiling_verbosity"), "name", None),
            "dla_core": dla_core if device is not None and device.name == "DLA" else None,
            "hardware_compatibility": getattr(state.get("hardware_compatibility_level"),
                                              "name", None),
            "pools": state["_pools"], "ccs": state["_ccs"],
            "onnx": network._state.get("_onnx"),
            "int8_weights": bool(network._state.get("_int8_weights")),
        }
        self.built.append(record)
        logger = obj._state.get("_logger")
        if logger is not None:
            logger.log(self.trt.ILogger.Severity.VERBOSE, "Layers:\nName: conv, LayerType: "
                       "Convolution, Inputs: [ { Name: input, Datatype: Float } ], Outputs: "
                       "[ { Name: logits, Datatype: Float } ], TacticName: double")
        return self.api.instance("IHostMemory", _buffer=PLAN_MAGIC + json.dumps(record).encode())

    # -- runtime ----------------------------------------------------------------------------
    def h_Runtime__num_DLA_cores(self, obj: Any, args: dict, returns: str) -> int:
        return self.num_dla_cores

    def h_Runtime__get_engine_validity(self, obj: Any, args: dict, returns: str) -> Any:
        obj._state["_validity_checked"] = True
        return (self._enum("EngineValidity", self.engine_validity), self.invalidity)

    def h_Runtime__deserialize_cuda_engine(self, obj: Any, args: dict, returns: str) -> Any:
        if "get_engine_validity" in self.api.dump["classes"]["Runtime"]["members"] \
                and not obj._state.get("_validity_checked"):
            self._rule("Runtime.deserialize_cuda_engine", "RTX-3 check the plan header with "
                       "get_engine_validity before deserializing (TensorRT-RTX)")
        data = bytes(args.get("serialized_engine", b""))
        if not data.startswith(PLAN_MAGIC):
            self._log(obj, "ERROR", "IRuntime::deserializeCudaEngine: magic tag does not match")
            return None
        plan = json.loads(data[len(PLAN_MAGIC):])
        flags = set(plan["flags"])
        if "VERSION_COMPATIBLE" in flags and "EXCLUDE_LEAN_RUNTIME" not in flags \
                and not obj._state.get("engine_host_code_allowed", False):
            self._rule("Runtime.deserialize_cuda_engine", "VC-1 a version-compatible plan with "
                       "the lean runtime embedded needs engine_host_code_allowed = True first")
            self._log(obj, "ERROR", "Cannot deserialize engine with lean runtime: host code "
                                    "not allowed")
            return None
        if plan["dla_core"] is not None and obj._state.get("DLA_core") != plan["dla_core"]:
            self._rule("Runtime.deserialize_cuda_engine", "DLA-2 set Runtime.DLA_core to the "
                       f"core the engine was built for ({plan['dla_core']}) before deserializing")
        return self.api.instance("ICudaEngine", _plan=plan, _logger=obj._state.get("_logger"))

    def _io(self, engine: Any) -> dict[str, dict[str, Any]]:
        plan = engine._state["_plan"]
        out = {t["name"]: dict(t, mode="INPUT") for t in plan["inputs"]}
        out.update({t["name"]: dict(t, mode="OUTPUT") for t in plan["outputs"]})
        return out

    def _tensor(self, engine: Any, name: str, call: str) -> dict[str, Any]:
        io = self._io(engine)
        if name not in io:
            self._rule(call, f"IO-1 {name!r} is not an I/O tensor of the engine ({list(io)})")
            return {"name": name, "mode": "NONE", "dtype": "FLOAT", "shape": []}
        return io[name]

    def h_ICudaEngine__num_io_tensors(self, obj: Any, args: dict, returns: str) -> int:
        return len(self._io(obj))

    def h_ICudaEngine__get_tensor_name(self, obj: Any, args: dict, returns: str) -> str:
        return list(self._io(obj))[args["index"]]

    def h_ICudaEngine__get_tensor_mode(self, obj: Any, args: dict, returns: str) -> Any:
        t = self._tensor(obj, args["name"], "ICudaEngine.get_tensor_mode")
        return self._enum("TensorIOMode", t["mode"])

    def h_ICudaEngine__get_tensor_dtype(self, obj: Any, args: dict, returns: str) -> Any:
        t = self._tensor(obj, args["name"], "ICudaEngine.get_tensor_dtype")
        return self._enum("DataType", t["dtype"])

    def h_ICudaEngine__get_tensor_shape(self, obj: Any, args: dict, returns: str) -> Any:
        return self._dims(self._tensor(obj, args["name"], "ICudaEngine.get_tensor_shape")["shape"])

    def h_ICudaEngine__get_tensor_profile_shape(self, obj: Any, args: dict, returns: str) -> Any:
        name = args["name"]
        profiles = obj._state["_plan"]["profiles"]
        index = int(args.get("profile_index", 0))
        if index >= len(profiles) or name not in profiles[index]:
            self._rule("ICudaEngine.get_tensor_profile_shape",
                       f"DYN-3 profile {index} of an input with dynamic shape")
            return []
        return [self._dims(d) for d in profiles[index][name]]

    def h_ICudaEngine__create_engine_inspector(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance(returns, _plan=obj._state["_plan"])

    def h_EngineInspector__get_engine_information(self, obj: Any, args: dict,
                                                  returns: str) -> str:
        plan = obj._state["_plan"]
        if plan["verbosity"] != "DETAILED":  # INSP-1: names only unless built DETAILED
            return json.dumps({"Layers": ["conv"], "Bindings": []})
        return json.dumps({"Layers": [{"Name": "conv", "LayerType": "Convolution",
                                       "Inputs": [{"Format/Datatype": "Float"}],
                                       "Outputs": [{"Format/Datatype": "Float"}],
                                       "TacticName": "double"}]})

    # -- optimization profiles per execution context (PROF-1) ------------------------------
    @property
    def _one_holder_per_profile(self) -> bool:
        """TensorRT before 9.0 (8.6): a profile is held by one live context at a time; a new
        context gets profile 0 only when no other context holds it, else -1 (8.6
        ``NvInferRuntime.h``: ``createExecutionContext`` "will call setOptimizationProfile(0)
        implicitly if there are no other execution contexts assigned to optimization profile
        0"; ``getOptimizationProfile``: -1 "and all calls to enqueueV2()/enqueueV3()/
        executeV2() will fail until a valid profile index has been set"; NVIDIA/TensorRT
        issue 846: "Profile 0 has been chosen by another IExecutionContext"). 9.0+ and
        TensorRT-RTX: every context starts on profile 0."""
        return self.major < 9 and not self.api.label.startswith("tensorrt_rtx")

    def _holder(self, engine: Any, profile: int) -> Any:
        """The live context of ``engine`` that holds ``profile`` (contexts are freed with their
        last reference, as TensorRT's Python objects are)."""
        for ctx in list(engine._state.setdefault("_contexts", weakref.WeakSet())):
            if ctx._state.get("_profile") == profile:
                return ctx
        return None

    def _new_context(self, engine: Any, **state: Any) -> Any:
        profile = 0
        if self._one_holder_per_profile and self._holder(engine, 0) is not None:
            profile = -1
        ctx = self.api.instance("IExecutionContext", _engine=engine, _shapes={}, _addresses={},
                                _profile=profile, **state)
        engine._state.setdefault("_contexts", weakref.WeakSet()).add(ctx)
        return ctx

    def h_IExecutionContext__active_optimization_profile(self, obj: Any, args: dict,
                                                         returns: str) -> int:
        return int(obj._state["_profile"])

    def h_IExecutionContext__set_optimization_profile_async(self, obj: Any, args: dict,
                                                            returns: str) -> bool:
        engine, index = obj._state["_engine"], int(args["profile_index"])
        if not 0 <= index < max(len(engine._state["_plan"]["profiles"]), 1):
            self._log(engine, "ERROR", f"profile index {index} is out of range")
            return False
        holder = self._holder(engine, index) if self._one_holder_per_profile else None
        if holder is not None and holder is not obj:
            self._log(engine, "ERROR", f"Profile {index} has been chosen by another "
                      "IExecutionContext. Use another profileIndex or destroy the "
                      "IExecutionContext that use this profile.")
            return False
        obj._state["_profile"] = index
        return True

    def h_ICudaEngine__create_execution_context(self, obj: Any, args: dict, returns: str) -> Any:
        strategy = args.get("strategy")
        config = args.get("runtime_config")
        if config is not None:
            strategy = config._state.get("_strategy")
        user = strategy is not None and strategy.name == "USER_MANAGED"
        return self._new_context(obj, _config=config, _needs_memory=user)

    def h_ICudaEngine__create_execution_context_without_device_memory(
            self, obj: Any, args: dict, returns: str) -> Any:
        return self._new_context(obj, _config=None, _needs_memory=True)

    _ACTIVATION_BYTES = 3 << 20

    def h_ICudaEngine__device_memory_size(self, obj: Any, args: dict, returns: str) -> int:
        return self._ACTIVATION_BYTES

    h_ICudaEngine__device_memory_size_v2 = h_ICudaEngine__device_memory_size

    def _set_memory(self, ctx: Any, address: int, size: int | None, call: str) -> None:
        if address % 256:
            self._rule(call, "MEM-2 device memory for a context is 256-byte aligned")
        if size is not None and size < self._ACTIVATION_BYTES:
            self._rule(call, "MEM-2 device memory for a context holds at least "
                       "device_memory_size(_v2) bytes")
        ctx._state["_memory"] = address

    def h_IExecutionContext__set_device_memory(self, obj: Any, args: dict, returns: str) -> None:
        self._set_memory(obj, int(args["memory"]), int(args["size"]),
                         "IExecutionContext.set_device_memory")

    def h_ICudaEngine__create_runtime_config(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance("IRuntimeConfig", _strategy=None)

    def h_IRuntimeConfig__set_execution_context_allocation_strategy(
            self, obj: Any, args: dict, returns: str) -> None:
        obj._state["_strategy"] = args.get("strategy")

    def h_IRuntimeConfig__create_runtime_cache(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance("IRuntimeCache", _blob=b"")

    def h_IRuntimeConfig__set_runtime_cache(self, obj: Any, args: dict, returns: str) -> bool:
        obj._state["_cache"] = args.get("cache")
        return True

    def h_IRuntimeCache__deserialize(self, obj: Any, args: dict, returns: str) -> bool:
        blob = bytes(args["blob"])
        if not blob.startswith(b"RTXCACHE"):
            return False
        obj._state["_blob"] = blob
        return True

    def h_IRuntimeCache__serialize(self, obj: Any, args: dict, returns: str) -> Any:
        return self.api.instance("IHostMemory", _buffer=b"RTXCACHE" + obj._state["_blob"][8:]
                                 + b"+kernels")

    def _changed_after_capture(self, ctx: Any, call: str, what: str, before: Any,
                               after: Any) -> None:
        if ctx._state.get("_captured") and before != after:
            self._rule(call, f"GRAPH-1 one execution context per captured CUDA graph: this "
                       f"context was captured into a graph; changing its {what} ({before} -> "
                       f"{after}) afterwards is undefined behaviour for that graph")

    def h_IExecutionContext__set_input_shape(self, obj: Any, args: dict, returns: str) -> bool:
        engine = obj._state["_engine"]
        name, shape = args["name"], tuple(args["shape"])
        self._changed_after_capture(obj, "IExecutionContext.set_input_shape", f"{name} shape",
                                    obj._state["_shapes"].get(name), shape)
        t = self._tensor(engine, name, "IExecutionContext.set_input_shape")
        if t["mode"] != "INPUT":
            self._rule("IExecutionContext.set_input_shape", f"IO-2 {name!r} is not an input")
            return False
        profiles = engine._state["_plan"]["profiles"]
        if profiles:
            lo, _, hi = profiles[0][name]
            if not all(a <= s <= b for a, s, b in zip(lo, shape, hi)) or len(shape) != len(lo):
                self._log(obj._state["_engine"], "ERROR", f"shape {shape} outside the profile")
                return False
        elif shape != tuple(t["shape"]):
            return False
        obj._state["_shapes"][name] = shape
        return True

    def h_IExecutionContext__set_tensor_address(self, obj: Any, args: dict, returns: str) -> bool:
        self._tensor(obj._state["_engine"], args["name"], "IExecutionContext.set_tensor_address")
        if int(args["memory"]) % 256:
            self._rule("IExecutionContext.set_tensor_address",
                       "IO-3 tensor addresses are 256-byte aligned")
        self._changed_after_capture(obj, "IExecutionContext.set_tensor_address",
                                    f"{args['name']} address",
                                    obj._state["_addresses"].get(args["name"]),
                                    int(args["memory"]))
        obj._state["_addresses"][args["name"]] = int(args["memory"])
        return True

    def h_IExecutionContext__execute_async_v3(self, obj: Any, args: dict, returns: str) -> bool:
        engine = obj._state["_engine"]
        io = self._io(engine)
        if "device_memory" in obj._state:  # the property write (8.6 / 10.0 path)
            self._set_memory(obj, int(obj._state["device_memory"]), None,
                             "IExecutionContext.device_memory")
        if obj._state["_profile"] < 0:
            self._rule("IExecutionContext.execute_async_v3", "PROF-1 TensorRT 8.6: this context "
                       "has no optimization profile (profile 0 went to the engine's first "
                       "context); every enqueue fails until one is set")
            self._log(engine, "ERROR", "IExecutionContext::enqueueV3: optimization profile "
                      "not set")
            return False
        if obj._state.get("_needs_memory") and obj._state.get("_memory") is None:
            self._rule("IExecutionContext.execute_async_v3", "MEM-1 a context created without "
                       "device memory (USER_MANAGED / without_device_memory) gets it first")
            return False
        stream = int(args["stream_handle"])
        if self.capturing is not None and self.capturing(stream):
            if self.api.label.startswith("tensorrt_rtx") \
                    and "REQUIRE_USER_ALLOCATION" not in engine._state["_plan"]["flags"]:
                self._rule("IExecutionContext.execute_async_v3", "RTX-2 stream capture of a "
                           "TensorRT-RTX engine needs one built with REQUIRE_USER_ALLOCATION "
                           "(and is_stream_capturable); use the runtime CUDA-graph strategy")
            obj._state["_captured"] = True
        for name, t in io.items():
            if name not in obj._state["_addresses"]:
                self._rule("IExecutionContext.execute_async_v3",
                           f"IO-4 every I/O tensor has an address first ({name!r} has none)")
                return False
            if t["mode"] == "INPUT" and -1 in t["shape"] and name not in obj._state["_shapes"]:
                self._rule("IExecutionContext.execute_async_v3",
                           f"DYN-4 every dynamic input has a shape first ({name!r} has none)")
                return False
        self.executed += 1
        if self.compute is not None:
            import numpy as np

            shapes = {n: obj._state["_shapes"].get(n, tuple(t["shape"])) for n, t in io.items()}
            batch = next(iter(shapes.values()))[0]
            self.compute(int(args["stream_handle"]),
                         {n: (obj._state["_addresses"][n],
                              tuple(batch if d < 0 else d for d in shapes[n]),
                              np.dtype(self.api.dump["nptype"][t["dtype"]]))
                          for n, t in io.items()}, self.parsed[engine._state["_plan"]["onnx"]])
        return True


def _tensor_record(t: Any) -> dict[str, Any]:
    return {"name": t._state["name"], "shape": list(t._state["shape"]._state["_dims"]),
            "dtype": t._state["dtype"].name}
