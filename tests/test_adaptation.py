"""Repository adaptation: adapters (LoRA + mHC residual scales) trained, merged, resumed, refused.

Tiny random checkpoints carry the exactness checks; the real default model the end-to-end command.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from engine import EngineOptions, LLMEngine
from engine.adapter import (
    Adapter,
    AdapterConfig,
    AdapterFileError,
    AdapterMismatchError,
    base_fingerprint,
    load_adapter,
    read_adapter_info,
    save_adapter,
)
from engine.attention import AttentionMetadata
from engine.sequence import Sequence
from engine.training import AdapterTrainer, TrainSettings, adapted_logits, token_losses
from zhiyin.adaptation import (
    AdaptSettings,
    CheckpointDamagedError,
    CheckpointMismatchError,
    MemoryBudgetError,
    NothingToLearnError,
    adapt,
    build_corpus,
    checkpoint_path,
    fit_memory,
    repository_documents,
)

ROOT = Path(__file__).resolve().parent.parent
SECRET = "AKIAQWERTYUIOPASDF12"  # an AWS access key id shape


def engine_for(folder: Path, adapter: Path | None = None) -> LLMEngine:
    return LLMEngine.load(folder, EngineOptions(dtype="fp32", int8_decode=False, kv_cache_mib=16, adapter=adapter))


def serving_logits(engine: LLMEngine, ids: list[int]) -> torch.Tensor:
    """Logits of every position through the engine's paged serving path."""
    seq = Sequence(list(ids))
    seq.reserve(engine.blocks, len(ids))
    try:
        meta = AttentionMetadata.for_step(seq.block_ids, 0, len(ids), engine.kv.block_size)
        return engine.model(torch.tensor(ids), torch.arange(len(ids)), engine.kv, meta,
                            logits_for=torch.arange(len(ids)))
    finally:
        seq.free(engine.blocks)


def randomised(adapter: Adapter, seed: int = 1) -> Adapter:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.add_(torch.randn(p.shape, generator=generator) * 0.05)
    return adapter


@pytest.fixture
def repo(tmp_path):
    """A small repository: code, an ignored file, a secret-bearing config, a file with a secret."""
    root = tmp_path / "repo"
    (root / "pkg").mkdir(parents=True)
    (root / ".gitignore").write_text("build/\n")
    (root / "build").mkdir()
    (root / "build" / "out.py").write_text("IGNORED_MARKER = 'never read'\n")
    (root / ".env").write_text(f"AWS_ACCESS_KEY_ID={SECRET}\n")
    (root / "pkg" / "settings.py").write_text(f'aws_key = "{SECRET}"\n')
    for i in range(12):
        body = "".join(f"def point_{i}_{j}(x, y):\n    return Point(x + {j}, y - {i})\n\n" for j in range(12))
        (root / "pkg" / f"mod_{i}.py").write_text(f"# 模块 {i}\nfrom pkg.point import Point\n\n{body}")
    return root


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_training_forward_matches_serving(tiny_models, arch):
    """Untrained, the adapter changes nothing; trained and merged, serving computes what training did;
    without it, the base model comes back bit for bit."""
    _, folder, _ = tiny_models[arch]
    base = engine_for(folder)
    ids = list(range(3, 90))
    reference = serving_logits(base, ids)
    fresh = Adapter(base.config, AdapterConfig(rank=4))
    with torch.no_grad():
        assert (adapted_logits(base.model, fresh, torch.tensor([ids]))[0] - reference).abs().max() < 1e-4
        adapter = randomised(Adapter(base.config, AdapterConfig(rank=4)))
        trained = adapted_logits(base.model, adapter, torch.tensor([ids]))[0]
    assert (trained - reference).abs().max() > 0.1  # the adapter does something
    path = folder.parent / f"{arch}-adapter.safetensors"
    save_adapter(path, adapter, base_fingerprint(base.model), {"steps": 1})
    merged = serving_logits(engine_for(folder, path), ids)
    assert (merged - trained).abs().max() < 1e-4
    assert torch.equal(serving_logits(engine_for(folder), ids), reference)


def test_adapter_of_other_weights_is_refused(tiny_models):
    llama, qwen = engine_for(tiny_models["llama"][1]), engine_for(tiny_models["qwen2"][1])
    path = tiny_models["llama"][1].parent / "for-qwen.safetensors"
    save_adapter(path, Adapter(qwen.config, AdapterConfig(rank=2)), base_fingerprint(qwen.model), {})
    with pytest.raises(AdapterMismatchError):
        load_adapter(path, llama.config, base_fingerprint(llama.model))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_adapter_is_detected(tiny_models, tmp_path, damage):
    engine = engine_for(tiny_models["llama"][1])
    path = tmp_path / "a.safetensors"
    save_adapter(path, randomised(Adapter(engine.config, AdapterConfig(rank=2))), base_fingerprint(engine.model), {})
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF  # tensor bytes: the header still parses, the checksum does not match
    elif damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data = bytearray(b"not an adapter at all" * 10)
    path.write_bytes(bytes(data))
    with pytest.raises(AdapterFileError):
        load_adapter(path, engine.config, base_fingerprint(engine.model))


