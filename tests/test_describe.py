"""``mudi describe``: a stub OpenAI-compatible server on 127.0.0.1 (good replies, malformed JSON, a timeout, a
reply that drops an identifier), the strict reply checks, what is written into subject folders and what is
refused, the toy world's describer (exactly the ground truth) and a tiny random VLM for the local path."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import yaml

from mudi.adapters import registry
from mudi.adapters.describers import Describer, DescribeRequest, SubjectPhotos, TransformersDescriber
from mudi.cli import main as cli_main
from mudi.data.descriptions import DESCRIBE_HISTORY
from mudi.data.subjects import SUBJECT_FILE, load_subjects
from mudi.describing.config import DescribeConfig
from mudi.describing.describe import build_describer, describe_subjects
from mudi.describing.replies import check_caption, check_class, parse_reply, review_reply
from mudi.errors import MudiError
from mudi.sampling.layout_llm import InsecureEndpoint
from mudi.toyworld.describer import ToyworldDescriber
from mudi.toyworld.world import (
    DEMO_SUBJECTS,
    WHITE,
    caption_objects,
    place_objects,
    sample_background,
    write_subject_folder,
)

RED, BLUE = DEMO_SUBJECTS  # olis (red yellow square), hta (blue yellow square)
NUM_PHOTOS = 3


def _subjects(tmp_path: Path, **extra: dict) -> list[Path]:
    """The two toy subjects as native folders without a descriptive class; ``extra[name]`` adds yaml keys."""
    folders = []
    for k, s in enumerate(DEMO_SUBJECTS):
        folder = write_subject_folder(s, tmp_path / "subjects" / s.name, num_images=NUM_PHOTOS, seed=k)
        meta = {"name": s.name, "identifier": s.identifier, "class_noun": "square", **extra.get(s.name, {})}
        (folder / SUBJECT_FILE).write_text(yaml.safe_dump(meta, sort_keys=False))
        folders.append(folder)
    return folders


def _yaml(folder: Path) -> dict:
    return yaml.safe_load((folder / SUBJECT_FILE).read_text())


def _answer(classes: dict[str, str], captions: dict[str, str] | None = None) -> str:
    """A reply naming each identifier's class and captioning its photos ``00.png`` … in the authors' style."""
    subjects = {}
    for ident, cls in classes.items():
        scene = (captions or {}).get(ident, "A photo of a {} on a wooden table, soft window light.")
        subjects[ident] = {"descriptive_class": cls,
                           "captions": {f"{i:02d}.png": scene.format(f"{ident} {cls}") for i in range(NUM_PHOTOS)}}
    return json.dumps({"subjects": subjects})


GOOD = _answer({"olis": "crimson square", "hta": "navy square"})


def _completion(content: str) -> bytes:
    return json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()


@pytest.fixture
def stub_server():
    """An OpenAI-compatible ``/v1/chat/completions`` on 127.0.0.1 playing ``state["script"]`` in order: a reply
    text, or ``("sleep", seconds, text)`` (answer late: a timeout); records ``(headers, body)`` per request."""
    state: dict = {"script": [], "requests": []}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["requests"].append((dict(self.headers), body))
            step = state["script"].pop(0) if state["script"] else GOOD
            if isinstance(step, tuple):
                time.sleep(step[1])
                step = step[2]
            out = _completion(step)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (the timeout case)
                pass

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()
    server.server_close()


def _openai(folders, url, **kw) -> DescribeConfig:
    return DescribeConfig(subjects=[str(f) for f in folders], provider="openai", url=url, **kw)


def _prompt_text(body: dict) -> str:
    return "".join(p["text"] for p in body["messages"][0]["content"] if p["type"] == "text")


# ------------------------------------------------------------------------------------------ the endpoint
def test_good_reply_is_written_with_the_old_file_kept(stub_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MUDI_LLM_API_KEY", "sk-test")
    folders = _subjects(tmp_path)
    before = (folders[0] / SUBJECT_FILE).read_bytes()
    result = describe_subjects(_openai(folders, stub_server["url"]))
    assert result.attempts == 1 and not result.rejected and not result.errors
    meta = _yaml(folders[0])
    assert meta["descriptive_class"] == "crimson square" and meta["identifier"] == "olis"
    assert meta["captions"]["01.png"] == "A photo of a olis crimson square on a wooden table, soft window light."
    assert _yaml(folders[1])["descriptive_class"] == "navy square"
    assert (folders[0] / "subject.yaml.bak").read_bytes() == before
    row = json.loads((folders[0] / DESCRIBE_HISTORY).read_text().splitlines()[-1])
    assert row["before"] == {"descriptive_class": None, "captions": {}}
    assert row["written"]["descriptive_class"] == "crimson square" and row["note"]["model"] == "gpt-4o"
    assert row["note"]["config"]["url"] == stub_server["url"] and "sk-test" not in json.dumps(row)  # no key kept
    # one request shows every subject's photos together, with the key as a Bearer token (loopback http)
    (headers, body), = stub_server["requests"]
    assert headers["Authorization"] == "Bearer sk-test"
    images = [p for p in body["messages"][0]["content"] if p["type"] == "image_url"]
    assert len(images) == 2 * NUM_PHOTOS and images[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert '"olis"' in _prompt_text(body) and '"hta"' in _prompt_text(body)
    assert load_subjects([folders[0]])[0].phrase == "olis crimson square"  # the loader reads what was written
    # the same answer again changes nothing and adds no history
    again = describe_subjects(_openai(folders, stub_server["url"]))
    assert {i.status for i in again.items} == {"unchanged"}
    assert len((folders[0] / DESCRIBE_HISTORY).read_text().splitlines()) == 1


def test_malformed_json_is_asked_again_with_the_reason(stub_server, tmp_path):
    folders = _subjects(tmp_path)
    stub_server["script"] = ["Sure! Here it is: " + GOOD, "{'subjects': {}}", GOOD]
    result = describe_subjects(_openai(folders, stub_server["url"]))
    assert result.attempts == 3 and not result.rejected
    assert len(result.errors) == 2 and "not one JSON object" in result.errors[0]
    assert "rejected" in _prompt_text(stub_server["requests"][1][1])
    assert "not one JSON object" in _prompt_text(stub_server["requests"][1][1])
    assert _yaml(folders[1])["descriptive_class"] == "navy square"


def test_timeout_then_a_good_reply(stub_server, tmp_path):
    folders = _subjects(tmp_path)
    stub_server["script"] = [("sleep", 1.5, GOOD), GOOD]
    result = describe_subjects(_openai(folders, stub_server["url"], timeout_s=0.3))
    assert result.attempts == 2 and not result.rejected
    assert "failed" in result.errors[0] and "timed out" in result.errors[0]


def test_timeouts_only_reject_everything_and_write_nothing(stub_server, tmp_path):
    folders = _subjects(tmp_path)
    stub_server["script"] = [("sleep", 1.0, GOOD), ("sleep", 1.0, GOOD)]
    before = (folders[0] / SUBJECT_FILE).read_bytes()
    result = describe_subjects(_openai(folders, stub_server["url"], timeout_s=0.2, max_retries=1))
    assert result.attempts == 2 and len(result.rejected) == len(result.items) == 2 * (1 + NUM_PHOTOS)
    assert all("timed out" in i.note for i in result.rejected)
    assert (folders[0] / SUBJECT_FILE).read_bytes() == before and not (folders[0] / DESCRIBE_HISTORY).exists()


def test_a_reply_dropping_the_identifier_is_rejected_and_reported(stub_server, tmp_path, capsys):
    folders = _subjects(tmp_path)
    dropped = _answer({"olis": "crimson square", "hta": "navy square"},
                      {"hta": "A photo of a navy square on a wooden table."})  # "hta" left out
    stub_server["script"] = [dropped, dropped]
    rc = cli_main(["describe", *map(str, folders), "--url", stub_server["url"], "--max_retries", "1"])
    assert rc == 1
    out = capsys.readouterr().out
    assert "must name 'hta' exactly once" in out and "6 value(s) rejected" not in out
    assert f"{NUM_PHOTOS} value(s) rejected" in out
    assert "must name 'hta' exactly once" in _prompt_text(stub_server["requests"][1][1])  # the retry says why
    olis, hta = _yaml(folders[0]), _yaml(folders[1])
    assert olis["descriptive_class"] == "crimson square" and len(olis["captions"]) == NUM_PHOTOS
    assert hta["descriptive_class"] == "navy square" and "captions" not in hta  # only the class was accepted


def test_accepted_classes_stay_fixed_and_captions_fill_in_across_attempts(stub_server, tmp_path):
    folders = _subjects(tmp_path)
    first = json.loads(GOOD)
    first["subjects"]["hta"]["captions"]["02.png"] = "A photo of a navy square."  # one bad caption
    second = _answer({"olis": "scarlet square", "hta": "navy square"})  # a new class for olis: not taken
    stub_server["script"] = [json.dumps(first), second]
    result = describe_subjects(_openai(folders, stub_server["url"]))
    assert result.attempts == 2 and not result.rejected
    assert '"olis": "crimson square"' in _prompt_text(stub_server["requests"][1][1])  # "keep these classes"
    assert _yaml(folders[0])["descriptive_class"] == "crimson square"
    assert _yaml(folders[1])["captions"]["02.png"].startswith("A photo of a hta navy square")


def test_hand_written_values_are_kept_unless_overwrite(stub_server, tmp_path):
    hand = {"descriptive_class": "red yellow square", "captions": {"00.png": "A photo of olis red yellow square."}}
    folders = _subjects(tmp_path, red_yellow_square=hand)
    stub_server["script"] = [_answer({"olis": "red yellow square", "hta": "navy square"})]
    result = describe_subjects(_openai(folders, stub_server["url"]))
    # the describer was told to reuse the hand-written class; the hand-written caption was not replaced
    assert '"olis": "red yellow square"' in _prompt_text(stub_server["requests"][0][1])
    status = {(i.subject, i.field): i.status for i in result.items}
    assert status[("red_yellow_square", "descriptive_class")] == "kept"
    assert status[("red_yellow_square", "00.png")] == "kept" and status[("red_yellow_square", "01.png")] == "written"
    meta = _yaml(folders[0])
    assert meta["captions"]["00.png"] == hand["captions"]["00.png"]
    assert meta["captions"]["01.png"] == "A photo of a olis red yellow square on a wooden table, soft window light."
    # a later answer replaces what describe wrote, never the hand-written caption
    stub_server["script"] = [_answer({"olis": "red yellow square", "hta": "navy square"},
                                     {"olis": "A photo of a {} on a beach.", "hta": "A photo of a {} in snow."})]
    describe_subjects(_openai(folders, stub_server["url"]))
    meta = _yaml(folders[0])
    assert meta["captions"]["00.png"] == hand["captions"]["00.png"]
    assert meta["captions"]["01.png"] == "A photo of a olis red yellow square on a beach."
    assert _yaml(folders[1])["captions"]["00.png"] == "A photo of a hta navy square in snow."
    # --overwrite replaces hand-written values too
    stub_server["script"] = [GOOD]
    describe_subjects(_openai(folders, stub_server["url"], overwrite=True))
    meta = _yaml(folders[0])
    assert meta["descriptive_class"] == "crimson square" and meta["captions"]["00.png"].startswith("A photo of a olis "
                                                                                                  "crimson square")
    assert yaml.safe_load((folders[0] / "subject.yaml.bak").read_text())["descriptive_class"] == "red yellow square"


def test_dry_run_writes_nothing(stub_server, tmp_path):
    folders = _subjects(tmp_path)
    before = (folders[0] / SUBJECT_FILE).read_bytes()
    result = describe_subjects(_openai(folders, stub_server["url"], dry_run=True))
    assert {i.status for i in result.items} == {"proposed"}
    assert (folders[0] / SUBJECT_FILE).read_bytes() == before and not (folders[0] / "subject.yaml.bak").exists()


def test_the_key_never_travels_over_plain_http_to_another_machine(tmp_path, monkeypatch):
    folders = _subjects(tmp_path)
    monkeypatch.setenv("MY_VLM_KEY", "sk-secret")
    with pytest.raises(InsecureEndpoint, match="refusing to send MY_VLM_KEY"):
        build_describer(_openai(folders, "http://vlm.example.com/v1", api_key_env="MY_VLM_KEY"))
    assert build_describer(_openai(folders, "https://vlm.example.com/v1", api_key_env="MY_VLM_KEY")).api_key
    monkeypatch.delenv("MY_VLM_KEY")  # no key: plain http anywhere is the user's choice
    assert build_describer(_openai(folders, "http://vlm.example.com/v1", api_key_env="MY_VLM_KEY")).api_key is None
    with pytest.raises(MudiError, match="needs --url"):
        build_describer(_openai(folders, ""))
    with pytest.raises(MudiError, match="never the key itself"):
        _openai(folders, "", api_key_env="sk-abc def")


# ------------------------------------------------------------------------------------------ the checks
def test_parse_reply_is_strict():
    assert parse_reply(GOOD)["subjects"]["olis"]["descriptive_class"] == "crimson square"
    assert parse_reply("```json\n" + GOOD + "\n```")["subjects"]
    for bad in ("Here: " + GOOD, GOOD + " Hope this helps!", "```json\n" + GOOD + "\n``` thanks", "[1, 2]",
                '{"olis": {}}', "", '{"subjects": [1]}'):
        with pytest.raises(MudiError):
            parse_reply(bad)


@pytest.mark.parametrize("value, ok", [
    ("weimaraner", True), ("chow chow", True), ("white robot toy", True), ("jack-o'-lantern", True),
    ("Weimaraner", True), ("olis corgi", False), ("corgi (olis)", False), ("a very small brown fluffy dog", False),
    ("dog 2", False), ("", False), (None, False), (["dog"], False), ("x" * 41, False),
])
def test_check_class(value, ok):
    assert (check_class(value, ["olis", "hta"]) is None) is ok


@pytest.mark.parametrize("caption, ok", [
    ("A photo of a olis corgi on a sofa.", True),
    ("A photo of a Olis Corgi on a sofa.", True),
    ("A photo of a corgi on a sofa.", False),  # identifier dropped
    ("A photo of a olis dog on a sofa.", False),  # not the descriptive class
    ("A photo of a olis corgi next to another olis corgi.", False),  # twice
    ("A photo of a olis corgi and a hta chow chow.", False),  # another subject
    ("A photo of a olis corgi\non a sofa.", False), ("x" * 990 + " olis corgi", False), (None, False),
])
def test_check_caption(caption, ok):
    assert (check_caption(caption, "olis", "corgi", ["olis", "hta"]) is None) is ok


def _photos() -> list[SubjectPhotos]:
    img = np.zeros((32, 32, 3), np.uint8)
    return [SubjectPhotos(i, "dog", ["a.jpg"], [img]) for i in ("olis", "hta")]


def test_review_rejects_classes_that_do_not_tell_subjects_apart_and_unknown_photos():
    reply = {"subjects": {"olis": {"descriptive_class": "corgi", "captions": {"a.jpg": "A photo of a olis corgi."}},
                          "hta": {"descriptive_class": "Corgi", "captions": {"a.jpg": "A photo of a hta corgi.",
                                                                              "../b.jpg": "A photo of a hta corgi."}}}}
    review = review_reply(reply, _photos())
    assert not review.classes and "does not tell olis from hta" in review.reasons[("olis", "descriptive_class")]
    assert "not a photo of 'hta'" in review.reasons[("hta", "../b.jpg")]
    kept = review_reply(reply, _photos(), keep={"olis": "corgi"})  # a kept class wins, the other is refused
    assert kept.classes == {"olis": "corgi"} and kept.captions["olis"] == {"a.jpg": "A photo of a olis corgi."}
    missing = review_reply({"subjects": {"olis": reply["subjects"]["olis"]}}, _photos())
    assert missing.reasons[("hta", "descriptive_class")] == "no answer for subject 'hta'"


def test_benchmark_folders_are_refused(tmp_path):
    pair = tmp_path / "dog_and_cat"
    pair.mkdir()
    from PIL import Image

    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(pair / "a00.jpg")
    Image.fromarray(np.full((32, 32, 3), 100, np.uint8)).save(pair / "b00.jpg")
    (pair / "metadata.jsonl").write_text(json.dumps({"id": {"a": "olis dog", "b": "hta cat"}}) + "\n")
    with pytest.raises(MudiError, match="convert it first"):
        describe_subjects(DescribeConfig(subjects=[str(pair)], provider="toyworld"))


def test_unknown_provider_suggests_the_close_name():
    with pytest.raises(MudiError, match="toyworld"):
        DescribeConfig(provider="toyword")
    assert {"openai", "transformers", "toyworld"} <= set(registry.names("describer"))


# ------------------------------------------------------------------------------------------ the toy world
def _ground_truth_captions(subject, seed: int) -> dict[str, str]:
    """The world's own caption of each rendered photo (``render_subject``'s draws, replayed)."""
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(NUM_PHOTOS):
        place_objects(rng, [(subject.shape, subject.top, subject.bottom)], size_range=(11, 16))
        white = sample_background(rng) == WHITE
        out[f"{i:02d}.png"] = caption_objects([f"{subject.identifier} {subject.descriptive_class}"], white)
    return out


def test_toy_describer_answers_exactly_the_ground_truth(tmp_path, capsys):
    folders = _subjects(tmp_path)
    assert cli_main(["describe", *map(str, folders), "--provider", "toyworld"]) == 0
    assert "8 values after 1 attempt(s): written 8" in capsys.readouterr().out
    for k, (subject, folder) in enumerate(zip(DEMO_SUBJECTS, folders)):
        meta = _yaml(folder)
        assert meta["descriptive_class"] == subject.descriptive_class  # "red yellow square", "blue yellow square"
        assert meta["captions"] == _ground_truth_captions(subject, seed=k)
    assert isinstance(ToyworldDescriber(), Describer)


# ------------------------------------------------------------------------------------------ a local VLM
def test_tiny_vlm_plumbing_and_offline_loading(tmp_path):
    tiny = TransformersDescriber.build_tiny(max_new_tokens=8)
    assert isinstance(tiny, Describer)
    request = DescribeRequest(_photos())
    reply = tiny.describe(request)
    assert isinstance(reply, str) and reply == tiny.describe(request)  # greedy: deterministic
    assert "Answer with one JSON object" not in reply  # only the new tokens come back
    tiny.model.save_pretrained(tmp_path / "vlm")
    tiny.processor.save_pretrained(tmp_path / "vlm")
    loaded = TransformersDescriber.from_pretrained(str(tmp_path / "vlm"), max_new_tokens=8)
    assert loaded.describe(request) == reply
    with pytest.raises(MudiError, match="cannot load the vision-language checkpoint") as e:
        TransformersDescriber.from_pretrained(str(tmp_path / "absent"))
    assert "\n" not in str(e.value)


def test_tiny_vlm_noise_is_rejected_not_written(tmp_path):
    folders = _subjects(tmp_path)
    before = (folders[0] / SUBJECT_FILE).read_bytes()
    result = describe_subjects(DescribeConfig(subjects=[str(f) for f in folders], provider="tiny-transformers",
                                              max_retries=0, max_new_tokens=16))
    assert result.attempts == 1 and len(result.rejected) == len(result.items)
    assert "not one JSON object" in result.rejected[0].note
    assert (folders[0] / SUBJECT_FILE).read_bytes() == before


# ------------------------------------------------------------------------------------------ the UI's review
def test_ui_review_proposes_without_writing_then_writes_the_edited_rows(tmp_path):
    from mudi.ui import describe as review

    folders = _subjects(tmp_path, blue_yellow_square={"descriptive_class": "blue square"})  # hand-written
    before = [(f / SUBJECT_FILE).read_bytes() for f in folders]
    rows, report = review.propose(folders, "toyworld")
    assert [(f / SUBJECT_FILE).read_bytes() for f in folders] == before and "proposed" in report
    by_key = {(r[0], r[1]): r for r in rows}
    assert by_key[("red_yellow_square", "descriptive_class")][2:] == ["red yellow square", "proposed"]
    assert by_key[("blue_yellow_square", "descriptive_class")][2:] == ["blue square", "kept"]
    assert by_key[("blue_yellow_square", "00.png")][2].startswith("a photo of a hta blue square")
    # an edit that drops the identifier is refused, and nothing is written
    bad = [list(r) for r in rows]
    next(r for r in bad if r[:2] == ["red_yellow_square", "01.png"])[2] = "a photo of a red yellow square."
    with pytest.raises(MudiError, match="red_yellow_square 01.png: the caption must name 'olis' exactly once"):
        review.accept(folders, bad)
    assert [(f / SUBJECT_FILE).read_bytes() for f in folders] == before
    # an edited caption and an emptied one: the first written, the second skipped; kept rows never written
    edited = [list(r) for r in rows]
    next(r for r in edited if r[:2] == ["red_yellow_square", "01.png"])[2] = "A photo of a olis red yellow square."
    next(r for r in edited if r[:2] == ["red_yellow_square", "02.png"])[2] = ""
    assert review.accept(folders, edited).splitlines()[0] == "red_yellow_square: written 3"
    meta = _yaml(folders[0])
    assert meta["descriptive_class"] == "red yellow square" and set(meta["captions"]) == {"00.png", "01.png"}
    assert meta["captions"]["01.png"] == "A photo of a olis red yellow square."
    assert _yaml(folders[1])["descriptive_class"] == "blue square"
    with pytest.raises(MudiError, match="no subjects ticked"):
        review.propose([], "toyworld")


def test_the_page_has_the_describe_review(tmp_path):
    pytest.importorskip("gradio")
    from mudi.ui.app import build_app
    from mudi.ui.config import UiConfig
    from mudi.ui.state import Workspace

    ws = Workspace.open(tmp_path / "ws")
    demo = build_app(UiConfig(workspace=str(ws.root), backbone="tiny-sd", backend="grabcut", device="cpu"), ws)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"describe-provider", "describe-ask", "describe-table", "describe-write"} <= ids
