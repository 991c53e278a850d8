"""Imports every model family so its builders register. Add one line per new family file."""

import importlib

FAMILIES = [
    # torchvision-shared families
    "mobilenet_v2", "mobilenet_v3", "shufflenet_v2", "mnasnet", "inception", "resnet", "alexnet", "vgg",
    # lightnn's own
    "mobilenet_v1", "shufflenet_v1", "xception", "lenet", "resnet_cifar", "alexnet_grouped", "igc",
]

for _name in FAMILIES:
    try:
        importlib.import_module(f"{__package__}.{_name}")
    except ModuleNotFoundError as e:  # a family file not written yet; a real import error inside one still raises
        if e.name != f"{__package__}.{_name}":
            raise
