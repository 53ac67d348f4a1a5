"""From an ImageSet to the tensor a classifier sees: pad to a common size, check, normalise per channel.

The per-channel mean and standard deviation come from the training images (after padding, which
is what the network sees) and travel with the weights, so the same numbers are applied at
prediction and explanation time. Before them, an optional intensity normalisation divides each
stain of each image by a brightness of its own field of view or of the image itself, or maps each
field's intensity distribution onto the pooled one of the training fields (quantile matching): the
illumination and staining corrections of image-based profiling; its kind travels with them.
Covariates (one metadata column, one-hot encoded) likewise keep their category list.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from phenolens.core.errors import PhenolensError
from phenolens.data.containers import ImageSet, refuse_images_without
from phenolens.data.nuclei import centred_on_nuclei

# field of view -> the median over its images of their `image_statistics`: (C,) mean intensity per channel ("field")
# or (C, L) intensity quantiles per channel ("field-quantile")
FieldStatistics = dict[str, np.ndarray]
FIELD_NORMALIZATIONS = ("field", "field-quantile")  # the kinds that need every field's table
FIELD_REMEDY = (
    "--intensity-normalization field and field-quantile normalise each field of view by its own images: fill it in for every image "
    "(or train with --intensity-normalization crop, which needs no field)"
)
# the pixel percentiles a field's distribution is matched on: the knots of the piecewise-linear map of "field-quantile"
QUANTILE_LEVELS = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0)


def image_statistics(raw: np.ndarray, kind: str) -> np.ndarray:
    """What a field's table is the median of, per padded image: its mean intensity per channel ("field" and "crop")
    or its intensity at each of `QUANTILE_LEVELS` per channel ("field-quantile").

    Parameters
    ----------
    raw : ndarray
        (N, C, H, W) padded images.
    kind : str
        The intensity normalisation.

    Returns
    -------
    ndarray
        (N, C) or (N, C, L) float64.
    """
    if kind == "field-quantile":
        flat = raw.reshape(*raw.shape[:2], int(np.prod(raw.shape[2:])))  # explicit: no -1 for no images
        return np.percentile(flat, QUANTILE_LEVELS, axis=2).transpose(1, 2, 0).astype(np.float64)
    return raw.mean(axis=(2, 3), dtype=np.float64)


def field_statistics(means: np.ndarray, fields: np.ndarray) -> FieldStatistics:
    """Each field's table: the median, over its images, of their `image_statistics` (mean intensity or quantiles per channel).

    The median does not depend on the order of the images, so the table is the same whether the
    images were read at once or a chunk at a time (`phenolens.training.prediction.predict_screen`).

    Parameters
    ----------
    means : ndarray
        (N, C) mean intensity (or (N, C, L) quantiles) of each padded image per channel.
    fields : ndarray
        (N,) field of view per image.

    Returns
    -------
    dict
        Field name (as text) -> (C,) (or (C, L)) float64 median.
    """
    names, field_of = np.unique(np.asarray(fields).astype(str), return_inverse=True)
    order = np.argsort(field_of, kind="stable")  # one sort, not one scan of every image per field
    per_field = np.split(means[order], np.cumsum(np.bincount(field_of, minlength=len(names)))[:-1])
    return {str(name): np.median(field_means, axis=0) for name, field_means in zip(names, per_field)}


def field_rows(table: FieldStatistics, fields: np.ndarray, empty_shape: tuple[int, ...]) -> np.ndarray:
    """Each image's row of a field table (its field's median statistics), stacked.

    Parameters
    ----------
    table : dict
        A `field_statistics` table.
    fields : ndarray
        (N,) field of view per image, as text.
    empty_shape : tuple of int
        The shape returned for no images.

    Returns
    -------
    ndarray
        (N, C) or (N, C, L) float64.

    Raises
    ------
    PhenolensError
        When an image's field is not in `table`.
    """
    missing = sorted(set(fields.tolist()) - set(table))
    if missing:
        raise PhenolensError(
            f"field {missing[0]!r}: not in the table of field statistics ({len(table)} fields) the images are normalised with; "
            "compute the table over the images being scored"
        )
    return np.stack([table[name] for name in fields]) if len(fields) else np.zeros(empty_shape)


def intensity_scales(means: np.ndarray, kind: str, fields: np.ndarray | None = None, brightness: FieldStatistics | None = None) -> np.ndarray:
    """(N, C) divisors of `intensity_normalized` from each image's mean intensity per channel: those
    means ("crop"), its field's brightness ("field": `brightness`, else the median over the images
    given here, `field_statistics`), or ones ("none").

    A divisor of 0 (a black channel) becomes 1, so black stays black and nothing is divided by 0.

    Parameters
    ----------
    means : ndarray
        (N, C) mean intensity of each padded image per channel.
    kind : str
        ``none``, ``field`` or ``crop``.
    fields : ndarray, optional
        (N,) field of view per image (needed for ``field``).
    brightness : dict, optional
        A `field_statistics` table computed over more images (a whole screen read a chunk at a time).

    Returns
    -------
    ndarray
        (N, C) float32 divisors.

    Raises
    ------
    PhenolensError
        When an image's field is not in `brightness`.
    """
    if kind == "none":
        return np.ones(means.shape, dtype=np.float32)
    if kind == "field":
        names = np.asarray(fields).astype(str)
        means = field_rows(brightness if brightness is not None else field_statistics(means, names), names, means.shape)
    return np.where(means > 1e-12, means, 1.0).astype(np.float32)


def field_column(images, column: str | None) -> np.ndarray:
    """The field of view of each image, from metadata `column`.

    Parameters
    ----------
    images : ImageSet, ImageSource or ndarray
        The images (or a screen's listed images, `phenolens.data.chunks.ImageSource`).
    column : str
        The metadata column naming the fields.

    Returns
    -------
    ndarray
        (N,) field per image.

    Raises
    ------
    PhenolensError
        When the images carry no such column (or are a bare array), or it is empty for some images.
    """
    meta = getattr(images, "meta", None)
    name = getattr(images, "name", "these images")
    if meta is None or column not in meta:
        raise PhenolensError(
            f"{name}: the model normalises each field's intensities (--intensity-normalization field or field-quantile) and needs "
            f"the metadata column {column!r} naming the field of view of each image; add it to the manifest"
        )
    # as text an empty field is 'nan': every image without one would be normalised as one field
    refuse_images_without(meta, column, name, "naming their field of view", FIELD_REMEDY)
    return meta[column].to_numpy()


def quantile_reference(table: FieldStatistics, fields: np.ndarray) -> np.ndarray:
    """The intensity distribution "field-quantile" maps every field onto: the median over `fields` (each counted once,
    however many images it has) of their quantile tables.

    Parameters
    ----------
    table : dict
        A `field_statistics` table of quantiles (field -> (C, L)).
    fields : ndarray
        The fields to pool (those of the training images).

    Returns
    -------
    ndarray
        (C, L) float64, nondecreasing along L (a median, level by level, of nondecreasing rows).
    """
    names = np.unique(np.asarray(fields).astype(str))
    return np.median(np.stack([table[name] for name in names]), axis=0)


def training_quantiles(images: ImageSet, raw: np.ndarray, column: str, train_index: np.ndarray) -> np.ndarray:
    """The reference of "field-quantile" for a training run: `quantile_reference` over the fields of the training images.

    Parameters
    ----------
    images : ImageSet
        The labelled images (their metadata names the fields).
    raw : ndarray
        (N, C, H, W) their padded images.
    column : str
        The metadata column naming each image's field of view.
    train_index : ndarray
        The images the network trains on (validation and held-out fields stay out of the reference).

    Returns
    -------
    ndarray
        (C, L) float64.

    Raises
    ------
    PhenolensError
        When the images carry no field column.
    """
    fields = field_column(images, column).astype(str)
    return quantile_reference(field_statistics(image_statistics(raw[train_index], "field-quantile"), fields[train_index]), fields[train_index])


QUANTILE_BLOCK_VALUES = 2**20  # pixel values mapped at once by `quantile_matched` (bounds its temporaries to tens of MB)


def quantile_matched(raw: np.ndarray, knots: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each image's stains mapped through the piecewise-linear function that takes its field's quantiles to the reference's.

    Below the first and above the last knot the end segments go on (bright structures keep their contrast rather than
    being clipped). A segment of no width (equal quantiles: a black or saturated stain) maps with slope 1, a shift,
    so nothing is divided by 0; inner segments of no width hold no pixel. A field whose stains differ from the
    reference by a gain and an offset is mapped back exactly.

    Parameters
    ----------
    raw : ndarray
        (N, C, H, W) padded images.
    knots : ndarray
        (N, C, L) each image's field quantiles at `QUANTILE_LEVELS` (`field_rows` of a quantile table).
    reference : ndarray
        (C, L) the quantiles to map onto (`quantile_reference`).

    Returns
    -------
    ndarray
        (N, C, H, W) float32.
    """
    flat = raw.reshape(*raw.shape[:2], int(np.prod(raw.shape[2:])))  # explicit: no -1 for no images
    targets = np.broadcast_to(reference, knots.shape)
    width, rise = np.diff(knots, axis=2), np.diff(targets, axis=2)
    slopes = np.where(width > 1e-12, rise / np.where(width > 1e-12, width, 1.0), 1.0)
    matched = np.empty(flat.shape, dtype=np.float32)
    # blocks of images: the segment index and the gathered knots are several times the pixels' size each
    block = max(1, QUANTILE_BLOCK_VALUES // max(1, flat.shape[1] * flat.shape[2]))
    for first in range(0, len(flat), block):
        rows = slice(first, first + block)
        segment = np.zeros(flat[rows].shape, dtype=np.intp)
        for level in range(1, knots.shape[2] - 1):  # a loop over the knots, not the pixels: the segment each pixel falls in
            segment += flat[rows] > knots[rows, :, level, None]
        start, target, slope = (np.take_along_axis(values[rows], segment, axis=2) for values in (knots, targets, slopes))
        matched[rows] = target + (flat[rows] - start) * slope
    return matched.reshape(raw.shape)


def intensity_normalized(
    images: ImageSet | np.ndarray,
    raw: np.ndarray,
    kind: str,
    column: str | None,
    brightness: FieldStatistics | None = None,
    reference: np.ndarray | None = None,
) -> np.ndarray:
    """`raw` divided by its `intensity_scales` ("field", "crop"), or quantile-matched to `reference` ("field-quantile");
    unchanged for ``none``.

    Parameters
    ----------
    images : ImageSet or ndarray
        The images `raw` was padded from (their metadata names the fields).
    raw : ndarray
        (N, C, H, W) padded images.
    kind : str
        ``none``, ``field``, ``field-quantile`` or ``crop``.
    column : str, optional
        The metadata column naming each image's field of view (with ``field`` and ``field-quantile``).
    brightness : dict, optional
        With a per-field kind, the `field_statistics` table to use (computed over more images than `raw` holds);
        default: the medians over `raw`.
    reference : ndarray, optional
        With ``field-quantile``, the (C, L) quantiles every field is mapped onto (`quantile_reference`, kept with the model).

    Returns
    -------
    ndarray
        The intensity-normalised images.

    Raises
    ------
    PhenolensError
        With a per-field kind, when the images carry no field column (or are a bare array), or a field is not in `brightness`.
    """
    if kind == "none":
        return raw
    fields = field_column(images, column).astype(str) if kind in FIELD_NORMALIZATIONS else None
    if kind == "field-quantile":
        table = brightness if brightness is not None else field_statistics(image_statistics(raw, kind), fields)
        return quantile_matched(raw, field_rows(table, fields, (0, raw.shape[1], len(QUANTILE_LEVELS))), reference)
    # with a brightness table a field's divisor is looked up: the images' own means would only give the shape
    means = image_statistics(raw, kind) if kind == "crop" or brightness is None else np.empty(raw.shape[:2])
    scales = intensity_scales(means, kind, fields, brightness)
    return (raw / scales[:, :, None, None]).astype(np.float32, copy=False)


@dataclass
class ChannelNormalization:
    """Per-channel (x - mean) / std with statistics of the training images, after an optional
    intensity normalisation per field of view or per image (`intensity_normalized`).

    Parameters
    ----------
    mean, std : ndarray
        (C,) float32 statistics (of the intensity-normalised training images).
    intensity : str
        ``none``, ``field`` (divide by the field's median mean intensity per channel), ``field-quantile``
        (map the field's quantiles per channel onto `intensity_reference`) or ``crop`` (divide by the
        image's own mean intensity per channel).
    intensity_column : str, optional
        The metadata column naming each image's field of view (with ``field`` and ``field-quantile``).
    field_brightness : dict, optional
        With a per-field kind, the table of every field of the images being scored (`field_statistics`: brightness,
        or quantiles with ``field-quantile``; the attribute's name predates ``field-quantile``),
        when they are read a chunk at a time; not saved with the model (default: the medians over the
        images given at once).
    intensity_reference : ndarray, optional
        With ``field-quantile``, the (C, L) quantiles of the training fields (`quantile_reference`); saved with the model.
    """

    mean: np.ndarray
    std: np.ndarray
    intensity: str = "none"
    intensity_column: str | None = None
    field_brightness: FieldStatistics | None = None
    intensity_reference: np.ndarray | None = None

    @classmethod
    def fit(
        cls, images: np.ndarray, intensity: str = "none", intensity_column: str | None = None, intensity_reference: np.ndarray | None = None
    ) -> ChannelNormalization:
        """Statistics of an (N, C, H, W) array over images and pixels (a constant channel gets std 1).

        Parameters
        ----------
        images : ndarray
            The padded training images, already intensity-normalised (`intensity_normalized`).
        intensity : str
            The intensity normalisation they went through, kept for prediction.
        intensity_column : str, optional
            Its field column.
        intensity_reference : ndarray, optional
            With ``field-quantile``, the quantiles the fields were mapped onto.

        Returns
        -------
        ChannelNormalization
            The fitted normalisation.
        """
        mean = images.mean(axis=(0, 2, 3), dtype=np.float64)
        std = images.std(axis=(0, 2, 3), dtype=np.float64)
        std = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        return cls(mean.astype(np.float32), std, intensity, intensity_column, intensity_reference=intensity_reference)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return (images - self.mean[None, :, None, None]) / self.std[None, :, None, None]

    def inputs(self, images: ImageSet | np.ndarray, raw: np.ndarray) -> np.ndarray:
        """The network input: `intensities` (with `field_brightness` when set), then standardised per channel.

        Parameters
        ----------
        images, raw
            As `intensities`.

        Returns
        -------
        ndarray
            The standardised images.
        """
        return self(self.intensities(images, raw))

    def intensities(self, images: ImageSet | np.ndarray, raw: np.ndarray) -> np.ndarray:
        """`raw` intensity-normalised as the network reads it before standardising (`inputs` without the last step).

        Parameters
        ----------
        images : ImageSet or ndarray
            The images `raw` was padded from.
        raw : ndarray
            (N, C, H, W) padded images.

        Returns
        -------
        ndarray
            The intensity-normalised images.
        """
        return intensity_normalized(images, raw, self.intensity, self.intensity_column, self.field_brightness, self.intensity_reference)

    def constant(self, raw: float | np.ndarray) -> np.ndarray:
        """(1, C, 1, 1) float32: the normalised value of a raw intensity (a scalar or one per channel).

        Parameters
        ----------
        raw : float or ndarray
            The raw intensity; ``constant(0.0)`` is black, the value of the centre-padding.

        Returns
        -------
        ndarray
            The normalised value per channel.
        """
        return self(np.broadcast_to(np.asarray(raw, dtype=np.float32), self.mean.shape)[None, :, None, None]).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        """JSON-ready ``{"mean": [...], "std": [...]}`` (and the intensity normalisation when there is one, with its
        reference quantiles and their levels for ``field-quantile``).

        Returns
        -------
        dict
            The statistics as lists.
        """
        intensity = {"intensity": self.intensity, "intensity_column": self.intensity_column} if self.intensity != "none" else {}
        if self.intensity_reference is not None:
            intensity.update(intensity_reference=np.asarray(self.intensity_reference).tolist(), quantile_levels=list(QUANTILE_LEVELS))
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), **intensity}

    @classmethod
    def from_dict(cls, values: dict) -> ChannelNormalization:
        """Rebuild from `to_dict` output.

        Parameters
        ----------
        values : dict
            ``mean`` and ``std`` lists (and ``intensity``, ``intensity_column``, ``intensity_reference``, ``quantile_levels``).

        Returns
        -------
        ChannelNormalization
            The normalisation.

        Raises
        ------
        PhenolensError
            For an unknown intensity normalisation, or ``field-quantile`` without reference quantiles of (channels, levels)
            at this version's `QUANTILE_LEVELS`.
        """
        from phenolens.training.settings import INTENSITY_NORMALIZATIONS

        if values.get("intensity", "none") not in INTENSITY_NORMALIZATIONS:
            known = ", ".join(INTENSITY_NORMALIZATIONS)
            raise PhenolensError(f"model config: normalization 'intensity' {values['intensity']!r} is not one of {known}; restore the config")
        reference = None
        if values.get("intensity") == "field-quantile":
            reference = np.asarray(values.get("intensity_reference", []), dtype=np.float64)
            if reference.shape != (len(values["mean"]), len(QUANTILE_LEVELS)) or values.get("quantile_levels") != list(QUANTILE_LEVELS):
                raise PhenolensError(
                    f"model config: normalization 'intensity_reference' must hold {len(QUANTILE_LEVELS)} quantiles (levels "
                    f"{list(QUANTILE_LEVELS)}) for each of the {len(values['mean'])} channels, got shape {reference.shape}; restore the config"
                )
        return cls(
            np.asarray(values["mean"], dtype=np.float32),
            np.asarray(values["std"], dtype=np.float32),
            values.get("intensity", "none"),
            values.get("intensity_column"),
            intensity_reference=reference,
        )


