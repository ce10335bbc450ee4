"""Training batches from a weighted mixture of LeRobot datasets: deterministic, resumable, multi-process.

Sampling (``FrameSampler``): each dataset is read as an endless stream of epochs, each epoch a fresh seeded
permutation of its frames, so frames repeat only across epochs. The mixture is cut into blocks of about
4096 samples; a block takes ``floor(cum_w * M + u) - floor(cum_w_prev * M + u)`` samples from each dataset
(systematic rounding with a per-block offset ``u``), i.e. exactly ``w * M`` on average, interleaved in a
seeded random order.
Batch ``k`` is always the same list of frames for a seed, however many workers build it, and a loader can
resume at any step in O(number of blocks) time.

Frames (``FrameBuilder``) carry the images of the requested cameras (resized to ``image_size`` and, with
``augment``, augmented with a seed derived from (seed, step, slot), +i for the i-th camera), a chunk of
``chunk`` normalised actions starting at the frame, the normalised state, the instruction and indices.
At an episode's end the chunk is padded by repeating the episode's last action, with ``action_mask`` False
on padded steps (``valid`` is the same array): batches keep a fixed shape and the loss can skip padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.utils.data as tud

from openvla.data.lerobot import LeRobotDataset
from openvla.data.normalize import Normalizer
from openvla.data.stats import load_or_compute_statistics
from openvla.data.transforms import augment_image, resize

BLOCK_SAMPLES = 4096
_GOLDEN = (math.sqrt(5) - 1) / 2


class FrameSampler:
    """Maps a training step to the (dataset, frame) pairs of its batch, deterministically for a seed."""

    def __init__(self, sizes: Sequence[int], weights: Sequence[float] | None, batch_size: int, seed: int):
        self.sizes = [int(s) for s in sizes]
        if not self.sizes or min(self.sizes) <= 0:
            raise ValueError(f"every dataset needs at least one frame, got sizes {self.sizes}")
        w = np.asarray(self.sizes if weights is None else weights, dtype=np.float64)
        if w.shape != (len(self.sizes),) or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"weights must be {len(self.sizes)} non-negative numbers, not all zero; got {weights}")
        self.probabilities = w / w.sum()
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.block_batches = max(1, math.ceil(BLOCK_SAMPLES / self.batch_size))
        self.block_size = self.block_batches * self.batch_size
        self._cum = np.concatenate([[0.0], np.cumsum(self.probabilities)])
        self._cum[-1] = 1.0
        self._block: tuple[int, np.ndarray, np.ndarray] | None = None
        self._prefix: tuple[int, np.ndarray] = (0, np.zeros(len(self.sizes), np.int64))
        self._perms: dict[int, tuple[int, np.ndarray]] = {}

    def _counts(self, blocks: np.ndarray) -> np.ndarray:
        """Samples per dataset in each of ``blocks``: systematic rounding with a golden-ratio offset."""
        u = (blocks[:, None] * _GOLDEN + (self.seed % 9973) * 0.1234567) % 1.0
        edges = np.floor(self._cum[None, :] * self.block_size + u).astype(np.int64)
        return np.diff(edges, axis=1)

    def _prefix_counts(self, block: int) -> np.ndarray:
        """Samples taken from each dataset before ``block`` (incremental when walking forward)."""
        start, counts = self._prefix
        if block < start:
            start, counts = 0, np.zeros(len(self.sizes), np.int64)
        if block > start:
            counts = counts + self._counts(np.arange(start, block)).sum(axis=0)
        self._prefix = (block, counts)
        return counts

    def _block_slots(self, block: int) -> tuple[np.ndarray, np.ndarray]:
        """Dataset id and stream position of every slot of a block: datasets interleaved in a seeded random
        order, each dataset's slots taking its next stream positions in order."""
        if self._block is None or self._block[0] != block:
            counts = self._counts(np.array([block]))[0]
            order = np.random.default_rng([self.seed, 1, block]).permutation(self.block_size)
            labels = np.repeat(np.arange(len(self.sizes)), counts)[order]
            by_label = np.argsort(labels, kind="stable")
            rank = np.empty(self.block_size, np.int64)
            rank[by_label] = np.arange(self.block_size) - np.repeat(np.cumsum(counts) - counts, counts)
            self._block = (block, labels, self._prefix_counts(block)[labels] + rank)
        return self._block[1], self._block[2]

    def _frame(self, dataset: int, position: int) -> int:
        epoch, offset = divmod(int(position), self.sizes[dataset])
        cached = self._perms.get(dataset)
        if cached is None or cached[0] != epoch:
            perm = np.random.default_rng([self.seed, 2, dataset, epoch]).permutation(self.sizes[dataset])
            cached = self._perms[dataset] = (epoch, perm)
        return int(cached[1][offset])

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The (dataset index, frame position) pairs of batch ``step``."""
        block, k = divmod(int(step), self.block_batches)
        labels, positions = self._block_slots(block)
        sl = slice(k * self.batch_size, (k + 1) * self.batch_size)
        return [(int(d), self._frame(int(d), int(p))) for d, p in zip(labels[sl], positions[sl], strict=True)]


def frame_seed(seed: int, step: int, slot: int) -> int:
    """A 63-bit augmentation seed for one sample of one batch."""
    return int(np.random.SeedSequence([seed, step, slot]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class FrameBuilder:
    """Builds the training dict of one frame (runs in worker processes)."""

    def __init__(self, datasets: Sequence[LeRobotDataset], normalizers: Sequence[Normalizer | None], chunk: int,
                 cameras: Sequence[str], with_state: bool, augment: bool, image_size: int | None):
        self.datasets, self.normalizers = list(datasets), list(normalizers)
        self.chunk, self.cameras, self.with_state = int(chunk), tuple(cameras), with_state
        self.augment, self.image_size = augment, image_size

    def __call__(self, dataset: int, frame: int, seed: int) -> dict[str, Any]:
        ds, norm = self.datasets[dataset], self.normalizers[dataset]
        _, end = ds.episode_bounds(frame)
        idx = np.minimum(np.arange(frame, frame + self.chunk), end - 1)
        images = {}
        for i, cam in enumerate(self.cameras):
            img = ds.image(cam, frame)
            if self.image_size:
                img = resize(img, self.image_size)
            images[cam] = augment_image(img, seed + i) if self.augment else img
        episode, index = ds.location(frame)
        valid = np.arange(frame, frame + self.chunk) < end
        actions = ds.actions[idx]
        out: dict[str, Any] = {"images": images, "actions": actions if norm is None else norm.normalize_actions(actions),
                               "action_mask": valid, "valid": valid, "instruction": ds.instruction(frame),
                               "dataset_name": ds.name, "episode_index": episode, "frame_index": index,
                               "seed": seed}
        if self.with_state:
            state = ds.states[frame]
            out["state"] = state if norm is None else norm.normalize_state(state)
        return out


def collate_frames(items: list[Any]) -> Any:
    """Default collation: numpy arrays and numbers are stacked into torch tensors, dicts recursively,
    strings and anything else kept as lists."""
    first = items[0]
    if isinstance(first, dict):
        return {k: collate_frames([it[k] for it in items]) for k in first}
    if isinstance(first, np.ndarray):
        return torch.from_numpy(np.stack(items))
    if isinstance(first, torch.Tensor):
        return torch.stack(items)
    if isinstance(first, (bool, np.bool_)):
        return torch.tensor(items, dtype=torch.bool)
    if isinstance(first, (int, float, np.integer, np.floating)):
        return torch.tensor(np.asarray(items))
    return list(items)


class _BatchStream(tud.IterableDataset):
    """Endless batches from ``start``; in worker w of W it builds steps start + w, start + w + W, ..."""

    def __init__(self, sampler: FrameSampler, builder: FrameBuilder, frame_transform: Callable | None,
                 collate: Callable, start: int, rank: int = 0, world_size: int = 1):
        self.sampler, self.builder, self.start = sampler, builder, start
        self.frame_transform, self.collate = frame_transform, collate
        self.rank, self.world_size = rank, world_size

    def make_batch(self, step: int) -> Any:
        """Batch ``step`` of this rank: global batch ``step * world_size + rank``."""
        step = step * self.world_size + self.rank
        frames = []
        for slot, (dataset, frame) in enumerate(self.sampler.batch(step)):
            item = self.builder(dataset, frame, frame_seed(self.sampler.seed, step, slot))
            frames.append(self.frame_transform(item) if self.frame_transform else item)
        return self.collate(frames)

    def __iter__(self) -> Iterator[Any]:
        info = tud.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        step = self.start + worker
        while True:
            yield self.make_batch(step)
            step += workers


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class Loader:
    """An endless, deterministic iterator of training batches; ``state_dict()`` resumes it exactly.

    ``statistics`` maps each dataset's name to the statistics used to normalise it (pass ``statistics=``
    to use given ones, e.g. a checkpoint's); ``normalization=None`` delivers raw actions and states (a model's
    processor normalises them in ``frame_transform``). With ``rank``/``world_size`` each data-parallel rank gets its
    own share of the global batch sequence (rank r's step k is global batch k * world_size + r).
    """

    def __init__(self, datasets: Sequence[LeRobotDataset], weights: Sequence[float] | None = None,
                 batch_size: int = 32, seed: int = 0, chunk: int = 1, cameras: Sequence[str] = ("image",),
                 with_state: bool = False, augment: bool = False, num_workers: int = 2,
                 frame_transform: Callable[[dict], Any] | None = None,
                 collate: Callable[[list], Any] | None = None, image_size: int | None = 224,
                 normalization: str | None = "bounds_q99", statistics: dict[str, Any] | None = None,
                 prefetch_factor: int = 4, rank: int = 0, world_size: int = 1):
        datasets = list(datasets)
        if not datasets:
            raise ValueError("the loader needs at least one dataset")
        names = [ds.name for ds in datasets]
        if len(set(names)) != len(names):
            raise ValueError(f"dataset names must be unique (they key the statistics), got {names}")
        for ds in datasets:
            missing = [c for c in cameras if c not in ds.cameras]
            if missing:
                raise ValueError(f"dataset {ds.name!r} ({ds.root}) has no camera {missing[0]!r}; "
                                 f"its cameras are {ds.cameras}")
            if with_state and ds.states is None:
                raise ValueError(f"dataset {ds.name!r} ({ds.root}) has no observation.state")
        dims = {ds.name: ds.action_dim for ds in datasets}
        if len(set(dims.values())) != 1:
            raise ValueError(f"datasets in one loader need the same action size, got {dims}")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank must be in [0, world_size), got rank={rank} world_size={world_size}")
        self.rank, self.world_size = int(rank), int(world_size)
        self.statistics: dict[str, Any] = {}
        for ds in datasets:
            given = (statistics or {}).get(ds.name)
            self.statistics[ds.name] = given or load_or_compute_statistics(ds)[ds.name]
        normalizers = [None if normalization is None else Normalizer(self.statistics[ds.name], normalization)
                       for ds in datasets]
        self.datasets = datasets
        self.sampler = FrameSampler([ds.num_frames for ds in datasets], weights, batch_size, seed)
        self.builder = FrameBuilder(datasets, normalizers, chunk, cameras, with_state, augment, image_size)
        self.frame_transform = frame_transform
        self.collate = collate or collate_frames
        self.num_workers, self.prefetch_factor = int(num_workers), prefetch_factor
        self.seed, self.batch_size = int(seed), int(batch_size)
        self._step = 0
        self._iterator: Iterator[Any] | None = None

    @property
    def weights(self) -> list[float]:
        """The sampling probability of each dataset."""
        return self.sampler.probabilities.tolist()

    @property
    def step(self) -> int:
        """Number of batches delivered so far (the position ``state_dict`` saves)."""
        return self._step

    def _start(self) -> Iterator[Any]:
        stream = _BatchStream(self.sampler, self.builder, self.frame_transform, self.collate, self._step,
                              self.rank, self.world_size)
        if self.num_workers == 0:
            return iter(stream)
        loader = tud.DataLoader(stream, batch_size=None, num_workers=self.num_workers,
                                prefetch_factor=self.prefetch_factor, worker_init_fn=_worker_init)
        return iter(loader)

    def __iter__(self) -> Loader:
        return self

    def __next__(self) -> Any:
        if self._iterator is None:
            self._iterator = self._start()
        batch = next(self._iterator)
        self._step += 1
        return batch

    def batch_at(self, step: int) -> Any:
        """Build batch ``step`` in this process (for inspection and tests); does not move the loader."""
        stream = _BatchStream(self.sampler, self.builder, self.frame_transform, self.collate, 0, self.rank,
                              self.world_size)
        return stream.make_batch(step)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self._step, "seed": self.seed, "batch_size": self.batch_size, "weights": self.weights,
                "rank": self.rank, "world_size": self.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state["step"]``; the seed, batch size and weights must match the saved ones."""
        for key in ("seed", "batch_size", "world_size"):
            if state.get(key, getattr(self, key)) != getattr(self, key):
                raise ValueError(f"loader state has {key}={state.get(key)}, this loader has {getattr(self, key)}")
        if not np.allclose(state.get("weights", self.weights), self.weights):
            raise ValueError(f"loader state has weights {state.get('weights')}, this loader has {self.weights}")
        self.close()
        self._step = int(state["step"])

    def close(self) -> None:
        """Stop worker processes (a later ``next`` starts them again at the current step)."""
        iterator, self._iterator = self._iterator, None
        if iterator is not None and hasattr(iterator, "_shutdown_workers"):
            iterator._shutdown_workers()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # interpreter shutdown
            pass


def make_loader(datasets: Sequence[LeRobotDataset], weights: Sequence[float] | None = None,
                batch_size: int = 32, seed: int = 0, **kw: Any) -> Loader:
    """A ``Loader`` over ``datasets`` (weights: sampling probabilities; None = proportional to frames)."""
    return Loader(datasets, weights, batch_size, seed, **kw)
