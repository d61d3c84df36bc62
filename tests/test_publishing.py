"""Issue 28 (publishing): the model card of a trained LoRA, and `mudi push` against a local stub of the Hub's
HTTP API (create repo, preupload, commit) — exactly the LoRA folder's files go up, never the training photos
unless asked, and never a local path as `base_model`."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mudi.cli import main
from mudi.errors import MudiError
from mudi.samples import SAMPLES_DIR
from mudi.training.config import TrainConfig
from mudi.training.loop import train

SUBJECTS = [str(SAMPLES_DIR / "dog6"), str(SAMPLES_DIR / "cat2")]


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lora") / "run"
    train(TrainConfig(subjects=SUBJECTS, backbone="tiny-sd", output_dir=str(out), max_train_steps=2, rank=4,
                      report_to="none", progress=False, device="cpu", checkpointing_steps=1, validation_steps=2,
                      validation_prompts=["A photo of [V1] and [V2]."], num_validation_inference_steps=2,
                      resolution=64))
    return out


class Hub:
    """A stub of the Hub's HTTP API: what `create_repo` and `create_commit` (regular uploads) call."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.files: dict[str, dict[str, bytes]] = {}
        self.auth: list[str | None] = []
        self.cards: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _reply(self, code: int, obj: dict) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.auth.append(self.headers.get("Authorization"))
                parts = self.path.split("?")[0].strip("/").split("/")
                if parts[:3] == ["api", "repos", "create"]:
                    req = json.loads(body)
                    repo = f"{req.get('organization') or req.get('namespace') or 'me'}/{req['name']}" \
                        if "/" not in req["name"] else req["name"]
                    hub.repos[repo] = req
                    hub.files.setdefault(repo, {})
                    return self._reply(200, {"url": f"{hub.url}/{repo}", "name": repo, "id": repo})
                if parts[:2] == ["api", "validate-yaml"]:  # the Hub checks a model card's metadata
                    hub.cards.append(json.loads(body)["content"])
                    return self._reply(200, {"errors": [], "warnings": []})
                if parts[:2] == ["api", "models"] and parts[4] == "preupload":
                    files = json.loads(body)["files"]
                    return self._reply(200, {"files": [{"path": f["path"], "uploadMode": "regular",
                                                        "shouldIgnore": False, "oid": None} for f in files]})
                if parts[:2] == ["api", "models"] and parts[4] == "commit":
                    repo = f"{parts[2]}/{parts[3]}"
                    for line in body.decode().splitlines():
                        item = json.loads(line)
                        if item.get("key") == "file":
                            v = item["value"]
                            hub.files.setdefault(repo, {})[v["path"]] = base64.b64decode(v["content"])
                    return self._reply(200, {"commitUrl": f"{hub.url}/{repo}/commit/" + "a" * 40, "commitOid": "a" * 40,
                                             "success": True})
                return self._reply(404, {"error": f"stub: no route {self.path}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture()
def hub(monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the suite runs offline; this stub is local
    monkeypatch.setenv("HF_TOKEN", "hf_stubtoken")
    h = Hub()
    yield h
    h.close()


def test_the_card_names_the_base_model_licence_images_and_recipe(lora_dir):
    from huggingface_hub import ModelCard

    card = ModelCard.load(lora_dir / "README.md")
    images = sorted(p.relative_to(lora_dir).as_posix() for p in (lora_dir / "validation").glob("*.png"))
    assert images and all(f"]({img})" in card.text for img in images)
    assert [w["output"]["url"] for w in card.data.widget] == images
    assert card.data.instance_prompt and "olis" in card.data.instance_prompt
    assert "γ = 1" in card.text and "LoraLoader" in card.text
    assert card.data.base_model is None  # a tiny random model has no hub id: nothing local is written instead
    assert str(lora_dir) not in card.content


def test_base_model_is_a_hub_id_never_a_local_path(tmp_path):
    from mudi.adapters.registry import load_backbone
    from mudi.training.outputs import base_model_id, model_card

    bb = load_backbone("tiny-sd")
    cfg = TrainConfig(subjects=SUBJECTS, backbone="sdxl", output_dir=str(tmp_path))
    assert base_model_id(cfg, type("B", (), {"default_checkpoint": "stabilityai/stable-diffusion-xl-base-1.0"})) \
        == "stabilityai/stable-diffusion-xl-base-1.0"
    cached = tmp_path / "hub" / "models--black-forest-labs--FLUX.1-dev" / "snapshots" / "0123abc"
    cached.mkdir(parents=True)
    local = tmp_path / "my-model"
    local.mkdir()
    for value, want in ((str(cached), "black-forest-labs/FLUX.1-dev"), (str(local), None),
                        ("stabilityai/stable-diffusion-xl-base-1.0", "stabilityai/stable-diffusion-xl-base-1.0")):
        cfg = TrainConfig(subjects=SUBJECTS, backbone="sdxl", output_dir=str(tmp_path), pretrained_model_name_or_path=value)
        assert base_model_id(cfg, bb) == want
    from mudi.data.subjects import load_subjects

    cfg = TrainConfig(subjects=SUBJECTS, backbone="flux", output_dir=str(tmp_path), pretrained_model_name_or_path=str(cached))
    text = model_card(cfg, bb, load_subjects(SUBJECTS), 10)
    assert "license: other" in text and "flux-1-dev-non-commercial-license" in text and str(tmp_path) not in text


def test_push_sends_exactly_the_lora_folder(lora_dir, hub):
    assert main(["push", str(lora_dir), "--repo_id", "me/olis-ult", "--endpoint", hub.url]) == 0
    sent = set(hub.files["me/olis-ult"])
    expected = {"pytorch_lora_weights.safetensors", "README.md", "mudi_subjects.json", "train_config.yaml",
                *(p.relative_to(lora_dir).as_posix() for p in (lora_dir / "validation").glob("*.png"))}
    assert sent == expected  # no checkpoints, logs, metrics or photos
    assert hub.files["me/olis-ult"]["pytorch_lora_weights.safetensors"] == \
        (lora_dir / "pytorch_lora_weights.safetensors").read_bytes()
    assert "Bearer hf_stubtoken" in hub.auth
    assert main(["push", str(lora_dir), "--repo_id", "me/with-photos", "--endpoint", hub.url,
                 "--include_photos"]) == 0
    photos = {k for k in hub.files["me/with-photos"] if k.startswith("subjects/")}
    assert "subjects/dog6/00.jpg" in photos and "subjects/cat2/masks/00.png" in photos
    assert "subjects/dog6/subject.yaml" in photos


def test_push_refuses_plain_http_hosts_and_bad_input(lora_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    assert main(["push", str(lora_dir), "--repo_id", "me/x", "--endpoint", "http://hub.example"]) == 2
    assert main(["push", str(tmp_path), "--repo_id", "me/x"]) == 2  # no LoRA there
    with pytest.raises(MudiError, match="NAMESPACE/NAME"):
        from mudi.publishing import PushConfig

        PushConfig(lora=[str(lora_dir)], repo_id="../x")
