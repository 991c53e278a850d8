"""Imports every model family so its builders register. Add one line per new family file."""

import importlib

FAMILIES = [
    # torchvision-shared families
    "ir_net", "mobilenet_v2", "mobilenet_v3", "shufflenet_v2", "mnasnet", "inception", "resnet", "alexnet", "vgg",
    # lightnn's own
    "mobilenet_v1", "shufflenet_v1", "xception", "lenet", "resnet_cifar", "alexnet_grouped", "igc",
]

for _name in FAMILIES:
    importlib.import_module(f"{__package__}.{_name}")