@dataclass
class CovariateEncoding:
    """One-hot encoding of one metadata column (e.g. cell line or plate), categories fixed at training.

    Parameters
    ----------
    column : str
        The metadata column.
    categories : list of str
        Its values seen in training, in one-hot order.
    """

    column: str
    categories: list[str]

    @classmethod
    def fit(cls, images: ImageSet, column: str) -> CovariateEncoding:
        """The encoding of `column` with the sorted values it takes in `images`.

        Parameters
        ----------
        images : ImageSet
            The training images.
        column : str
            A metadata column.

        Returns
        -------
        CovariateEncoding
            The encoding.

        Raises
        ------
        PhenolensError
            When the column is missing.
        """
        if column not in images.meta:
            raise PhenolensError(
                f"{images.name}: no metadata column {column!r} for covariates; choose one of {', '.join(map(str, images.meta.columns))}"
            )
        return cls(column, sorted(map(str, images.meta[column].unique())))

    def __call__(self, images: ImageSet) -> torch.Tensor:
        if self.column not in images.meta:
            raise PhenolensError(f"{images.name}: the model needs the metadata column {self.column!r} (its covariate); add it to the manifest")
        values = images.meta[self.column].astype(str).to_numpy()
        unknown = sorted(set(values) - set(self.categories))
        if unknown:
            raise PhenolensError(f"{images.name}: column {self.column!r} has values {unknown[:3]} unseen in training; known: {self.categories}")
        one_hot = (values[:, None] == np.asarray(self.categories)[None, :]).astype(np.float32)
        return torch.from_numpy(one_hot)


