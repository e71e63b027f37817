"""The standard ResNet-50 ImageNet setting (Goyal et al. 2017 / torchvision's reference recipe), used as the
CELGC-style large-scale check. Not a setting any of the papers (`repro list`) reports numbers for."""
from repro.recipes import Recipe, register

SOURCE = "torchvision references/classification (ResNet-50): SGD 0.1, momentum 0.9, wd 1e-4, /10 at 30, 60, 80"
OPTIMIZER = dict(name="sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)

register(Recipe(
    name="resnet50-imagenet-standard", tasks=("resnet50-imagenet",), preset="paper", source=SOURCE,
    summary="ResNet-50 on ImageNet, 8 workers x batch 32, 90 epochs",
    task=dict(batch_size=32), optimizer=OPTIMIZER,
    schedule=dict(name="step", milestones=[30, 60, 80], gamma=0.1),
    train=dict(epochs=90, machines=8, seed=0)))

register(Recipe(
    name="resnet50-imagenet-quick", tasks=("resnet50-imagenet",), preset="quick",
    source="pipeline check on a 10,000 / 5,000 image subset (not a result)",
    summary="the standard setting on a subset, constant step size, 5 epochs",
    task=dict(batch_size=32, train_subset=10_000, test_subset=5_000), optimizer=OPTIMIZER,
    train=dict(epochs=5, machines=1, seed=0)))
