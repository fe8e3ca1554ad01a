"""The small demo configuration the tests run (a narrow Xception at 71x71, one epoch, a few
images): the end-to-end demo test and the README/examples tests build their work folder with it."""

from __future__ import annotations

from xception_trt.config import AugmentConfig, TrainConfig
from xception_trt.demo.config import DemoConfig

SMALL_DEMO = DemoConfig(
    width=0.125, middle_blocks=0, input_size=71,
    train=TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.05, warmup_epochs=0.0,
                      augment=AugmentConfig(scale=(0.6, 1.0), hflip=False), seed=0),
    max_train_images=64, max_val_images=40, calibration_images=16, max_batch=4,
    bench_batch_sizes=(1,), bench_iterations=2, bench_warmup=1)
