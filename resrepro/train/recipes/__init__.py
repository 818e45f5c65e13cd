"""The families' recipes, one module each (cifar, imagenet, detection); :mod:`resrepro.train.families` registers
them."""
