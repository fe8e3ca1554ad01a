"""An independent NumPy implementation of Keras' Xception forward pass (NHWC, HWIO kernels,
TensorFlow 'same'/'valid' padding, BatchNorm eps 1e-3), computed in float64 straight from the
Keras layer weights. Tests compare our converted PyTorch model against it; it shares no code
with xception_trt's converter."""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _tf_same_pads(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _pad_same(x, k, s, value=0.0):
    (top, bottom), (left, right) = _tf_same_pads(x.shape[1], k, s), _tf_same_pads(x.shape[2], k, s)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)


def conv(x, kernel, stride=1, padding="valid"):
    kh, kw = kernel.shape[:2]
    if padding == "same":
        x = _pad_same(x, kh, stride)
    win = sliding_window_view(x, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    return np.einsum("nhwcij,ijco->nhwo", win, kernel)


def depthwise_same(x, kernel):
    x = _pad_same(x, kernel.shape[0], 1)
    win = sliding_window_view(x, kernel.shape[:2], axis=(1, 2))
    return np.einsum("nhwcij,ijc->nhwc", win, kernel[..., 0])


def maxpool_same(x):
    x = _pad_same(x, 3, 2, value=-np.inf)
    return sliding_window_view(x, (3, 3), axis=(1, 2))[:, ::2, ::2].max(axis=(-2, -1))


def bn(x, w, eps=1e-3):
    return (x - w["moving_mean"]) / np.sqrt(w["moving_variance"] + eps) * w["gamma"] + w["beta"]


def relu(x):
    return np.maximum(x, 0.0)


def keras_xception_logits(layers, x_nhwc, *, middle_blocks):
    """Pre-softmax outputs of Keras' Xception for float NHWC input, from Keras layer weights
    (``{layer: {kernel|depthwise_kernel|pointwise_kernel|gamma|...: array}}``; residual convs
    and BNs named ``conv2d_1..`` / ``batch_normalization_1..``)."""
    L = {k: {n: np.asarray(a, np.float64) for n, a in v.items()} for k, v in layers.items()}

    def sep(x, name):
        return conv(depthwise_same(x, L[name]["depthwise_kernel"]), L[name]["pointwise_kernel"])

    x = np.asarray(x_nhwc, np.float64)
    x = relu(bn(conv(x, L["block1_conv1"]["kernel"], 2), L["block1_conv1_bn"]))
    x = relu(bn(conv(x, L["block1_conv2"]["kernel"], 1), L["block1_conv2_bn"]))
    res_i = 1

    def residual(x):
        nonlocal res_i
        r = bn(conv(x, L[f"conv2d_{res_i}"]["kernel"], 2, "same"),
               L[f"batch_normalization_{res_i}"])
        res_i += 1
        return r

    for blk in (2, 3, 4):
        r = residual(x)
        if blk != 2:
            x = relu(x)
        x = bn(sep(x, f"block{blk}_sepconv1"), L[f"block{blk}_sepconv1_bn"])
        x = bn(sep(relu(x), f"block{blk}_sepconv2"), L[f"block{blk}_sepconv2_bn"])
        x = maxpool_same(x) + r
    for blk in range(5, 5 + middle_blocks):
        r = x
        for k in (1, 2, 3):
            x = bn(sep(relu(x), f"block{blk}_sepconv{k}"), L[f"block{blk}_sepconv{k}_bn"])
        x = x + r
    blk = 5 + middle_blocks
    r = residual(x)
    x = bn(sep(relu(x), f"block{blk}_sepconv1"), L[f"block{blk}_sepconv1_bn"])
    x = bn(sep(relu(x), f"block{blk}_sepconv2"), L[f"block{blk}_sepconv2_bn"])
    x = maxpool_same(x) + r
    blk += 1
    x = relu(bn(sep(x, f"block{blk}_sepconv1"), L[f"block{blk}_sepconv1_bn"]))
    x = relu(bn(sep(x, f"block{blk}_sepconv2"), L[f"block{blk}_sepconv2_bn"]))
    feat = x.mean(axis=(1, 2))
    return feat @ L["predictions"]["kernel"] + L["predictions"]["bias"]


def random_keras_layers(rng, *, width_ch, middle_blocks, num_classes, include_top=True):
    """Random Keras-layout Xception weights. ``width_ch(c)`` maps the paper's channels to ours.
    Returns an ordered dict in Keras' layer order (residual convs before their block)."""
    layers: dict[str, dict[str, np.ndarray]] = {}

    def bn_w(c):
        return {"gamma": rng.uniform(0.5, 1.5, c), "beta": rng.normal(0, 0.1, c),
                "moving_mean": rng.normal(0, 0.1, c), "moving_variance": rng.uniform(0.5, 1.5, c)}

    def conv_w(k, cin, cout):
        return {"kernel": rng.normal(0, np.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout))}

    def sep_w(cin, cout):
        return {"depthwise_kernel": rng.normal(0, np.sqrt(2.0 / 9), (3, 3, cin, 1)),
                "pointwise_kernel": rng.normal(0, np.sqrt(1.0 / cin), (1, 1, cin, cout))}

    c = width_ch
    layers["block1_conv1"] = conv_w(3, 3, c(32))
    layers["block1_conv1_bn"] = bn_w(c(32))
    layers["block1_conv2"] = conv_w(3, c(32), c(64))
    layers["block1_conv2_bn"] = bn_w(c(64))
    res = 1
    cin = c(64)
    for blk, cout in ((2, c(128)), (3, c(256)), (4, c(728))):
        layers[f"conv2d_{res}"] = conv_w(1, cin, cout)
        layers[f"batch_normalization_{res}"] = bn_w(cout)
        res += 1
        layers[f"block{blk}_sepconv1"] = sep_w(cin, cout)
        layers[f"block{blk}_sepconv1_bn"] = bn_w(cout)
        layers[f"block{blk}_sepconv2"] = sep_w(cout, cout)
        layers[f"block{blk}_sepconv2_bn"] = bn_w(cout)
        cin = cout
    for blk in range(5, 5 + middle_blocks):
        for k in (1, 2, 3):
            layers[f"block{blk}_sepconv{k}"] = sep_w(cin, cin)
            layers[f"block{blk}_sepconv{k}_bn"] = bn_w(cin)
    blk = 5 + middle_blocks
    layers[f"conv2d_{res}"] = conv_w(1, cin, c(1024))
    layers[f"batch_normalization_{res}"] = bn_w(c(1024))
    layers[f"block{blk}_sepconv1"] = sep_w(cin, cin)
    layers[f"block{blk}_sepconv1_bn"] = bn_w(cin)
    layers[f"block{blk}_sepconv2"] = sep_w(cin, c(1024))
    layers[f"block{blk}_sepconv2_bn"] = bn_w(c(1024))
    blk += 1
    layers[f"block{blk}_sepconv1"] = sep_w(c(1024), c(1536))
    layers[f"block{blk}_sepconv1_bn"] = bn_w(c(1536))
    layers[f"block{blk}_sepconv2"] = sep_w(c(1536), c(2048))
    layers[f"block{blk}_sepconv2_bn"] = bn_w(c(2048))
    if include_top:
        layers["predictions"] = {"kernel": rng.normal(0, 0.05, (c(2048), num_classes)),
                                 "bias": rng.normal(0, 0.05, num_classes)}
    return {k: {n: a.astype(np.float32) for n, a in v.items()} for k, v in layers.items()}


def write_keras_h5(path, layers, *, full_model=False):
    """Write ``layers`` in the Keras 2 legacy HDF5 layout (``save_weights``; with
    ``full_model`` the weights sit under ``model_weights`` as in ``model.save``)."""
    import h5py

    with h5py.File(path, "w") as f:
        root = f.create_group("model_weights") if full_model else f
        names = ["input_1"] + list(layers)
        root.attrs["layer_names"] = [n.encode() for n in names]
        root.attrs["backend"] = b"tensorflow"
        root.attrs["keras_version"] = b"2.2.4"
        root.create_group("input_1").attrs["weight_names"] = []
        for name, weights in layers.items():
            g = root.create_group(name)
            wnames = [f"{name}/{w}:0" for w in weights]
            g.attrs["weight_names"] = [w.encode() for w in wnames]
            for wname, arr in zip(wnames, weights.values()):
                g.create_dataset(wname, data=arr)
