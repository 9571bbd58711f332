"""Fine-tune a PyTorch CNN with irkit: a small torchvision-style ResNet (Conv-BatchNorm-ReLU
blocks with a residual path, global pooling, a linear head) goes out through
`torch.onnx.export` (its default exporter), irkit fine-tunes the ONNX file on images of the
model's own shape (N, 3, 16, 16) kept in an .npz, and writes an inference ONNX file that
onnxruntime runs without irkit.

    python examples/finetune_vision.py [folder]

The same fine-tune from the command line:

    irkit train cnn.onnx --data images.npz -o cnn_finetuned.onnx --optimizer adamw \
        --lr 0.003 --clip-norm 1 --epochs 4

Needs torch and onnxscript (pip install -e ".[torch]"). Runs offline in seconds: the weights
are random (a pretrained checkpoint would load the same way) and the images are synthetic,
each class a bright stripe in its own place and colour.

The net is exported with the exporter's defaults (eval mode, its optimizer on), which fold
each BatchNorm into the convolution before it: irkit fine-tunes the folded convolutions and
says so (`irkit inspect cnn.onnx`: "note: folded: ..."). Exported with `optimize=False`, the
file keeps torch's conv and BatchNorm parameters, and irkit trains BatchNorm on the batch's
statistics as torch's `model.train()` does (`irkit train --batchnorm train`, the default), then
writes the model in inference mode with the running statistics it updated.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import warnings

import numpy as np
import torch

import irkit
from irkit.data import load_dataset

CLASSES, SIZE = 4, 16


class Block(torch.nn.Module):
    """torchvision's BasicBlock: two 3x3 convs with BatchNorm, a 1x1 projection when the shape
    changes, the sum through ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(c_out)
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(c_out)
        self.down = None if stride == 1 and c_in == c_out else torch.nn.Sequential(
            torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False), torch.nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class TinyResNet(torch.nn.Module):
    def __init__(self, classes: int = CLASSES) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 1, 1, bias=False),
                                        torch.nn.BatchNorm2d(8), torch.nn.ReLU())
        self.layer1, self.layer2 = Block(8, 8, 1), Block(8, 16, 2)
        self.pool, self.fc = torch.nn.AdaptiveAvgPool2d(1), torch.nn.Linear(16, classes)

    def forward(self, images):
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(images)))), 1))


def images(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n noisy images (N, 3, 16, 16) float32 and their classes: class c has a bright stripe in
    colour channel c % 3 at columns 4c..4c+3."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = rng.normal(size=(n, 3, SIZE, SIZE)).astype(np.float32) * 0.5
    for c in range(CLASSES):
        x[y == c, c % 3, :, 4 * c:4 * c + 4] += 1.5
    return x, y


def export(net: torch.nn.Module, path: str) -> None:
    """torch.onnx.export with its default (dynamo) exporter and a dynamic batch dim."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(2, 3, SIZE, SIZE),), path, dynamo=True,
                          verbose=False, input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: torch.export.Dim("N", min=1)},))


def main(folder: str) -> None:
    torch.manual_seed(0)
    onnx_path = os.path.join(folder, "cnn.onnx")
    export(TinyResNet(), onnx_path)
    x, y = images(320, seed=0)
    np.savez(os.path.join(folder, "images.npz"), x=x, y=y)  # the model's own shape, kept

    data = load_dataset(os.path.join(folder, "images.npz"))
    model = irkit.load_model(onnx_path)
    model.compile("adamw", lr=3e-3, clip_norm=1.0)
    print(f"imported {onnx_path}: input {data.x.shape[1:]}, "
          f"{len(model.source.trainable())} trainable tensors")
    history = model.fit(data.x, data.y, epochs=4, batch_size=32, verbose=0)
    print(f"fine-tuned: val_accuracy {history['val_accuracy'][0]:.3f} after epoch 1, "
          f"{history['val_accuracy'][-1]:.3f} after epoch {history.epochs}")
    out = os.path.join(folder, "cnn_finetuned.onnx")
    model.export(out)

    import onnxruntime as ort  # the written model, without irkit
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(out, options, providers=["CPUExecutionProvider"])
    test_x, test_y = images(200, seed=1)
    batch = session.run(None, {"images": test_x})[0]
    single = np.concatenate([session.run(None, {"images": test_x[i:i + 1]})[0]
                             for i in range(len(test_x))])
    print(f"onnxruntime on {out}: test accuracy {(batch.argmax(1) == test_y).mean():.3f}, "
          f"batch and one-at-a-time agree within {np.abs(batch - single).max():.1e}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