def test_recompute_gives_the_same_gradients(tiny_models):
    engine = engine_for(tiny_models["qwen2"][1])
    ids = torch.randint(3, 250, (2, 40), generator=torch.Generator().manual_seed(0))
    grads = []
    for recompute in (False, True):
        adapter = randomised(Adapter(engine.config, AdapterConfig(rank=4)))
        token_losses(engine.model, adapter, ids, recompute, rows_per_chunk=16).mean().backward()
        grads.append([p.grad.clone() for p in adapter.trainable()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_mhc_learns_residual_scales_plain_keeps_them(tiny_models):
    engine = engine_for(tiny_models["llama"][1])
    ids = torch.randint(3, 250, (2, 33), generator=torch.Generator().manual_seed(0))
    for residual in ("mhc", "plain"):
        adapter = Adapter(engine.config, AdapterConfig(rank=4, residual=residual))
        trainer = AdapterTrainer(engine.model, adapter, TrainSettings(warmup_steps=1), total_steps=5)
        losses = [trainer.step(ids) for _ in range(5)]
        assert losses[-1] < losses[0]
        moved = (adapter.residual_scale - 1).abs().max().item()
        assert (moved > 1e-3) if residual == "mhc" else moved == 0


def test_training_reads_only_indexed_files_and_redacts_secrets(repo):
    documents, _, redactions = repository_documents(repo)
    paths = {path for path, _ in documents}
    assert "build/out.py" not in paths and ".env" not in paths  # ignored; not source
    assert "pkg/mod_0.py" in paths and "pkg/settings.py" in paths
    text = "".join(text for _, text in documents)
    assert "IGNORED_MARKER" not in text and SECRET not in text
    assert redactions >= 1


def small_settings(**overrides) -> AdaptSettings:
    values = {"minutes": None, "steps": 6, "seq_len": 32, "batch": 2, "rank": 4, "eval_every": 3,
              "eval_tokens": 128, "checkpoint_every": 2, "validation_share": 0.2}
    return AdaptSettings(**(values | overrides))


def test_adapt_lowers_held_out_loss_and_splits_by_file(tiny_models, repo, tmp_path):
    engine = engine_for(tiny_models["llama"][1])
    settings = small_settings(steps=30, learning_rate=5e-3)
    corpus = build_corpus(repo, engine, settings)
    assert corpus.validation_files and not set(corpus.validation_files) & set(corpus.train_files)
    result = adapt(repo, engine, tmp_path / "repo.safetensors", settings)
    assert result.steps == 30 and result.bits_per_byte_after < result.bits_per_byte_before
    assert [p["step"] for p in result.curve][:2] == [0, 3]
    info = read_adapter_info(result.adapter_path)
    assert info.config.residual == "mhc" and info.report["steps"] == 30
    assert not checkpoint_path(result.adapter_path).exists()


def test_interrupted_run_resumes_to_the_same_adapter(tiny_models, repo, tmp_path):
    engine = engine_for(tiny_models["llama"][1])
    settings = small_settings()
    straight = adapt(repo, engine, tmp_path / "straight.safetensors", settings)

    def interrupt(step: int) -> None:
        if step == 3:
            raise KeyboardInterrupt

    path = tmp_path / "resumed.safetensors"
    with pytest.raises(KeyboardInterrupt):
        adapt(repo, engine, path, settings, after_step=interrupt)
    assert checkpoint_path(path).exists() and not path.exists()
    resumed = adapt(repo, engine, path, settings)
    assert resumed.resumed_from == 2 and resumed.steps == 6
    ours = load_adapter(path, engine.config, base_fingerprint(engine.model)).tensors()
    theirs = load_adapter(straight.adapter_path, engine.config, base_fingerprint(engine.model)).tensors()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), key


def test_damaged_or_mismatched_checkpoint_is_refused(tiny_models, repo, tmp_path):
    engine = engine_for(tiny_models["llama"][1])
    path = tmp_path / "a.safetensors"

    def interrupt(step: int) -> None:
        if step == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        adapt(repo, engine, path, small_settings(), after_step=interrupt)
    with pytest.raises(CheckpointMismatchError):
        adapt(repo, engine, path, small_settings(rank=8))
    partial = checkpoint_path(path)
    data = bytearray(partial.read_bytes())
    data[-50] ^= 0x55
    partial.write_bytes(bytes(data))
    with pytest.raises(CheckpointDamagedError):
        adapt(repo, engine, path, small_settings())
    assert adapt(repo, engine, path, small_settings(), restart=True).resumed_from == 0


@pytest.mark.slow
def test_memory_budget_picks_recompute_then_smaller_batches(engine_fp32):
    generous = AdaptSettings(batch=4, seq_len=256, max_memory_mib=16384)
    assert fit_memory(engine_fp32, generous) == (4, False)
    assert fit_memory(engine_fp32, AdaptSettings(batch=4, seq_len=256, max_memory_mib=2048)) == (4, True)
    assert fit_memory(engine_fp32, AdaptSettings(batch=16, seq_len=1024, max_memory_mib=2048))[0] < 16
    with pytest.raises(MemoryBudgetError):
        fit_memory(engine_fp32, AdaptSettings(max_memory_mib=300))


def test_too_little_code_is_a_clear_error(tiny_models, tmp_path):
    (tmp_path / "one.py").write_text("x = 1\n")
    with pytest.raises(NothingToLearnError):
        build_corpus(tmp_path, engine_for(tiny_models["llama"][1]), small_settings())


def run_cli(*args: str, env: dict, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "zhiyin", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600, check=False, **kwargs)


@pytest.mark.slow
def test_adapt_command_on_the_default_model(repo, tmp_path):
    """The command end to end: trains within its memory budget (peak RSS measured), lists the adapter,
    serves it, and the base model answers as before once the adapter is deleted."""
    env = os.environ | {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
                        "ZHIYIN_LANG": "en", "OMP_NUM_THREADS": "2"}
    budget_mib = 2048
    # The budget bounds training, not loading (the GGUF's dequantisation peaks higher, briefly): the
    # peak is reset as adaptation starts (clear_refs 5 resets VmHWM) and read when it ends.
    code = ("import sys, zhiyin.adaptation as a, zhiyin.commands.adapt as c; from zhiyin.cli import main\n"
            "def measured(*args, **kwargs):\n"
            "    open('/proc/self/clear_refs', 'w').write('5')\n"
            "    try:\n        return adapt(*args, **kwargs)\n"
            "    finally:\n"
            "        hwm = next(l for l in open('/proc/self/status') if l.startswith('VmHWM'))\n"
            "        print('PEAK', int(hwm.split()[1]) // 1024, file=sys.stderr)\n"
            "adapt, c.adapt = a.adapt, measured\n"
            "sys.exit(main(sys.argv[1:]))")
    done = subprocess.run([sys.executable, "-c", code, "adapt", str(repo), "--steps", "2", "--seq-len", "64",
                           "--batch", "2", "--rank", "2", "--max-memory-mib", str(budget_mib), "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    peak = int(done.stderr.split("PEAK")[-1])
    assert report["steps"] == 2 and 540 < peak <= budget_mib, peak  # fp32 weights alone: 540 MB
    adapter = Path(report["adapter_path"])
    assert adapter.is_file() and adapter.parent.parent.parent == tmp_path / "data" / "zhiyin"
    listing = run_cli("model", "list", env=env)
    assert "+ repo" in listing.stdout and "held-out bits/byte" in listing.stdout
    prompt = ["generate", "from pkg.point import Point\n\ndef point_3_4(x, y):\n", "--max-tokens", "8", "--quiet"]
    base_text = run_cli(*prompt, "--adapter", "none", env=env).stdout
    assert run_cli(*prompt, "--adapter", "repo", env=env).returncode == 0
    adapter.unlink()
    assert run_cli(*prompt, env=env).stdout == base_text
    missing = run_cli(*prompt, "--adapter", "repo", env=env | {"ZHIYIN_LANG": "zh_CN"})
    assert missing.returncode == 2 and "Traceback" not in missing.stderr and "zhiyin adapt" in missing.stderr
    assert "适配" in missing.stderr


@pytest.mark.slow
def test_adapt_command_errors_are_one_line(tmp_path):
    env = os.environ | {"XDG_DATA_HOME": str(tmp_path / "data"), "ZHIYIN_LANG": "zh_CN"}
    (tmp_path / "empty").mkdir()
    done = run_cli("adapt", str(tmp_path / "empty"), "--steps", "1", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "源代码" in done.stderr


def test_no_room_on_disk_is_a_clear_error_before_training(tiny_models, repo, tmp_path, monkeypatch):
    import shutil

    from zhiyin.adaptation import DiskSpaceError

    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000))
    with pytest.raises(DiskSpaceError):
        adapt(repo, engine_for(tiny_models["llama"][1]), tmp_path / "a.safetensors", small_settings())
    assert not (tmp_path / "a.safetensors").exists()


@pytest.mark.slow
def test_killed_run_resumes_from_its_last_checkpoint(repo, tmp_path):
    """SIGKILL while training (checkpoints are written every 10 steps): the next run resumes from the
    last whole checkpoint and finishes; no temporary file is ever taken for a checkpoint."""
    env = os.environ | {"XDG_DATA_HOME": str(tmp_path / "data"), "ZHIYIN_LANG": "en", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "zhiyin", "adapt", str(repo), "--steps", "60", "--seq-len", "32", "--batch",
               "1", "--rank", "2", "--json"]
    folder = tmp_path / "data" / "zhiyin" / "adapters" / "SmolLM2-135M-Instruct.Q4_1"
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not (folder / "repo.partial.safetensors").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
    finally:
        process.kill()
        process.wait()
    assert (folder / "repo.partial.safetensors").exists() and not (folder / "repo.safetensors").exists()
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["resumed_from"] >= 10 and report["resumed_from"] % 10 == 0 and report["steps"] == 60
    assert sorted(p.name for p in folder.iterdir()) == ["repo.safetensors"]
