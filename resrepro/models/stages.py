"""Table 1's stages as plain data, without torch: the ImageNet nets build from it and the registry checks
names and depths against it before torch is imported."""

# Block type and blocks per stage (conv2_x .. conv5_x), by depth.
IMAGENET_LAYERS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
    101: ("bottleneck", (3, 4, 23, 3)),
    152: ("bottleneck", (3, 8, 36, 3)),
}
