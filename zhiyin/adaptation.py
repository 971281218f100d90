"""Repository adaptation: continued training of the local model on a repository's own code.

What it reads is what the indexer indexes (ignore files, no binaries, generated or minified files),
with secrets redacted before tokenising. Files are split into training and held-out validation by
a hash of their path, so a file is never in both. Training windows are drawn in an order fixed by
(seed, step): a run resumed from its checkpoint takes exactly the steps the uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from engine.adapter import (
    Adapter,
    AdapterConfig,
    AdapterFileError,
    base_fingerprint,
    load_tensors,
    save_adapter,
    save_tensors,
)
from engine.errors import N_, EngineError
from engine.llm_engine import EngineOptions, LLMEngine
from engine.training import (
    AdapterTrainer,
    TrainSettings,
    activation_bytes,
    evaluate_nats,
)
from engram.redaction import redact
from indexer.walker import Walker, skip_reason


class NothingToLearnError(EngineError):
    message = N_("{path} has too little source code to adapt to ({tokens} tokens; at least {needed} are needed).")


class CheckpointMismatchError(EngineError):
    message = N_("The unfinished run in {path} used other settings ({detail}). "
                 "Run again with the same settings to resume, or add --restart to start over.")


class CheckpointDamagedError(EngineError):
    message = N_("The checkpoint {path} of an unfinished run is damaged ({detail}). "
                 "Run again with --restart to start over.")


class MemoryBudgetError(EngineError):
    message = N_("Adaptation needs about {needed} MiB of memory, more than the budget of {budget} MiB. "
                 "Raise --max-memory-mib or shorten --seq-len.")


class DiskSpaceError(EngineError):
    message = N_("Adaptation needs about {needed} MiB of disk in {folder}, but only {free} MiB are free. "
                 "Free some space and run again.")


@dataclass
class AdaptSettings:
    minutes: float | None = 20.0  # training time budget (evaluation not counted)
    steps: int | None = None  # step budget; with both, whichever ends first
    seq_len: int = 256
    batch: int = 4
    rank: int = 16
    lora_alpha: float = 32.0
    residual: str = "mhc"
    seed: int = 0
    validation_share: float = 0.1
    eval_every: int = 25  # steps between validation points of the curve
    eval_tokens: int = 16384  # validation tokens scored at each point (all of them at the start and end)
    checkpoint_every: int = 10  # steps between resumable checkpoints
    learning_rate: float = 1e-3
    max_memory_mib: int = 8192  # training memory budget: gradient checkpointing, then smaller batches, to fit

    def fingerprint(self) -> dict:
        """What must match for a checkpoint to resume (budgets may change between runs)."""
        keep = ("seq_len", "batch", "rank", "lora_alpha", "residual", "seed", "validation_share", "learning_rate")
        return {k: v for k, v in asdict(self).items() if k in keep}


@dataclass
class Corpus:
    train: list[torch.Tensor]  # windows of seq_len + 1 ids
    validation: list[torch.Tensor]
    validation_bytes: int  # UTF-8 bytes of the validation tokens that are predicted
    train_files: list[str]
    validation_files: list[str]
    skipped: dict[str, int] = field(default_factory=dict)
    redactions: int = 0


@dataclass
class AdaptReport:
    adapter_path: Path
    steps: int
    train_seconds: float
    train_tokens: int
    bits_per_byte_before: float
    bits_per_byte_after: float
    curve: list[dict]  # {"step", "seconds", "bits_per_byte"} on the first eval_tokens of validation
    residual_scales: list[list[float]]  # learned α per layer: [attention, MLP]
    train_files: int
    validation_files: int
    resumed_from: int = 0

    def as_dict(self) -> dict:
        out = asdict(self)
        out["adapter_path"] = str(self.adapter_path)
        return out


def is_validation_file(path: str, share: float) -> bool:
    bucket = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big") / 2**32
    return bucket < share


def repository_documents(root: Path) -> tuple[list[tuple[str, str]], dict[str, int], int]:
    """(path, text) of every file the indexer would index, secrets redacted; what was skipped; how
    many secret spans were replaced."""
    walker = Walker(root)
    documents, redactions = [], 0
    for candidate in walker.walk():
        try:
            data = candidate.abs_path.read_bytes()
        except OSError:
            continue
        if (reason := skip_reason(data, candidate.path)) is not None:
            walker.skipped[reason] = walker.skipped.get(reason, 0) + 1
            continue
        text = data.decode("utf-8", errors="replace")
        cleaned = redact(text)
        redactions += len(cleaned.findings)
        documents.append((candidate.path, cleaned.text))
    return documents, walker.skipped, redactions


def build_corpus(root: Path, engine: LLMEngine, settings: AdaptSettings) -> Corpus:
    documents, skipped, redactions = repository_documents(root)
    held_out = [d for d in documents if is_validation_file(d[0], settings.validation_share)]
    if not held_out and len(documents) > 1:  # tiny repositories: hold out at least one file
        held_out = [documents[-1]]
    held_paths = {path for path, _ in held_out}
    train = [d for d in documents if d[0] not in held_paths]
    window = settings.seq_len + 1
    train_windows = _windows(engine, train, window)
    validation_windows = _windows(engine, held_out, window)
    if len(train_windows) < settings.batch or not validation_windows:
        tokens = sum(len(w) for w in train_windows + validation_windows)
        raise NothingToLearnError(path=str(root), tokens=tokens, needed=(settings.batch + 1) * window)
    return Corpus(train_windows, validation_windows, predicted_bytes(engine, validation_windows), [p for p, _ in train], sorted(held_paths),
                  skipped, redactions)


def _windows(engine: LLMEngine, documents: list[tuple[str, str]], window: int) -> list[torch.Tensor]:
    """The documents' ids, each ending in end-of-text, run together and cut into windows."""
    stream: list[int] = []
    end = [engine.tokenizer.eos_id] if engine.tokenizer.eos_id is not None else []
    for _, text in documents:
        stream += engine.tokenizer.encode(text) + end
    ids = torch.tensor(stream[: len(stream) // window * window], dtype=torch.long)
    return list(ids.view(-1, window)) if len(ids) else []


def predicted_bytes(engine: LLMEngine, windows: list[torch.Tensor]) -> int:
    """UTF-8 bytes of the tokens the windows predict (all but each window's first)."""
    return sum(len(engine.tokenizer.decode(w[1:].tolist()).encode()) for w in windows)


def batch_for_step(corpus: Corpus, settings: AdaptSettings, step: int) -> torch.Tensor:
    """The windows step `step` trains on: epochs of a permutation fixed by (seed, epoch)."""
    per_epoch = len(corpus.train) // settings.batch
    epoch, index = divmod(step, per_epoch)
    order = torch.randperm(len(corpus.train), generator=torch.Generator().manual_seed(settings.seed * 1_000_003 + epoch))
    rows = order[index * settings.batch : (index + 1) * settings.batch]
    return torch.stack([corpus.train[i] for i in rows.tolist()])


def bits_per_byte(nats: float, num_bytes: int) -> float:
    return nats / math.log(2) / max(num_bytes, 1)


def fit_memory(engine: LLMEngine, settings: AdaptSettings) -> tuple[int, bool]:
    """(batch, recompute) that keeps the estimated training memory under the budget."""
    weights = sum(t.numel() * t.element_size() for t in engine.model.state_dict().values())
    budget = settings.max_memory_mib << 20
    for batch in range(settings.batch, 0, -1):
        for recompute in (False, True):
            if weights + activation_bytes(engine.config, batch * settings.seq_len, recompute) <= budget:
                return batch, recompute
    needed = (weights + activation_bytes(engine.config, settings.seq_len, True)) >> 20
    raise MemoryBudgetError(needed=needed, budget=settings.max_memory_mib)


def check_disk(folder: Path, adapter: Adapter) -> None:
    """Room for the adapter and its checkpoint (the tensors and two optimiser moments), plus slack."""
    needed = 4 * sum(p.numel() * 4 for p in adapter.parameters())
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DiskSpaceError(needed=needed >> 20, folder=str(folder), free=free >> 20)


def checkpoint_path(adapter_path: Path) -> Path:
    return adapter_path.with_name(adapter_path.stem + ".partial.safetensors")


def adapt(root: Path, engine: LLMEngine, adapter_path: Path, settings: AdaptSettings, *, restart: bool = False,
          progress: Callable[[int, float, float, int], None] | None = None,
          corpus: Corpus | None = None, after_step: Callable[[int], None] | None = None) -> AdaptReport:
    """Trains an adapter for `engine`'s model (loaded in fp32) on the repository at `root`, saves it
    to `adapter_path` and returns the figures. Resumes from the checkpoint beside `adapter_path`
    unless `restart`. `progress(step, loss, seconds, percentage)` follows the training;
    `after_step(step)` runs after each step (tests interrupt there)."""
    corpus = corpus or build_corpus(root, engine, settings)
    batch, recompute = fit_memory(engine, settings)
    settings = replace(settings, batch=batch)
    model = engine.model
    device = model.embed_tokens.weight.device
    adapter = Adapter(engine.config, AdapterConfig(settings.rank, settings.lora_alpha, settings.residual),
                      seed=settings.seed).to(device)
    check_disk(adapter_path.parent, adapter)
    for stale in adapter_path.parent.glob(f".{adapter_path.stem}*.tmp"):  # a killed run's half-written file
        stale.unlink(missing_ok=True)
    planned = settings.steps or 10**9
    if settings.minutes is not None and settings.steps is None:  # for the schedule: steps the time allows
        planned = max(1, int(settings.minutes * 60 / _seconds_per_step_guess(engine, settings)))
    trainer = AdapterTrainer(model, adapter, TrainSettings(learning_rate=settings.learning_rate,
                                                           autocast_bf16=True, recompute=recompute), planned)
    state = {"step": 0, "seconds": 0.0, "tokens": 0, "curve": [], "planned": planned}
    partial = checkpoint_path(adapter_path)
    if partial.exists() and not restart:
        state = _resume(partial, trainer, settings, corpus)
        trainer.total_steps = state["planned"]
    resumed_from = state["step"]
    head = corpus.validation[: max(1, settings.eval_tokens // settings.seq_len)]
    head_bytes = predicted_bytes(engine, head)

    def validation_point() -> None:
        nats = evaluate_nats(model, adapter, head, autocast_bf16=True)
        state["curve"].append({"step": state["step"], "seconds": round(state["seconds"], 2),
                               "bits_per_byte": bits_per_byte(nats, head_bytes)})

    before = bits_per_byte(evaluate_nats(model, Adapter(engine.config, adapter.config).to(device), corpus.validation,
                                         autocast_bf16=True), corpus.validation_bytes)
    if not state["curve"]:
        validation_point()
    while not _budget_spent(state, settings):
        started = time.perf_counter()
        loss = trainer.step(batch_for_step(corpus, settings, state["step"]))
        state["seconds"] += time.perf_counter() - started
        state["step"] += 1
        state["tokens"] += batch * settings.seq_len
        if state["step"] % settings.eval_every == 0:
            validation_point()
        if state["step"] % settings.checkpoint_every == 0:
            _save_checkpoint(partial, trainer, settings, state, corpus)
        if progress is not None:
            progress(state["step"], loss, state["seconds"], _percentage(state, settings))
        if after_step is not None:
            after_step(state["step"])
    if state["curve"][-1]["step"] != state["step"]:
        validation_point()
    after = bits_per_byte(evaluate_nats(model, adapter, corpus.validation, autocast_bf16=True), corpus.validation_bytes)
    result = AdaptReport(adapter_path, state["step"], state["seconds"], state["tokens"], before, after, state["curve"],
                         adapter.residual_scale.detach().cpu().tolist(), len(corpus.train_files),
                         len(corpus.validation_files), resumed_from)
    summary = {k: v for k, v in result.as_dict().items() if k not in ("adapter_path", "curve")}
    save_adapter(adapter_path, adapter, base_fingerprint(model), summary | {"settings": asdict(settings)})
    partial.unlink(missing_ok=True)
    return result


def _budget_spent(state: dict, settings: AdaptSettings) -> bool:
    if settings.steps is not None and state["step"] >= settings.steps:
        return True
    return settings.minutes is not None and state["seconds"] >= settings.minutes * 60


def _percentage(state: dict, settings: AdaptSettings) -> int:
    shares = []
    if settings.steps is not None:
        shares.append(state["step"] / settings.steps)
    if settings.minutes is not None:
        shares.append(state["seconds"] / (settings.minutes * 60))
    return min(100, int(100 * max(shares)))


def _seconds_per_step_guess(engine: LLMEngine, settings: AdaptSettings) -> float:
    """From the model size: ~6 FLOPs per parameter per token at ~250 GFLOP/s (2 cores, bf16)."""
    params = sum(t.numel() for t in engine.model.parameters())
    return max(1e-3, 6 * params * settings.batch * settings.seq_len / 250e9)


def _data_digest(corpus: Corpus) -> str:
    digest = hashlib.sha256("\n".join(corpus.train_files).encode())
    digest.update(str(len(corpus.train)).encode())
    return digest.hexdigest()[:16]


def _save_checkpoint(path: Path, trainer: AdapterTrainer, settings: AdaptSettings, state: dict, corpus: Corpus) -> None:
    tensors = {f"adapter.{k}": v for k, v in trainer.adapter.tensors().items()} | trainer.state_tensors()
    metadata = {"settings": json.dumps(settings.fingerprint()), "state": json.dumps(state),
                "data": _data_digest(corpus)}
    save_tensors(path, tensors, metadata)


def _resume(path: Path, trainer: AdapterTrainer, settings: AdaptSettings, corpus: Corpus) -> dict:
    try:
        tensors, metadata = load_tensors(path)
        saved_settings, state = json.loads(metadata["settings"]), json.loads(metadata["state"])
    except AdapterFileError as exc:
        raise CheckpointDamagedError(path=str(path), detail=exc.params["detail"])
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointDamagedError(path=str(path), detail=f"bad metadata: {exc}")
    if saved_settings != settings.fingerprint():
        changed = sorted(k for k in saved_settings if saved_settings.get(k) != settings.fingerprint().get(k))
        raise CheckpointMismatchError(path=str(path), detail=", ".join(changed))
    if metadata.get("data") != _data_digest(corpus):
        raise CheckpointMismatchError(path=str(path), detail="the repository's files changed")
    trainer.adapter.load_tensors({k.removeprefix("adapter."): v for k, v in tensors.items() if k.startswith("adapter.")})
    trainer.load_state_tensors(tensors, state["step"])
    return state


def open_training_engine(model_path: Path, threads: int | None = None) -> LLMEngine:
    """The base model with fp32 weights (training reads them under bf16 autocast) and no adapter;
    on a CUDA GPU when there is one (then the engine is for training only)."""
    engine = LLMEngine.load(model_path, EngineOptions(dtype="fp32", int8_decode=False, kv_cache_mib=64,
                                                      num_threads=threads))
    if torch.cuda.is_available():
        engine.model.to("cuda")
    return engine
