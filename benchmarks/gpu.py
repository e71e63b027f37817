"""GPU speed of the papers' models: steps/s, GPU memory and achieved against peak FLOP/s, per GPU switch.

    python benchmarks/gpu.py --data-root ../shared/data                      # ResNet-56 (batch 128), AWD-LSTM (paper)
    python benchmarks/gpu.py --data-root ../shared/data --switches fp32,tf32,tf32+channels_last,tf32+compile

Each model is the plain loop of benchmarks/bare_loop.py (the recipe's model, data, batch and optimizer on one
device, `optimizer.step(closure)`), under each switch `repro run` has: `tf32` (TF32 matmuls and cuDNN
convolutions), `channels_last` (NHWC, the CNN only), `compile` (torch.compile of the model). `fp32` is the papers'
arithmetic and repro's default. The models:

  resnet56-cifar10  --preset paper --set batch_size=128: ResNet-56 (option A, no BN as the AdamW paper's) at batch 128
  lstm-ptb          --preset paper with a fixed BPTT of 70 and no AR/TAR penalties (the loop draws no variable
                    lengths): the CELGC paper's AWD-LSTM and per-worker batch

FLOPs of one training step (forward, backward, the optimizer) are counted once by torch.utils.flop_counter with
cuDNN and oneDNN off, so that the LSTM runs as matmuls the counter sees (a fused LSTM is one opaque kernel to it);
achieved FLOP/s = FLOPs per step x steps/s, against --peak-tflops (default: the device's dense FP32 and TF32
tensor-core peaks from PEAKS where its name is listed). GPU memory: torch.cuda.max_memory_allocated over the timed
steps. On a machine without CUDA it runs on the CPU (peak unknown), so that the script cannot rot unnoticed.
Writes one CSV row per model and switch (--csv).
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import torch

import bare_loop  # beside this file (benchmarks/ is this script's sys.path[0]): the model, data and loop

BENCH = Path(__file__).resolve().parent
# Dense peaks in TFLOP/s from the vendors' data sheets: (FP32 on CUDA cores, TF32 on tensor cores).
PEAKS = {"H200": (67.0, 494.7), "H100 80GB HBM3": (67.0, 494.7), "H100 PCIe": (51.2, 378.0),
         "A100": (19.5, 156.0), "L40S": (91.6, 183.0), "V100": (15.7, 15.7), "RTX 4090": (82.6, 82.6),
         "A10G": (31.2, 62.5), "T4": (8.1, 8.1)}
MODELS = {"resnet56-cifar10": {"preset": "paper", "options": {"batch_size": 128}},
          "lstm-ptb": {"preset": "paper", "options": {"variable_bptt": False, "alpha": 0.0, "beta": 0.0}}}
SWITCHES = ("fp32", "tf32", "tf32+channels_last", "tf32+compile")


def peak_tflops(device: torch.device, given: float | None, tf32: bool) -> float | None:
    if given is not None:
        return given
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (fp32, tf32_peak) in PEAKS.items():
        if key in name:
            return tf32_peak if tf32 else fp32
    return None


def measure(task: str, switch: str, data_dir: str | None, steps: int, device: torch.device,
            peak: float | None, extra_options: dict | None = None) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    parts = set(switch.split("+"))
    tf32 = "tf32" in parts
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    setting = MODELS[task]
    config, task_cls, model, next_batch, loss_of, optimizer = bare_loop.build_all(
        task, setting["preset"], data_dir, {**setting["options"], **(extra_options or {})}, device)
    if "channels_last" in parts:
        if hasattr(task_cls, "corpus_name"):
            return {}  # a CNN switch
        model.to(memory_format=torch.channels_last)
        inner = next_batch
        next_batch = lambda: (lambda x, y: (x.contiguous(memory_format=torch.channels_last), y))(*inner())  # noqa: E731

    def closure():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_of(next_batch())
        loss.backward()
        return loss

    model.train()
    with (torch.backends.cudnn.flags(enabled=False), torch.backends.mkldnn.flags(enabled=False),
          FlopCounterMode(display=False) as counter):
        optimizer.step(closure)  # also the warm-up: optimizer state, first allocations
    flops = counter.get_total_flops()
    if "compile" in parts:
        model.compile()  # in place: the loop's calls of the model run the compiled forward
    for _ in range(3 if "compile" in parts else 1):  # compilation, cuDNN autotuning
        optimizer.step(closure)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.step(closure)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    achieved = flops * steps / seconds / 1e12
    peak = peak_tflops(device, peak, tf32)
    return {"task": task, "switch": switch, "device": torch.cuda.get_device_name(device) if device.type == "cuda"
            else "cpu", "optimizer": config.optimizer.name, "batch": config.task.options.get("batch_size"),
            "steps_per_s": steps / seconds, "gpu_memory_mb": torch.cuda.max_memory_allocated(device) / 2 ** 20
            if device.type == "cuda" else None, "gflops_per_step": flops / 1e9, "achieved_tflops": achieved,
            "peak_tflops": peak, "fraction_of_peak": achieved / peak if peak else None}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-root", type=Path, help="folder with ptb/ and cifar10-jpeg.tar.gz (default: each task's own)")
    p.add_argument("--tasks", default=",".join(MODELS), help=f"of {', '.join(MODELS)}")
    p.add_argument("--switches", default=",".join(SWITCHES), help=f"of {', '.join(SWITCHES)}")
    p.add_argument("--steps", type=int, default=50, help="timed steps after the warm-up")
    p.add_argument("--peak-tflops", type=float, help="the device's peak (default: from PEAKS by its name)")
    p.add_argument("--csv", type=Path, default=BENCH / "results" / "gpu.csv")
    args = p.parse_args(argv)
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    rows = []
    for task in [t for t in args.tasks.split(",") if t]:
        if task not in MODELS:
            p.error(f"unknown task {task!r} (known: {', '.join(MODELS)})")
        data_dir, extra = None, {}
        if args.data_root is not None:
            data_dir = str(args.data_root / "ptb") if task.startswith("lstm-") else str(args.data_root)
            if (args.data_root / "cifar10-jpeg.tar.gz").is_file() and "cifar10" in task:
                extra = {"data_format": "jpeg"}  # the shared copy: a JPEG ImageFolder tarball
        for switch in [s for s in args.switches.split(",") if s]:
            if switch not in SWITCHES:
                p.error(f"unknown switch {switch!r} (known: {', '.join(SWITCHES)})")
            row = measure(task, switch, data_dir, args.steps, device, args.peak_tflops, extra)
            if not row:
                continue
            rows.append(row)
            share = f" = {row['fraction_of_peak']:.1%} of {row['peak_tflops']:.0f}" if row["peak_tflops"] else ""
            memory = f", {row['gpu_memory_mb']:.0f} MB" if row["gpu_memory_mb"] is not None else ""
            print(f"{task} {switch} on {row['device']}: {row['steps_per_s']:.2f} steps/s{memory}, "
                  f"{row['gflops_per_step']:.1f} GFLOP/step, {row['achieved_tflops']:.2f} TFLOP/s{share}", flush=True)
    args.csv.parent.mkdir(parents=True, exist_ok=True)
    with open(args.csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["task"])
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
