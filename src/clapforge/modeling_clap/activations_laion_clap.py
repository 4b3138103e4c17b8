"""The activation functions a LAION-CLAP config may name: one table for the configuration, which refuses any other
name when it is made, and for the modules, which build theirs from it."""

from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU}


def check_activation(name: str, field: str) -> None:
    """A ValueError naming `field`, `name` and the known names, unless `name` is in `ACTIVATIONS`."""
    if name not in ACTIVATIONS:
        raise ValueError(f"{field} {name!r} is not one of the known activations {sorted(ACTIVATIONS)}")


def build_activation(name: str) -> nn.Module:
    # A validated config never gets here with an unknown name; a module built directly might.
    check_activation(name, "activation")
    return ACTIVATIONS[name]()
