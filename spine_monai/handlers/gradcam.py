"""GradCAM and occlusion maps of the classifier's decisions, written as overlays on each view."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, decollate_batch
from monai.transforms import Invertd
from monai.visualize import GradCAM, OcclusionSensitivity
from torch import nn

from spine_monai.data.io import read_radiograph, write_overlay
from spine_monai.networks.vertebra import VertebraMILClassifier
from spine_monai.workflow.config import as_bool

__all__ = ["ClassActivationWriter", "heatmap_overlay"]


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.45, colormap: str = "jet") -> np.ndarray:
    """Blend a [0, 1] heat map over a grey film, more opaque where the map is hotter.

    Args:
        image: (H, W) grey image of any range; it is stretched to its 1st-99th percentile.
        heat: (H, W) map in [0, 1], the image's size.
        alpha: opacity of the hottest colour.
        colormap: a matplotlib colormap name.

    Returns:
        an RGB uint8 array (H, W, 3).
    """
    from matplotlib import colormaps

    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, (1, 99))
    grey = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    heat = np.clip(np.asarray(heat, dtype=np.float32), 0, 1)
    # The colormap's own table indexed as matplotlib indexes it (floor(heat * N), the top value into the last entry):
    # the same colours as calling it on the map, without its float64 RGBA copy of a full-size film.
    cmap = colormaps[colormap]
    table = cmap(np.arange(cmap.N))[:, :3].astype(np.float32)
    colour = table[np.minimum((heat * cmap.N).astype(np.int64), cmap.N - 1)]
    # Cold regions keep the film readable; only the regions the class depends on are tinted strongly.
    weight = (alpha * np.sqrt(heat))[..., None]
    rgb = (1 - weight) * grey[..., None] + weight * colour
    return (np.clip(rgb, 0, 1) * 255).round().astype(np.uint8)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def _positive(m: torch.Tensor) -> torch.Tensor:
    """A map's evidence for the class: NaN as 0, negative values as 0."""
    return torch.nan_to_num(m.detach().float()).clamp_min(0)


def _scale(m: torch.Tensor, top: float) -> torch.Tensor:
    """A non-negative map divided by ``top`` (the largest value over the maps drawn on one scale), in [0, 1]."""
    m = _positive(m)
    return (m / top).clamp(0, 1) if top > 0 else torch.zeros_like(m)


def _leaf_input(module: nn.Module, args: tuple) -> tuple:
    return tuple(a.detach().requires_grad_(True) if isinstance(a, torch.Tensor) else a for a in args)


