"""The names of the train-step graph's signature and of irkit's model metadata: one place.

A train step is one graph:

    (params, optimizer state, buffers, inputs, TARGET?) -> (LOSS, CORRECT?, COUNT?,
                                                            next/<each state>)

where the optimizer state includes the learning rate (`LR`) and the number of steps done
(`STEP`, int64) as well as the per-parameter slots (`<slot>/<param>`, e.g. `m/dense_0.W`).
Every value the step updates is read under its own name and written as `next/<name>`; the
runner feeds each `next/<name>` back as `<name>` for the following step. The evaluation graph
is `(params, buffers, inputs, TARGET?) -> (LOSS, CORRECT?, COUNT?)`. The inputs are the
model's own (`INPUT` for a layer model; an imported model's names, e.g. `input_ids` and
`attention_mask`); TARGET is absent when the loss is an output the model computes. COUNT, when
present, is how many predictions CORRECT was counted over (tokens that are not ignored, for a
per-token loss); without it, one per sample.
"""

from __future__ import annotations

INPUT, OUTPUT = "input", "output"   # the forward graph of a layer model
TARGET, LOSS, CORRECT, COUNT = "target", "loss", "correct", "count"
LR, STEP = "opt/lr", "opt/step"     # optimizer state shared by all parameters
NEXT = "next/"                      # prefix of an updated value's output name
ACCUMULATED = "accum"               # the slot of a gradient summed over micro-batches
GRADS = "grad/*"                    # all gradients as one vector (the split step, irkit.train.step)


def next_name(name: str) -> str:
    """The output name under which a step writes the new value of `name`."""
    return NEXT + name


def slot_name(slot: str, param: str) -> str:
    """The name of optimizer slot `slot` (e.g. `m`) of parameter `param`."""
    return f"{slot}/{param}"


# metadata keys irkit writes into the models it exports
META_SETTINGS = "irkit.train"           # the resolved training settings (JSON)
META_CLASSES = "irkit.classes"          # class names, comma-separated, in label order
META_NORMALIZE = "irkit.normalize"      # the name of the data-scaling layer
META_SCALING = "irkit.scaling"          # its kind: standard or minmax
META_FROZEN = "irkit.frozen"            # initializers training keeps fixed, comma-separated
META_EPOCH = "irkit.epoch"              # epochs done (training files)
META_PARAMS = "irkit.training_params"   # trained parameters (training files)
META_BEST = "irkit.best"                # best epoch and its monitored value (JSON)
META_HISTORY = "irkit.history"          # per-epoch figures so far (JSON, training files)
META_TIED = "irkit.tied"                # copies tied again at import: [[copy, kept, transposed]]
META_FOLDED = "irkit.folded"            # torch parameters the exporter folded away (JSON)
META_PAIR = "irkit.pair"                # the same id in a model and the training file
                                        # written with it
