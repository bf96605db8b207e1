"""Every way a user can point the loader at something wrong gets a message that says what is wrong."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from explorer.errors import LoadError
from explorer.models.loading import LoadRequest, _probe_hub, load_model

ROOT = Path(__file__).resolve().parents[2]


def load_error(request: LoadRequest, **kwargs) -> str:
    with pytest.raises(LoadError) as info:
        load_model(request, **kwargs)
    return str(info.value)


def test_missing_folder(tmp_path):
    assert "No folder at" in load_error(LoadRequest("folder", str(tmp_path / "nope")))


def test_folder_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    assert "not a transformers checkpoint: it has no config.json" in load_error(
        LoadRequest("folder", str(tmp_path))
    )


def test_config_without_weights(tmp_path, tiny_dir):
    (tmp_path / "config.json").write_text((tiny_dir("gpt2") / "config.json").read_text())
    assert "no weights" in load_error(LoadRequest("folder", str(tmp_path)))


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for f in src.iterdir():
        (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_weights(tmp_path, tiny_dir):
    folder = _copy(tiny_dir("gpt2"), tmp_path / "ckpt")
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    assert "model.safetensors is truncated" in load_error(LoadRequest("folder", str(folder)))


def test_garbage_weights(tmp_path, tiny_dir):
    folder = _copy(tiny_dir("gpt2"), tmp_path / "ckpt")
    (folder / "model.safetensors").write_bytes(os.urandom(4096))
    assert "model.safetensors is damaged" in load_error(LoadRequest("folder", str(folder)))


def test_remote_code_is_refused(tmp_path, tiny_dir):
    folder = _copy(tiny_dir("gpt2"), tmp_path / "ckpt")
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_evil.EvilConfig"}
    config["model_type"] = "evil-remote"
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_evil.py").write_text("raise SystemExit('remote code ran')\n")
    message = load_error(LoadRequest("folder", str(folder)))
    assert "ships its own Python code" in message and "trust" in message


def test_model_too_large_for_memory(tiny_dir):
    message = load_error(LoadRequest("folder", str(tiny_dir("llama"))), free_bytes=10_000)
    assert "needs about" in message and "only 10.00 KB is free" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_chosen_without_cuda(tiny_dir):
    message = load_error(LoadRequest("folder", str(tiny_dir("gpt2")), device="cuda"))
    assert "sees no CUDA GPU" in message


def test_unknown_embedded_name():
    assert "No embedded model named 'gpt-9'" in load_error(LoadRequest("embedded", "gpt-9"))


def test_empty_and_malformed_ids():
    assert "No model given" in load_error(LoadRequest("hub", "  "))
    assert "is not a Hugging Face Hub id" in load_error(LoadRequest("hub", "not a//valid id"))


def test_file_that_is_not_gguf(tmp_path):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"PK\x03\x04" + os.urandom(100))
    assert "is not a GGUF file" in load_error(LoadRequest("gguf", str(fake)))
    assert "No file at" in load_error(LoadRequest("gguf", str(tmp_path / "missing.gguf")))


def test_gguf_of_an_architecture_transformers_cannot_load(tmp_path, monkeypatch):
    import gguf

    monkeypatch.setenv("TRANSFORMER_EXPLORER_CACHE", str(tmp_path / "cache"))
    path = tmp_path / "odd.gguf"
    writer = gguf.GGUFWriter(str(path), arch="notatransformer")
    writer.add_block_count(1)
    writer.add_tensor("blk.0.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    message = load_error(LoadRequest("gguf", str(path)))
    assert "transformers cannot load the GGUF file odd.gguf" in message
    assert "notatransformer" in message


class _FakeHub(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/api/models/known/model" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_hub_probe_tells_missing_from_offline():
    server = http.server.HTTPServer(("127.0.0.1", 0), _FakeHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    try:
        assert _probe_hub("known/model", endpoint) == "ok"
        assert _probe_hub("unknown/model", endpoint) == "missing"
    finally:
        server.shutdown()
        server.server_close()
    assert _probe_hub("known/model", endpoint) == "offline"  # nothing listens there now


def _cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "explorer", *args], cwd=ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _offline_env(tmp_path: Path) -> dict:
    return {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": "http://127.0.0.1:9"}


def test_offline_hub_id_fails_fast_with_one_line(tmp_path):
    result = _cli("info", "openai-community/gpt2", env=_offline_env(tmp_path))
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not in the local Hugging Face cache" in lines[0]
    assert "Traceback" not in result.stderr


def test_offline_hub_probe_is_quick(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    assert "cannot be reached" in load_error(LoadRequest("hub", "someone/not-cached-model-xyz"))
    assert time.perf_counter() - started < 3.0


def test_model_in_local_hub_cache_loads_offline(tmp_path, tiny_dir):
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--tiny--gpt2"
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True)
    for f in tiny_dir("gpt2").iterdir():
        (snapshot / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    result = _cli("info", "tiny/gpt2", env=_offline_env(tmp_path))
    assert result.returncode == 0, result.stderr
    card = json.loads(result.stdout)
    assert card["name"] == "tiny/gpt2" and card["family"] == "decoder" and card["n_layers"] == 2
