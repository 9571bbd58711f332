"""Fine-tune a Hugging Face BERT classifier with irkit: a tiny `transformers` BertConfig with
random weights (built offline, nothing downloaded) goes out through `torch.onnx.export` with
two inputs, `input_ids` and `attention_mask` (int64, (N, T)); irkit fine-tunes the ONNX file
on token ids kept in an .npz whose keys are the model's input names, and writes an inference
ONNX file that onnxruntime runs without irkit.

    python examples/finetune_text.py [folder]

The same fine-tune from the command line (the .npz holds input_ids, attention_mask and y):

    irkit train bert.onnx --data tokens.npz -o bert_finetuned.onnx --optimizer adamw \
        --lr 0.003 --clip-norm 1 --epochs 6 --batch-size 16

Needs torch, onnxscript and transformers (pip install -e ".[torch,transformers]"). The task
is synthetic: a sentence (padded to T tokens, padding masked) is positive when it holds token
7 or token 8.

The export is transformers' default: scaled_dot_product_attention (which torch exports as
masked Softmax through IsNaN and Where), BERT's own position and token-type ids (a (1, T)
buffer sliced to the sentence length), and a dynamic batch: the model is trained at batch
16 and evaluated at other sizes.
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

VOCAB, T = 50, 12


class Classifier(torch.nn.Module):
    """BertForSequenceClassification on (input_ids, attention_mask), returning its logits."""

    def __init__(self) -> None:
        super().__init__()
        from transformers import BertConfig, BertForSequenceClassification
        config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                            num_attention_heads=2, intermediate_size=64,
                            max_position_embeddings=32, num_labels=2,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        self.bert = BertForSequenceClassification(config)

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).logits


def sentences(n: int, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """n padded sentences of 4..T tokens and their labels (1: token 7 or 8 occurs)."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, VOCAB, (n, T))
    lengths = rng.integers(4, T + 1, n)
    mask = (np.arange(T)[None] < lengths[:, None]).astype(np.int64)
    ids[mask == 0] = 0  # padding
    labels = ((ids == 7) | (ids == 8)).any(axis=1).astype(np.int64)
    return {"input_ids": ids, "attention_mask": mask}, labels


def export(net: torch.nn.Module, path: str) -> None:
    """torch.onnx.export (its default, dynamo exporter) with a dynamic batch dim."""
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed"
    example = (torch.zeros(2, T, dtype=torch.int64), torch.ones(2, T, dtype=torch.int64))
    batch = torch.export.Dim("N", min=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), example, path, dynamo=True, verbose=False,
                          input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_shapes=({0: batch}, {0: batch}))


def main(folder: str) -> None:
    torch.manual_seed(0)
    onnx_path = os.path.join(folder, "bert.onnx")
    export(Classifier(), onnx_path)
    x, y = sentences(320, seed=0)
    np.savez(os.path.join(folder, "tokens.npz"), **x, y=y)  # keys: the model's input names

    data = load_dataset(os.path.join(folder, "tokens.npz"))
    model = irkit.load_model(onnx_path)
    model.compile("adamw", lr=3e-3, clip_norm=1.0)
    shapes = ", ".join(f"{k} {a.dtype}{tuple(a.shape[1:])}" for k, a in data.x.items())
    print(f"imported {onnx_path}: inputs {shapes}, "
          f"{len(model.source.trainable())} trainable tensors")
    history = model.fit(data.x, data.y, epochs=6, batch_size=16, verbose=0)
    print(f"fine-tuned: val_accuracy {history['val_accuracy'][0]:.3f} after epoch 1, "
          f"{history['val_accuracy'][-1]:.3f} after epoch {history.epochs}")
    out = os.path.join(folder, "bert_finetuned.onnx")
    model.export(out)

    import onnxruntime as ort  # the written model, without irkit
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only
    session = ort.InferenceSession(out, options, providers=["CPUExecutionProvider"])
    test_x, test_y = sentences(200, seed=1)
    batch = session.run(None, test_x)[0]
    single = np.concatenate([session.run(None, {k: v[i:i + 1] for k, v in test_x.items()})[0]
                             for i in range(len(test_y))])
    print(f"onnxruntime on {out}: test accuracy {(batch.argmax(1) == test_y).mean():.3f}, "
          f"batch and one-at-a-time agree within {np.abs(batch - single).max():.1e}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory() as tmp:
            main(tmp)
