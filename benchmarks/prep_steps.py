"""Time per image on CPU for each preprocessing step, with random-weight networks at their real size.

    OMP_NUM_THREADS=1 python benchmarks/prep_steps.py --threads 1 --repeats 3

- OpenPose: the real body network (52.3 M parameters) at scale 1.0 (368 px high input for a 512 x 384 photo);
  decoding timed separately on constructed heatmaps/PAFs of one person (random weights give meaningless peaks).
- Parsing: an ONNX graph of the SCHP parser's cost (ResNet-101 backbone, output stride 16 with a dilated last
  stage, a 1/4-resolution decoder, parsing/fusion/edge outputs) at 512 x 512 (ATR) and 473 x 473 (LIP), run by
  onnxruntime on CPU through the same wrapper as the real files.
- Mask rules on a 512-high person label map, garment clean-up on a 1024 x 768 product photo.
Prints the median seconds per image and each step's share of the whole chain, measured side by side in one run.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from leffa.preprocess.example_person import example_person  # noqa: E402
from leffa.preprocess.garment import clean_garment  # noqa: E402
from leffa.preprocess.masks import agnostic_mask  # noqa: E402
from leffa.preprocess.openpose import KEYPOINT_NAMES, LIMBS, PAF_CHANNELS, BodyPoseNet, decode_people, network_maps  # noqa: E402
from leffa.preprocess.parsing import HumanParser, combine_parsings  # noqa: E402


class GraphBuilder:
    """Just enough of ResNet-101 + an SCHP-like head in raw ONNX nodes, with He-initialised random weights."""

    def __init__(self, seed: int = 0):
        self.nodes, self.weights, self.count = [], [], 0
        self.rng = np.random.default_rng(seed)

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def conv(self, x, c_in, c_out, k=1, stride=1, dilation=1, relu=True):
        w, b, y = self.name("w"), self.name("b"), self.name("conv")
        std = (2.0 / (c_in * k * k)) ** 0.5
        kernel = (self.rng.standard_normal((c_out, c_in, k, k)) * std).astype(np.float32)
        self.weights += [numpy_helper.from_array(kernel, w),
                         numpy_helper.from_array(np.zeros(c_out, np.float32), b)]  # fmt: skip
        pad = dilation * (k // 2)
        self.nodes.append(helper.make_node("Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           dilations=[dilation, dilation], pads=[pad] * 4))  # fmt: skip
        return self.relu(y) if relu else y

    def relu(self, x):
        y = self.name("relu")
        self.nodes.append(helper.make_node("Relu", [x], [y]))
        return y

    def add(self, a, b):
        y = self.name("add")
        self.nodes.append(helper.make_node("Add", [a, b], [y]))
        return y

    def bottleneck(self, x, c_in, width, stride, dilation):
        out = self.conv(x, c_in, width, 1)
        out = self.conv(out, width, width, 3, stride, dilation)
        out = self.conv(out, width, width * 4, 1, relu=False)
        skip = x if (c_in == width * 4 and stride == 1) else self.conv(x, c_in, width * 4, 1, stride, relu=False)
        return self.relu(self.add(out, skip))


def schp_like_onnx(path: Path, size: int, classes: int) -> Path:
    g = GraphBuilder()
    x = g.conv("input.1", 3, 64, 3, 2)
    x = g.conv(x, 64, 64, 3)
    x = g.conv(x, 64, 128, 3)
    pooled = g.name("pool")
    g.nodes.append(helper.make_node("MaxPool", [x], [pooled], kernel_shape=[3, 3], strides=[2, 2], pads=[1] * 4))
    x, c_in, low = pooled, 128, None
    for width, blocks, stride, dilation in ((64, 3, 1, 1), (128, 4, 2, 1), (256, 23, 2, 1), (512, 3, 1, 2)):
        for i in range(blocks):
            x = g.bottleneck(x, c_in, width, stride if i == 0 else 1, dilation)
            c_in = width * 4
        low = x if low is None else low
    context = g.conv(x, 2048, 512, 3)  # PSP-like context at 1/16
    up = g.name("up")  # resize the 1/16 context to the 1/4 features' size (473 px: 30 -> 119, not 120)
    g.weights += [numpy_helper.from_array(np.array([i], np.int64), f"i{i}") for i in (0, 2, 4)]
    g.nodes += [helper.make_node("Shape", [context], ["shape_context"]),
                helper.make_node("Shape", [low], ["shape_low"]),
                helper.make_node("Slice", ["shape_context", "i0", "i2"], ["nc"]),
                helper.make_node("Slice", ["shape_low", "i2", "i4"], ["hw"]),
                helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
                helper.make_node("Resize", [context, "", "", "sizes"], [up], mode="linear")]  # fmt: skip
    joined = g.name("cat")
    g.nodes.append(helper.make_node("Concat", [up, low], [joined], axis=1))
    decoded = g.conv(g.conv(joined, 768, 256, 3), 256, 256, 3)
    parsing = g.conv(decoded, 256, classes, 1, relu=False)
    edge = g.conv(low, 256, 2, 1, relu=False)
    fusion = g.conv(g.conv(decoded, 256, 256, 1), 256, classes, 1, relu=False)
    graph = helper.make_graph(
        g.nodes, "schp_like", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info(parsing, TensorProto.FLOAT, [1, classes, None, None]),
         helper.make_tensor_value_info(fusion, TensorProto.FLOAT, [1, classes, None, None]),
         helper.make_tensor_value_info(edge, TensorProto.FLOAT, [1, 2, None, None])], g.weights,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def onnx_gmacs(path: Path) -> float:
    """Multiply-accumulates of the graph's convolutions, from ONNX shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim] for v in model.graph.value_info}
    weights = {w.name: list(w.dims) for w in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv" and node.output[0] in shapes:
            c_out, c_in, kh, kw = weights[node.input[1]]
            total += int(np.prod(shapes[node.output[0]])) * c_in * kh * kw
    return total / 1e9


def torch_gmacs(net: torch.nn.Module, x: torch.Tensor) -> float:
    total = 0

    def count(module, _, out):
        nonlocal total
        total += out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        net(x)
    for hook in hooks:
        hook.remove()
    return total / 1e9


def constructed_maps(keypoints: np.ndarray, height: int, width: int):
    heat = np.zeros((19, height, width), np.float32)
    paf = np.zeros((38, height, width), np.float32)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(len(KEYPOINT_NAMES)):
        heat[i] = np.exp(-((xs - keypoints[i, 0]) ** 2 + (ys - keypoints[i, 1]) ** 2) / 32)
    for (a, b), (cx, cy) in zip(LIMBS, PAF_CHANNELS):
        d = keypoints[b, :2] - keypoints[a, :2]
        u = d / np.hypot(*d)
        t = np.clip(((xs - keypoints[a, 0]) * u[0] + (ys - keypoints[a, 1]) * u[1]) / np.hypot(*d), 0, 1)
        near = np.hypot(xs - keypoints[a, 0] - t * d[0], ys - keypoints[a, 1] - t * d[1]) <= 4
        paf[cx][near], paf[cy][near] = u
    return heat, paf


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    labels, keypoints, photo = example_person(512)
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as folder:
        atr_file = schp_like_onnx(Path(folder) / "atr.onnx", 512, 18)
        lip_file = schp_like_onnx(Path(folder) / "lip.onnx", 473, 20)
        print(f"SCHP-cost ONNX: {onnx_gmacs(atr_file):.1f} GMAC at 512 px, {onnx_gmacs(lip_file):.1f} GMAC at 473 px")
        atr = HumanParser(atr_file, "atr", "cpu", threads=args.threads)
        lip = HumanParser(lip_file, "lip", "cpu", threads=args.threads)
        results["parsing ATR (SCHP-cost ONNX, 512 px)"] = timed(lambda: atr(photo), args.repeats)
        results["parsing LIP (SCHP-cost ONNX, 473 px)"] = timed(lambda: lip(photo), args.repeats)
    atr_labels = labels
    results["parsing combination (islands, neck)"] = timed(lambda: combine_parsings(atr_labels, None), args.repeats)
    net = BodyPoseNet().eval()
    print(
        f"OpenPose: {sum(p.numel() for p in net.parameters()) / 1e6:.1f} M parameters, "
        f"{torch_gmacs(net, torch.zeros(1, 3, 368, 280)):.1f} GMAC at 368 x 280 (a 512 x 384 photo at scale 1.0)"
    )
    results["OpenPose network (368 px, random weights)"] = timed(lambda: network_maps(net, photo, (1.0,)), args.repeats)
    heat, paf = constructed_maps(keypoints, 512, 384)
    results["OpenPose decoding (one person)"] = timed(lambda: decode_people(heat, paf), args.repeats)
    for rules in ("upstream", "tight"):  # the authors' rules (the default) and ours (--mask-style tight)
        for style in ("hd", "dc"):
            results[f"mask rules ({style}, {rules}, mean of 3 types)"] = (
                timed(
                    lambda style=style, rules=rules: [
                        agnostic_mask(labels, keypoints, t, style, rules)
                        for t in ("upper_body", "lower_body", "dresses")
                    ],
                    args.repeats,
                )
                / 3
            )
    product = np.full((1024, 768, 3), 212, np.uint8)
    product[200:800, 180:600] = (180, 50, 40)
    product_image = Image.fromarray(product)
    results["garment clean-up (1024 x 768, backdrop)"] = timed(lambda: clean_garment(product_image), args.repeats)
    in_chain = ("mask rules (hd, upstream",)  # the default mask of `leffa prep mask`
    chain = sum(v for k, v in results.items() if not k.startswith(("mask rules", "garment")) or k.startswith(in_chain))
    print(f"threads={args.threads} repeats={args.repeats} torch={torch.__version__}")
    print(f"{'step':46s} {'s/image':>9s} {'share of person chain':>22s}")
    for name, seconds in results.items():
        outside = name.startswith(("mask rules", "garment")) and not name.startswith(in_chain)
        share = "" if outside else f"{seconds / chain:.1%}"
        print(f"{name:46s} {seconds:9.3f} {share:>22s}")
    print(f"{'person chain (ATR+LIP+OpenPose+hd upstream mask)':46s} {chain:9.3f}")


if __name__ == "__main__":
    main()
