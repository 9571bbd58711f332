"""The table of models people fine-tune, built in torch with tiny sizes and random weights, and
their exports by both torch exporters (dynamo, the default, and the TorchScript one).

The rows (KINDS): ResNet-18's and MobileNetV2's layouts, a ViT (written here in torch), and
transformers' BERT classifier and GPT-2 LM (tiny configs). Imported by the tests that need
torch (and, for BERT and GPT-2, `transformers`); each model
comes with a loss wrapper so the exported graph's output is the scalar loss, and with inputs
of the model's own shapes and dtypes. Weights are perturbed before export: the exporters
merge initializers of equal value (the zero biases and unit norms of a fresh model).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

F = torch.nn.functional
VOCAB, SEQ, CLASSES = 50, 8, 3
VISION = ("resnet", "mobilenet", "vit")  # image input x (N, 3, H, W); the rest take token ids
KINDS = (*VISION[:2], "bert", "gpt2", VISION[2])


def perturb(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Add small random noise to every parameter and buffer (running statistics stay
    positive), so no two initializers are equal."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in list(module.named_parameters()) + list(module.named_buffers()):
            if not p.dtype.is_floating_point:
                continue
            noise = 0.05 * torch.randn(p.shape, generator=gen)
            p.add_(noise.abs() if "running_var" in name else noise)
    return module


# ---- CNNs --------------------------------------------------------------------------------------
class BasicBlock(torch.nn.Module):
    """ResNet's basic block: conv-BN-ReLU-conv-BN plus the (projected) shortcut, ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + (x if self.down is None else self.down(x)))


class ResNet(torch.nn.Module):
    """ResNet-18's layout (stem, four stages of two basic blocks, pool, fc) at width `w`."""

    def __init__(self, w: int = 4, classes: int = CLASSES) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, w, 7, 2, 3, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(w)
        self.pool = torch.nn.MaxPool2d(3, 2, 1)
        widths, blocks, cin = [w, 2 * w, 4 * w, 8 * w], [], w
        for i, cout in enumerate(widths):
            blocks += [BasicBlock(cin, cout, 1 if i == 0 else 2), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = torch.nn.Sequential(*blocks)
        self.fc = torch.nn.Linear(cin, classes)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = F.adaptive_avg_pool2d(self.layers(x), 1)
        return self.fc(torch.flatten(x, 1))


class InvertedResidual(torch.nn.Module):
    """MobileNetV2's block: expand 1x1, depthwise 3x3, project 1x1, ReLU6, residual if kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.residual = stride == 1 and cin == cout
        self.body = torch.nn.Sequential(
            torch.nn.Conv2d(cin, hidden, 1, bias=False), torch.nn.BatchNorm2d(hidden),
            torch.nn.ReLU6(),
            torch.nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
            torch.nn.BatchNorm2d(hidden), torch.nn.ReLU6(),
            torch.nn.Conv2d(hidden, cout, 1, bias=False), torch.nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class MobileNetV2(torch.nn.Module):
    """MobileNetV2's layout at a tiny width: stem, inverted residuals, 1x1 head, dropout, fc."""

    def __init__(self, classes: int = CLASSES, dropout: float = 0.2) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, 2, 1, bias=False),
                                        torch.nn.BatchNorm2d(8), torch.nn.ReLU6())
        self.blocks = torch.nn.Sequential(InvertedResidual(8, 8, 1, 1),
                                          InvertedResidual(8, 12, 2, 4),
                                          InvertedResidual(12, 12, 1, 4))
        self.head = torch.nn.Sequential(torch.nn.Conv2d(12, 16, 1, bias=False),
                                        torch.nn.BatchNorm2d(16), torch.nn.ReLU6())
        self.classifier = torch.nn.Sequential(torch.nn.Dropout(dropout),
                                              torch.nn.Linear(16, classes))

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class EncoderBlock(torch.nn.Module):
    """A pre-LN transformer encoder block: x + attention(LN(x)), then x + MLP(LN(x)), GELU."""

    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = torch.nn.LayerNorm(dim)
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.proj = torch.nn.Linear(dim, dim)
        self.norm2 = torch.nn.LayerNorm(dim)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, dim))

    def forward(self, x):
        n, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, t, 3, self.heads, d // self.heads) \
            .permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, t, d)
        x = x + self.proj(a)
        return x + self.mlp(self.norm2(x))


