"""Image classifiers in plain torch for multi-channel microscopy crops (any number of stains).

The networks (ResNet-18, VGG and DenseNet layouts) share one interface (`ImageClassifierNet`):
- `forward(x, covariates=None) -> logits` and `embed(x, covariates=None) -> pooled features`
  (global average pooling, then the optional covariate vector, e.g. a one-hot cell type or plate);
- `stages`: an ordered `nn.ModuleDict` whose outputs are the network's stages (`stage_names()`);
  SIGN dictionaries use them as default layers and Grad-CAM uses the last one by default.
`Ensemble` averages the logits of several such networks (a deep ensemble); `networks(model)` lists them.

Sizes suit 28-128 px crops: a 3x3 stem (stride 1 or 2) and no max-pool after it, so with the default
ResNet-18 stages a 64 px crop still has an 8 px (stride 1) or 4 px (stride 2) map in the last stage.
`width` scales every channel count.
"""

from __future__ import annotations

import torch
from torch import nn

from phenolens.core.errors import PhenolensError
from phenolens.nn.erasure import AffineEraser
from phenolens.nn.heads import ClassifierHead
from phenolens.nn.weights import register_architecture


def _scaled(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


class ImageClassifierNet(nn.Module):
    """Shared plumbing: stem + named stages -> GAP (+ covariates) -> head.

    Parameters
    ----------
    in_channels : int
        Channels (stains) of the input images.
    n_classes : int
        Number of classes (at least 2).
    n_covariates : int
        Length of the per-image covariate vector appended to the pooled features (0: none).

    Raises
    ------
    PhenolensError
        For fewer than 1 channel or 2 classes.
    """

    stages: nn.ModuleDict
    head: ClassifierHead
    eraser: AffineEraser | None  # a concept eraser fitted after training (`--erase-column`), the embedding's last step

    def __init__(self, in_channels: int, n_classes: int, n_covariates: int):
        super().__init__()
        if in_channels < 1 or n_classes < 2:
            raise PhenolensError(f"a classifier needs >= 1 input channel and >= 2 classes, got {in_channels} and {n_classes}")
        self.in_channels, self.n_classes, self.n_covariates = in_channels, n_classes, n_covariates
        self.eraser = None

    def stage_names(self) -> list[str]:
        """Names of the stage modules in forward order (the last one is the last conv block).

        Returns
        -------
        list of str
            Keys of `stages`, e.g. ``["stem", "stage1", "stage2"]``.
        """
        return list(self.stages.keys())

    def feature_maps(self, x: torch.Tensor) -> torch.Tensor:
        """Output of the last stage.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, H, W) images, normalised as in training.

        Returns
        -------
        torch.Tensor
            (N, F, h, w) feature maps.

        Raises
        ------
        PhenolensError
            When `x` is not (N, in_channels, H, W).
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise PhenolensError(
                f"the model expects (N, {self.in_channels}, H, W) images, got shape {tuple(x.shape)}; check the channel count and order"
            )
        for stage in self.stages.values():
            x = stage(x)
        return x

    def embed(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """Penultimate features: globally averaged last-stage maps, then the covariates, then the eraser when there is one.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, H, W) images.
        covariates : torch.Tensor, optional
            (N, n_covariates) values; required when the network has covariates.

        Returns
        -------
        torch.Tensor
            (N, feature_dim + n_covariates) features.

        Raises
        ------
        PhenolensError
            When the covariates are missing or mis-shaped.
        """
        features = self.feature_maps(x).mean(dim=(2, 3))
        if self.n_covariates:
            if covariates is None or covariates.shape != (len(x), self.n_covariates):
                got = None if covariates is None else tuple(covariates.shape)
                raise PhenolensError(f"the model was trained with {self.n_covariates} covariates per image; got {got}")
            features = torch.cat([features, covariates.to(features.dtype)], dim=1)
        return features if self.eraser is None else self.eraser(features)

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """Logits, (N, n_classes), of images `x` and their `covariates` (see `embed`)."""
        return self.head(self.embed(x, covariates))


def _conv_bn(in_channels: int, out_channels: int, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel, stride=stride, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut.

    Parameters
    ----------
    in_channels : int
        Input channels.
    out_channels : int
        Output channels.
    stride : int
        Stride of the first convolution and of the projection shortcut.
    """

    # (convolution, batch norm) attribute pairs where the norm reads only that convolution's output,
    # and ReLU attributes whose input is always a fresh tensor: see `fold_batch_norm`.
    conv_bn = (("conv1", "bn1"), ("conv2", "bn2"))
    fresh_relus = ("relu",)

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut = (
            nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels))
            if stride != 1 or in_channels != out_channels
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(conv-BN-ReLU-conv-BN(x) + shortcut(x))."""
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class StagedNet(ImageClassifierNet):
    """A 3x3 stem, then stages of `blocks[i]` units at 64-128-256-512 channels times `width`
    (the stem has the first stage's); each layout says what a stage holds (`stage_layers`).

    Parameters
    ----------
    in_channels : int
        Channels (stains) of the input images.
    n_classes : int
        Number of classes (at least 2).
    width : float
        Multiplier of every channel count.
    stem_stride : int
        Stride of the 3x3 stem (2 halves every feature map).
    n_covariates : int
        Length of the per-image covariate vector appended to the pooled features (0: none).
    loss : str
        The head's loss: ``softmax``, ``arcface`` or ``composite``.
    blocks : sequence of int, optional
        Units per stage, 1 to 4 stages (default: the layout's `default_blocks`).
    erasure : bool
        Whether the embedding ends in an `AffineEraser` (its tensors are fitted after training, or loaded).

    Raises
    ------
    PhenolensError
        For fewer than 1 channel or 2 classes, or a bad `blocks`.
    """

    default_blocks: tuple[int, ...]

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: float = 0.5,
        stem_stride: int = 1,
        n_covariates: int = 0,
        loss: str = "softmax",
        blocks: tuple[int, ...] | list[int] | None = None,
        erasure: bool = False,
    ):
        super().__init__(in_channels, n_classes, n_covariates)
        blocks = self.default_blocks if blocks is None else blocks
        if not 1 <= len(blocks) <= 4 or min(blocks) < 1:
            raise PhenolensError(f"blocks {list(blocks)}: give 1 to 4 stages of at least one block each, such as 2,2,2,2")
        channels = [_scaled(c, width) for c in (64, 128, 256, 512)][: len(blocks)]
        stages: dict[str, nn.Module] = {"stem": _conv_bn(in_channels, channels[0], 3, stem_stride)}
        previous = channels[0]
        for index, (count, out) in enumerate(zip(blocks, channels), start=1):
            stages[f"stage{index}"] = nn.Sequential(*self.stage_layers(index, count, previous, out))
            previous = out
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = previous
        self.head = ClassifierHead(previous + n_covariates, n_classes, loss)
        self.eraser = AffineEraser(previous + n_covariates) if erasure else None
        _init_weights(self)

    def stage_layers(self, index: int, count: int, in_channels: int, out_channels: int) -> list[nn.Module]:
        """The modules of one stage; each layout defines it.

        Parameters
        ----------
        index : int
            The stage's number, from 1.
        count : int
            Units in the stage.
        in_channels : int
            Channels entering the stage.
        out_channels : int
            Channels leaving it.

        Returns
        -------
        list of torch.nn.Module
            The stage's modules, in order.
        """
        raise NotImplementedError


@register_architecture("resnet18")
class ResNet18(StagedNet):
    """ResNet-18 layout (2-2-2-2 basic blocks; 64-128-256-512 channels times `width`)."""

    default_blocks = (2, 2, 2, 2)

    def stage_layers(self, index: int, count: int, in_channels: int, out_channels: int) -> list[nn.Module]:
        """`count` basic blocks (see `StagedNet.stage_layers`)."""
        # Every stage after the first halves the resolution in its first block.
        return [BasicBlock(in_channels if b == 0 else out_channels, out_channels, 2 if (b == 0 and index > 1) else 1) for b in range(count)]


@register_architecture("vgg")
class VGG(StagedNet):
    """VGG layout (Simonyan & Zisserman 2015) with batch norm: 3x3 conv-BN-ReLU layers and no shortcuts.

    `blocks[i]` convolutions per stage after the stem; every stage after the first opens with a 2x2
    max-pool. The default (1, 2, 2) is two convolutions at each of three resolutions. Without
    shortcuts every feature is a local filter cascade; on BBBC013 its integrated-gradients maps kept
    more of the NuclearGFP evidence inside the nucleus than the ResNet's did (docs/results.md, "Images").
    """

    default_blocks = (1, 2, 2)

    def stage_layers(self, index: int, count: int, in_channels: int, out_channels: int) -> list[nn.Module]:
        """A 2x2 max-pool (after the first stage), then `count` conv-BN-ReLU layers (see `StagedNet.stage_layers`)."""
        pool: list[nn.Module] = [nn.MaxPool2d(2)] if index > 1 else []
        return pool + [_conv_bn(in_channels if b == 0 else out_channels, out_channels) for b in range(count)]


class DenseLayer(nn.Module):
    """BN-ReLU-1x1 (bottleneck) -> BN-ReLU-3x3 producing `growth` new maps, concatenated to the input.

    Parameters
    ----------
    in_channels : int
        Input channels.
    growth : int
        New maps per layer (the growth rate).
    bottleneck : int
        Width of the 1x1 bottleneck, in multiples of `growth`.
    """

    def __init__(self, in_channels: int, growth: int, bottleneck: int = 4):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.ReLU(),
            nn.Conv2d(in_channels, bottleneck * growth, 1, bias=False),
            nn.BatchNorm2d(bottleneck * growth),
            nn.ReLU(),
            nn.Conv2d(bottleneck * growth, growth, 3, padding=1, bias=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The input with `growth` new maps appended, (N, C + growth, H, W)."""
        return torch.cat([x, self.body(x)], dim=1)


@register_architecture("densenet")
class DenseNet(ImageClassifierNet):
    """DenseNet-BC layout: dense blocks joined by transitions (1x1 conv halving channels, 2x2 avg-pool).

    Each stage is a dense block followed by its transition (the last one by BN-ReLU), so every
    stage output is a finished feature map. Growth rate and stem channels scale with `width`.

    Parameters
    ----------
    in_channels : int
        Channels (stains) of the input images.
    n_classes : int
        Number of classes (at least 2).
    width : float
        Multiplier of the growth rate (and so of every channel count).
    stem_stride : int
        Stride of the 3x3 stem.
    n_covariates : int
        Length of the per-image covariate vector (0: none).
    loss : str
        The head's loss: ``softmax``, ``arcface`` or ``composite``.
    blocks : sequence of int
        Dense layers per block.
    growth_rate : int
        Growth rate before `width` scales it.
    erasure : bool
        Whether the embedding ends in an `AffineEraser` (its tensors are fitted after training, or loaded).
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: float = 0.5,
        stem_stride: int = 1,
        n_covariates: int = 0,
        loss: str = "softmax",
        blocks: tuple[int, ...] | list[int] = (6, 12, 24, 16),
        growth_rate: int = 32,
        erasure: bool = False,
    ):
        super().__init__(in_channels, n_classes, n_covariates)
        growth = _scaled(growth_rate, width)
        previous = 2 * growth
        stages: dict[str, nn.Module] = {"stem": _conv_bn(in_channels, previous, 3, stem_stride)}
        for index, count in enumerate(blocks, start=1):
            layers: list[nn.Module] = []
            for _ in range(count):
                layers.append(DenseLayer(previous, growth))
                previous += growth
            if index < len(blocks):
                layers += [nn.BatchNorm2d(previous), nn.ReLU(), nn.Conv2d(previous, previous // 2, 1, bias=False), nn.AvgPool2d(2)]
                previous //= 2
            else:
                layers += [nn.BatchNorm2d(previous), nn.ReLU()]
            stages[f"dense{index}"] = nn.Sequential(*layers)
        self.stages = nn.ModuleDict(stages)
        self.feature_dim = previous
        self.head = ClassifierHead(previous + n_covariates, n_classes, loss)
        self.eraser = AffineEraser(previous + n_covariates) if erasure else None
        _init_weights(self)


@register_architecture("ensemble")
class Ensemble(ImageClassifierNet):
    """A deep ensemble (Lakshminarayanan et al. 2017): `n_members` networks of one architecture,
    trained from different seeds on the same images; the logits are the members' mean.

    Single models trained from different seeds put a class's evidence in different places (on
    BBBC013 one fold model's NuclearGFP evidence sat inside the nucleus, another's on the cytoplasm).
    Integrated gradients is linear in the model, so the ensemble's map is exactly the mean of its
    members' maps; Grad-CAM takes the same layer in every member and averages their CAMs.
    `embed` concatenates the members' features; `stage_names` are a member's.

    Parameters
    ----------
    member_architecture : str
        A registered single-network architecture (``resnet18``, ``vgg``, ``densenet``).
    n_members : int
        Number of networks, at least 2.
    **member_hyperparameters
        Passed to every member's constructor.

    Raises
    ------
    PhenolensError
        For fewer than 2 members or an unknown architecture.
    """

    def __init__(self, member_architecture: str, n_members: int, **member_hyperparameters):
        if n_members < 2:
            raise PhenolensError(f"an ensemble needs at least 2 members, got {n_members}; train a single model instead")
        members = [build_backbone(member_architecture, **member_hyperparameters) for _ in range(n_members)]
        super().__init__(members[0].in_channels, members[0].n_classes, members[0].n_covariates)
        self.members = nn.ModuleList(members)
        self.feature_dim = sum(member.feature_dim for member in members)

    def stage_names(self) -> list[str]:
        """The stage names of a member (every member has the same)."""
        return self.members[0].stage_names()

    def embed(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """The members' penultimate features side by side.

        Parameters
        ----------
        x : torch.Tensor
            (N, C, H, W) images.
        covariates : torch.Tensor, optional
            (N, n_covariates) values, when the members have covariates.

        Returns
        -------
        torch.Tensor
            (N, n_members * D) features.
        """
        return torch.cat([member.embed(x, covariates) for member in self.members], dim=1)

    def forward(self, x: torch.Tensor, covariates: torch.Tensor | None = None) -> torch.Tensor:
        """The members' mean logits, (N, n_classes)."""
        return torch.stack([member(x, covariates) for member in self.members]).mean(dim=0)


def networks(model: nn.Module) -> list[nn.Module]:
    """The single networks inside `model`: an ensemble's members, else the model itself.

    Parameters
    ----------
    model : torch.nn.Module
        A network or an `Ensemble`.

    Returns
    -------
    list of torch.nn.Module
        The members, or ``[model]``.
    """
    return list(model.members) if isinstance(model, Ensemble) else [model]


def _init_weights(model: nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


class FoldedBatchNorm(nn.Identity):
    """Stands where a BatchNorm2d was folded into the convolution before it (the module path stays valid)."""


def _fold_into(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    # Eval-mode BN is y = (x - mean) * gamma / sqrt(var + eps) + beta, an affine map per output channel:
    # scale the convolution's filters and give it the matching bias (computed in float64).
    scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
    bias = torch.zeros_like(scale) if conv.bias is None else conv.bias.double()
    with torch.no_grad():
        conv.weight.copy_(conv.weight.double() * scale.reshape(-1, *[1] * (conv.weight.ndim - 1)))
    conv.bias = nn.Parameter((bn.bias.double() + (bias - bn.running_mean.double()) * scale).to(conv.weight.dtype))


def fold_batch_norm(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that reads only a Conv2d's output into that convolution, in place.

    For inference copies (eval mode: the running statistics are used). Pairs are consecutive
    (Conv2d, BatchNorm2d) children of an `nn.Sequential` (there the convolution's output goes nowhere
    else) and the pairs a block declares in `conv_bn`. Each folded norm becomes a `FoldedBatchNorm`
    identity, so module paths (Grad-CAM layers, hooks) still resolve. The logits move by float32
    rounding only.

    Parameters
    ----------
    model : torch.nn.Module
        A model in eval mode (changed in place: fold a copy).

    Returns
    -------
    torch.nn.Module
        `model`.

    Raises
    ------
    PhenolensError
        When `model` is in training mode.
    """
    if model.training:
        raise PhenolensError("fold_batch_norm needs a model in eval mode (it folds the running statistics)")
    for module in list(model.modules()):
        pairs = list(getattr(module, "conv_bn", ()))
        if isinstance(module, nn.Sequential):
            kids = module._modules
            pairs += [(a, b) for a, b in zip(kids, list(kids)[1:]) if type(kids[a]) is nn.Conv2d and type(kids[b]) is nn.BatchNorm2d]
        for conv_name, bn_name in pairs:
            conv, bn = module._modules[conv_name], module._modules[bn_name]
            if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and bn.running_mean is not None:
                if bn.weight is None:  # affine=False
                    bn.weight, bn.bias = nn.Parameter(torch.ones_like(bn.running_mean)), nn.Parameter(torch.zeros_like(bn.running_mean))
                _fold_into(conv, bn)
                module._modules[bn_name] = FoldedBatchNorm()
    return model


def inplace_relus(model: nn.Module) -> nn.Module:
    """Make ReLUs whose input is always a fresh tensor run in place (in place; returns `model`).

    Fresh: the ReLU follows a convolution or a (folded) norm inside an `nn.Sequential`, or a block
    declares it in `fresh_relus`. Saves an allocation and a pass over memory per activation; only for
    no-grad, hook-free forward passes (a hook on the tensor before the ReLU would see it change).

    Parameters
    ----------
    model : torch.nn.Module
        The model (changed in place).

    Returns
    -------
    torch.nn.Module
        `model`.
    """
    for module in model.modules():
        fresh = [getattr(module, name) for name in getattr(module, "fresh_relus", ())]
        if isinstance(module, nn.Sequential):
            children = list(module.children())
            fresh += [b for a, b in zip(children, children[1:]) if isinstance(a, (nn.Conv2d, nn.BatchNorm2d, FoldedBatchNorm))]
        for relu in fresh:
            if isinstance(relu, nn.ReLU):
                relu.inplace = True
    return model


def build_backbone(arch: str, **hyperparameters) -> ImageClassifierNet:
    """Instantiate a registered single-network image architecture by name (`resnet18`, `vgg`, `densenet`).

    Parameters
    ----------
    arch : str
        The architecture's registered name.
    **hyperparameters
        Its constructor's arguments (``in_channels``, ``n_classes``, ``width``, ...).

    Returns
    -------
    ImageClassifierNet
        A freshly initialised network.

    Raises
    ------
    PhenolensError
        For an unknown name, or ``ensemble`` (build an `Ensemble` instead).
    """
    from phenolens.nn.weights import ARCHITECTURES

    def single(cls) -> bool:
        return isinstance(cls, type) and issubclass(cls, ImageClassifierNet) and cls is not Ensemble

    if not single(ARCHITECTURES.get(arch)):
        known = sorted(name for name, cls in ARCHITECTURES.items() if single(cls))
        raise PhenolensError(f"unknown image architecture {arch!r}; choose one of {', '.join(known)} (an ensemble of them: --members)")
    return ARCHITECTURES[arch](**hyperparameters)