@contextlib.contextmanager
def _graph_cut(network: nn.Module, layers: Iterable[str]) -> Iterator[None]:
    """Make the inputs of ``layers`` autograd leaves while in the context: a backward pass stops there.

    The gradient a GradCAM reads at those layers is unchanged; the encoders before them get none.
    """
    modules = dict(network.named_modules())
    handles = [modules[name].register_forward_pre_hook(_leaf_input) for name in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class _OneView(nn.Module):
    """The classifier as a function of one view's channels, the other views held fixed (for occlusion)."""

    def __init__(self, net: nn.Module, full: torch.Tensor, start: int, stop: int) -> None:
        super().__init__()
        self.net, self.full, self.start, self.stop = net, full, start, stop

    def forward(self, part: torch.Tensor) -> torch.Tensor:
        full = self.full.expand(part.shape[0], -1, -1, -1).clone()
        full[:, self.start : self.stop] = part
        return self.net(full)


class ClassActivationWriter:
    """Write a GradCAM heat-map overlay per view per sample, at the original film size, during an evaluator's run.

    For each sample the classifier's GradCAM (:py:class:`monai.visualize.GradCAM`) is computed at each view's
    hook point (``view_features.<VIEW>`` of :py:class:`~spine_monai.networks.DualViewClassifier`), for the
    predicted class or ``class_index``. The map, at the network's input size, is mapped back through the
    view's own preprocessing trace (``Invertd``: padding removed, resize undone) and drawn over the film read
    again from its file: ``<output_dir>/<patient>/<VIEW>_gradcam.png``. The views of a patient share one colour
    scale (divided by the largest value over the views), so the view the decision rested on is the hotter one.
    With ``occlusion``, MONAI's :py:class:`~monai.visualize.OcclusionSensitivity` is also run on each view alone
    (the other views held fixed) and the drop in the class probability is drawn as ``<VIEW>_occlusion.png``; it
    takes many forward passes. For the vertebra-level network
    (:py:class:`~spine_monai.networks.VertebraMILClassifier`) the hook point holds every body of the view; each
    body's map is pasted back into its window on the film (``VertebraPatchesd``'s inverse), and occlusion is not
    available.

    Args:
        network: the classifier.
        views: the views, in input channel order.
        output_dir: root of the overlays.
        transform: the preprocessing ``Compose`` whose trace maps each view back to its original size.
        in_channels: input channels per view (one number for all views, or one per view); ``None`` takes the
            network's own ``split_sizes`` (both patient classifiers have them).
        image_key: batch key of the network input.
        id_key: batch key of the sample id (the overlay's sub-folder).
        class_index: class to explain; ``None`` explains the predicted class.
        target_layer: the hook point's name pattern, with ``{view}``.
        gradcam: write the GradCAM overlays (a boolean, or its text from the command line).
        occlusion: write occlusion-sensitivity overlays too.
        occlusion_mask_size: side of the occluding patch, in network input pixels.
        occlusion_n_batch: occluded images per forward pass.
        alpha: opacity of the hottest colour of the overlay.
    """

    def __init__(
        self,
        network: nn.Module,
        views: Sequence[str],
        output_dir: str | os.PathLike,
        transform: Callable,
        in_channels: int | Sequence[int] | None = None,
        image_key: str = "image",
        id_key: str = "patient",
        class_index: int | None = None,
        target_layer: str = "view_features.{view}",
        gradcam: bool | str = True,
        occlusion: bool | str = False,
        occlusion_mask_size: int = 32,
        occlusion_n_batch: int = 16,
        alpha: float = 0.45,
    ) -> None:
        self.network = network
        self.views = [views] if isinstance(views, str) else list(views)
        if in_channels is None:
            in_channels = list(network.split_sizes)
        channels = [in_channels] * len(self.views) if isinstance(in_channels, int) else list(in_channels)
        if len(channels) != len(self.views):
            raise ValueError(f"{len(channels)} channel counts for {len(self.views)} views")
        stops = np.cumsum(channels).tolist()
        self.slices = {v: (int(s - c), int(s)) for v, c, s in zip(self.views, channels, stops, strict=True)}
        self.output_dir = Path(output_dir)
        self.image_key, self.id_key = image_key, id_key
        self.class_index = None if class_index is None else int(class_index)
        self.gradcam, self.occlusion = as_bool(gradcam), as_bool(occlusion)
        self.occlusion_mask_size, self.occlusion_n_batch = int(occlusion_mask_size), int(occlusion_n_batch)
        self.alpha = alpha
        self.layers = layers = {v: target_layer.format(view=v) for v in self.views}
        if self.occlusion and isinstance(network, VertebraMILClassifier):
            raise ValueError(
                "occlusion sensitivity occludes regions of a film; the vertebra-level classifier reads patches, so "
                "only GradCAM is available for it"
            )
        names = {n for n, _ in network.named_modules()}
        missing = [layer for layer in layers.values() if layer not in names]
        if missing:
            raise ValueError(f"the network has no layer {missing} to explain (expected a DualViewClassifier)")
        # One GradCAM per view, made once: each registers hooks on the network for good.
        self.cams = (
            {
                v: GradCAM(nn_module=network, target_layers=layer, postprocessing=_identity)
                for v, layer in layers.items()
            }
            if self.gradcam
            else {}
        )
        self.inverters = {
            v: Invertd(keys="_map", transform=transform, orig_keys=v, nearest_interp=False) for v in self.views
        }

    def attach(self, engine: Engine) -> None:
        """Write the maps after each iteration of ``engine``; nothing is attached when both maps are off."""
        if self.gradcam or self.occlusion:
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        samples = batch if isinstance(batch, list) else decollate_batch(batch, detach=True)
        for sample in samples:
            self.explain(sample)

    def explain(self, sample: dict[Hashable, object]) -> dict[str, Path]:
        """Compute and write the overlays of one (decollated) sample; returns the written files by name."""
        device = next(self.network.parameters()).device
        x = torch.as_tensor(sample[self.image_key]).detach().float()
        x = (x.as_tensor() if isinstance(x, MetaTensor) else x)[None].to(device)
        patient = str(sample[self.id_key])
        folder = self.output_dir / patient
        written: dict[str, Path] = {}
        maps: dict[str, tuple[str, str, torch.Tensor]] = {}  # file name -> (view, method, map)
        # Evaluators run the network without gradients; GradCAM needs them, but only from the class score back to
        # the explained feature map: cutting the graph there skips the backward pass through the encoders.
        with torch.enable_grad(), _graph_cut(self.network, self.layers.values()):
            for v, cam in self.cams.items():
                # (1, 1, H, W) for a film, or (K, 1, P, P) for the K bodies of the vertebra-level network.
                maps[f"{v}_gradcam"] = (v, "gradcam", cam(x, class_idx=self.class_index)[:, 0])
        if self.occlusion:
            maps.update({f"{v}_occlusion": (v, "occlusion", self._occlusion(x, v)) for v in self.views})
        # One colour scale per method across the patient's views: a view that barely moved the score stays cold.
        tops: dict[str, float] = {}
        for _, method, m in maps.values():
            tops[method] = max(tops.get(method, 0.0), float(_positive(m).max()))
        drawings = []
        for name, (view, method, m) in maps.items():
            film_meta = sample[view]
            original = self._invert(_scale(m.detach().cpu(), tops[method]), sample, view)
            path = film_meta.meta.get("filename_or_obj") if isinstance(film_meta, MetaTensor) else None
            written[name] = folder / f"{name}.png"
            drawings.append((f"{patient} {view}", path, original, written[name]))
        # Reading the film, blending and encoding the PNG take longer than the maps at full size; numpy and Pillow
        # release the GIL for them, so the views are drawn side by side.
        with ThreadPoolExecutor(max_workers=max(1, min(len(drawings), os.cpu_count() or 1))) as pool:
            list(pool.map(lambda d: self._draw(*d), drawings))
        return written

    def _draw(self, what: str, path: str | None, heat: np.ndarray, out: Path) -> None:
        film = read_radiograph(path) if path else np.zeros(heat.shape, np.float32)
        if film.shape != heat.shape:
            raise RuntimeError(f"{what}: map {heat.shape} does not match the film {film.shape}")
        write_overlay(out, heatmap_overlay(film, heat, alpha=self.alpha))

    def _invert(self, m: torch.Tensor, sample: dict, view: str) -> np.ndarray:
        data = {"_map": MetaTensor(m.reshape(-1, *m.shape[-2:])), view: sample[view]}
        inverted = self.inverters[view](data)["_map"]
        return np.asarray(torch.as_tensor(inverted).detach().cpu().float()[0].clamp(0, 1))

    def _occlusion(self, x: torch.Tensor, view: str) -> torch.Tensor:
        start, stop = self.slices[view]
        with torch.no_grad():
            self.network.eval()
            probs = torch.softmax(self.network(x), dim=1)[0]
        cls = int(probs.argmax()) if self.class_index is None else self.class_index
        model = _OneView(self.network, x, start, stop)
        occ = OcclusionSensitivity(
            nn_module=model,
            mask_size=self.occlusion_mask_size,
            n_batch=self.occlusion_n_batch,
            verbose=False,
            mode="mean_img",
            overlap=0.5,
        )
        with torch.no_grad():
            occ_map, _ = occ(x[:, start:stop])
        # (1, classes, H, W): each class's probability with the region around each pixel occluded; the drop in the
        # explained class's probability is the region's importance.
        prob_occluded = torch.as_tensor(occ_map)[0, cls].to(probs.device)
        return (probs[cls] - prob_occluded).clamp_min(0)