def padded_array(images: ImageSet | np.ndarray, size: int, channel_names: list[str], centre_on: int | None = None) -> np.ndarray:
    """(N, C, size, size) float32 array of centre-padded crops, checked for channel count and finite pixels.

    With `centre_on` (a DNA channel index) each crop is first registered on its nucleus
    (`phenolens.data.nuclei.centred_on_nuclei`).

    Parameters
    ----------
    images : ImageSet or ndarray
        The images (an array is (N, C, H, W) in the given channel order).
    size : int
        Crop size.
    channel_names : list of str
        The channels expected, for the count check and messages.
    centre_on : int, optional
        A DNA channel index to register each crop on its nucleus first.

    Returns
    -------
    ndarray
        (N, C, size, size) float32.

    Raises
    ------
    PhenolensError
        For another channel count, no images, or NaN/infinite pixels (naming the first such file).
    """
    if isinstance(images, ImageSet):
        if images.n_channels != len(channel_names):
            raise PhenolensError(
                f"{images.name}: the images have {images.n_channels} channels ({', '.join(images.channel_names)}) but the model "
                f"was trained on {len(channel_names)} ({', '.join(channel_names)}); give images with the same stains in the same order"
            )
    else:
        array = np.asarray(images, dtype=np.float32)
        if array.ndim != 4 or array.shape[1] != len(channel_names):
            raise PhenolensError(f"expected (N, {len(channel_names)}, H, W) images ({', '.join(channel_names)}), got shape {array.shape}")
        images = ImageSet(array, np.full(len(array), -1), [], list(channel_names))
    if centre_on is not None:
        images = centred_on_nuclei(images, centre_on)
    array = images.padded(size)
    if len(array) == 0:
        raise PhenolensError("no images to process; check the folder, manifest or subset")
    finite = np.isfinite(array).all(axis=(1, 2, 3))
    if not finite.all():
        first = int(np.flatnonzero(~finite)[0])
        source = images.meta["source"].iloc[first] if "source" in images.meta else f"image {first}"
        raise PhenolensError(f"{source}: has NaN or infinite pixels ({int((~finite).sum())} image(s) affected); clean or drop them")
    return array.astype(np.float32, copy=False)