class ViT(torch.nn.Module):
    """A vision transformer at a tiny size: patch embedding (a strided Conv), class token,
    learned position embedding, pre-LN encoder blocks, final LayerNorm, linear head on the
    class token."""

    def __init__(self, image: int = 32, patch: int = 8, dim: int = 16, depth: int = 2,
                 heads: int = 2, classes: int = CLASSES) -> None:
        super().__init__()
        self.patch = torch.nn.Conv2d(3, dim, patch, patch)
        self.cls = torch.nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = torch.nn.Parameter(torch.zeros(1, (image // patch) ** 2 + 1, dim))
        self.blocks = torch.nn.Sequential(*(EncoderBlock(dim, heads, 2 * dim)
                                            for _ in range(depth)))
        self.norm = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos
        return self.head(self.norm(self.blocks(x))[:, 0])


# ---- transformers ------------------------------------------------------------------------------
def bert(classes: int = CLASSES) -> torch.nn.Module:
    """A 2-layer BERT sequence classifier (hidden 16), random weights, eager attention off."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=32, max_position_embeddings=32,
                        num_labels=classes, hidden_dropout_prob=0.0,
                        attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).eval()


def gpt2() -> torch.nn.Module:
    """A 2-layer GPT-2 LM (hidden 16), random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=16, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    torch.manual_seed(0)
    return GPT2LMHeadModel(config).eval()


class ClassifierLoss(torch.nn.Module):
    """Cross-entropy of a CNN classifier on labels: a scalar."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x, labels):
        return F.cross_entropy(self.net(x), labels)


class TextClassifierLoss(torch.nn.Module):
    """Cross-entropy of a transformers sequence classifier with its attention mask."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids, attention_mask, labels):
        logits = self.net(input_ids=input_ids, attention_mask=attention_mask).logits
        return F.cross_entropy(logits, labels)


class LMLoss(torch.nn.Module):
    """Next-token cross-entropy of a causal LM, labels = input_ids shifted inside."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, input_ids):
        logits = self.net(input_ids=input_ids).logits
        return F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                               input_ids[:, 1:].reshape(-1))


def make(kind: str, loss: bool = True, seed: int = 0, batch: int = 2,
         dropout: float = 0.2) -> tuple[torch.nn.Module, dict]:
    """(module, {input name: example array of `batch` rows}) for a row of the table."""
    rng = np.random.default_rng(seed)
    if kind in VISION:
        torch.manual_seed(seed)
        net = ResNet() if kind == "resnet" else ViT() if kind == "vit" else \
            MobileNetV2(dropout=dropout)
        net = perturb(net, seed).eval()
        size = 32 if kind == "vit" else 64
        x = rng.standard_normal((batch, 3, size, size)).astype(np.float32)
        inputs = {"x": x}
        if loss:
            net, inputs["labels"] = ClassifierLoss(net), rng.integers(0, CLASSES, batch)
        return net, inputs
    net = perturb(bert() if kind == "bert" else gpt2(), seed)
    ids = rng.integers(0, VOCAB, (batch, SEQ)).astype(np.int64)
    inputs = {"input_ids": ids}
    if kind == "bert":
        mask = np.ones((batch, SEQ), np.int64)
        mask[1::2, SEQ - 3:] = 0  # every other row padded
        # the pad token (BERT's padding_idx 0, whose embedding torch never trains; the ONNX
        # file does not say so) only where the mask is 0, as a tokenizer writes it
        ids[:] = np.where(mask == 0, 0, 1 + ids % (VOCAB - 1))
        inputs["attention_mask"] = mask
        if loss:
            net, inputs["labels"] = TextClassifierLoss(net), rng.integers(0, CLASSES, batch)
    elif loss:
        net = LMLoss(net)
    return net, inputs


def export(module: torch.nn.Module, inputs: dict, path: str, dynamo: bool,
           training: bool = False, output: str = "loss", optimize: bool = True) -> None:
    """Write `module` as ONNX with a dynamic batch (dim 0 of every input); `optimize` is the
    dynamo exporter's (onnxscript's optimizer folds BatchNorm into the convolutions)."""
    args = tuple(torch.from_numpy(v) for v in inputs.values())
    names = list(inputs)
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    module.train(training)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            batch = torch.export.Dim("batch", min=1, max=1024)
            shapes = tuple({0: batch} for _ in names)
            torch.onnx.export(module, args, path, dynamo=True, input_names=names,
                              output_names=[output], dynamic_shapes=shapes, training=mode,
                              optimize=optimize, verbose=False)
        else:
            axes = {n: {0: "batch"} for n in names}
            torch.onnx.export(module, args, path, dynamo=False, opset_version=17,
                              input_names=names, output_names=[output], dynamic_axes=axes,
                              training=mode, do_constant_folding=not training)
    module.eval()


def parameters_in(module: torch.nn.Module, initializers: dict[str, np.ndarray]) -> dict:
    """torch parameter name -> [(initializer name, transposed)] holding the same array: the
    legacy exporter folds MatMul weights into transposed copies under new names, and constant
    folding unties a tied embedding into two initializers (the gradient is their sum)."""
    found = {}
    for pname, param in module.named_parameters():
        data = param.detach().numpy()
        for name, arr in initializers.items():
            if arr.shape == data.shape and np.array_equal(arr, data):
                found.setdefault(pname, []).append((name, False))
            elif data.ndim == 2 and arr.shape == data.T.shape and np.array_equal(arr, data.T):
                found.setdefault(pname, []).append((name, True))
    return found


def gradient_of(pieces: list, got: dict[str, np.ndarray]) -> np.ndarray:
    """The gradient of a torch parameter from irkit's `<init>_grad` outputs of its pieces."""
    return sum(got[f"{n}_grad"].T if transposed else got[f"{n}_grad"]
               for n, transposed in pieces)


def torch_gradients(module: torch.nn.Module, inputs: dict, training: bool = False) -> tuple:
    """(loss, {parameter name: gradient}) of torch autograd on `inputs`."""
    module.train(training)
    module.zero_grad()
    loss = module(*(torch.from_numpy(v) for v in inputs.values()))
    loss.backward()
    module.eval()
    grads = {n: p.grad.numpy().copy() for n, p in module.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads
