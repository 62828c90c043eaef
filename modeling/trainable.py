"""Which layers a run trains: all of them, the last stage and the head, or the head alone.

Last-layer re-training (Kirichenko et al., "Last layer re-training is sufficient for robustness to spurious
correlations", ICLR 2023): a network continued on shortcut-broken images keeps the features it has, and only its
last layers learn to read them without the shortcut. It is also the cheap step on a CPU: no gradient flows through
the frozen layers, and their batch-norm statistics stay as they were.
"""
from __future__ import annotations

from torch import nn

TRAINABLE = ("all", "last-stage", "head")


def trained_children(backbone: nn.Module, which: str) -> list[str]:
    """Names of the backbone's top-level modules that train: from the first trained one to the end, in forward
    order (timm declares its modules in the order they run; the pooling after the last stage has no weights)."""
    names = [name for name, _ in backbone.named_children()]
    if which == "all":
        return names
    if which == "last-stage":
        first = backbone.feature_info[-1]["module"].split(".")[0]
    elif which == "head":
        first = backbone.pretrained_cfg["classifier"].split(".")[0]
    else:
        raise ValueError(f"trainable layers: one of {', '.join(TRAINABLE)}, not {which!r}")
    return names[names.index(first):]


def freeze(backbone: nn.Module, which: str) -> list[nn.Parameter]:
    """Freeze every top-level module that does not train; return the parameters that do, for the optimiser."""
    trained = set(trained_children(backbone, which))
    for name, child in backbone.named_children():
        child.requires_grad_(name in trained)
    return [p for p in backbone.parameters() if p.requires_grad]


def set_train_mode(backbone: nn.Module, which: str) -> nn.Module:
    """Training mode for the layers that train, evaluation mode (batch-norm statistics kept) for the rest."""
    backbone.train()
    trained = set(trained_children(backbone, which))
    for name, child in backbone.named_children():
        if name not in trained:
            child.eval()
    return backbone
