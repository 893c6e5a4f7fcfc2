"""Playing the shopper: HumanUser, PlaySession, the terminal, the HTTP API, replay."""

from __future__ import annotations

import http.client
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fiq_gym.users.human import MAX_CAPTION_CHARS, CaptionUnavailableError, HumanUser, clean_caption

# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def agent_checkpoint(small_agent_checkpoint):
    return small_agent_checkpoint


@pytest.fixture(scope="module")
def play_agent(agent_checkpoint):
    from fiq_gym.play.agent import load_play_agent

    return load_play_agent(agent_checkpoint)


def _play_to_end(session, captions=("is darker", "has longer sleeves", "is red", "is striped")):
    state = session.new_dialog()
    for caption in captions:
        if state["status"] != "awaiting_feedback":
            break
        state = session.submit(caption)
    return state


# --- HumanUser ---------------------------------------------------------------------------------


def test_clean_caption_normalises_and_rejects():
    assert clean_caption("  is   darker\nand longer ") == "is darker and longer"
    for bad, match in (("   ", "empty"), (3, "must be text"), ("x" * (MAX_CAPTION_CHARS + 1), "at most")):
        with pytest.raises(ValueError, match=match):
            clean_caption(bad)
    with pytest.raises(ValueError, match="control"):
        clean_caption("is\x00red")


def test_human_user_in_the_env_unknown_words_become_unk(small_catalog):
    from fiq_gym.envs import FashionIQEnv

    asked = []

    def respond(target_row: int, shown_row: int) -> str:
        asked.append((target_row, shown_row))
        return "is darker and maroon"

    user = HumanUser(small_catalog, respond=respond)
    assert user.unknown_words("is darker and maroon, maroon!") == ["maroon", "!"]
    env = FashionIQEnv(catalog=small_catalog, user=user, max_turns=2)
    obs, info = env.reset(seed=0, options={"target": 3, "shown": 5})
    assert asked == [(3, 5)] and info["caption_text"] == "is darker and maroon"
    tokenizer = env.tokenizer
    ids = obs["caption"][: int(obs["caption_length"][0])].tolist()
    assert ids == tokenizer.encode("is darker and maroon")
    assert ids[-1] == tokenizer.unk_id and tokenizer.unk_id not in ids[:-1]
    # A queued answer wins over the callback and is used once.
    user.answer(3, 7, "is lighter")
    _, _, _, _, info = env.step(7)
    assert info["caption_text"] == "is lighter" and len(asked) == 1


def test_human_user_without_answer_or_callback_raises(small_catalog):
    user = HumanUser(small_catalog)
    with pytest.raises(CaptionUnavailableError, match=r"user.answer\(target_row, shown_row, text\)"):
        user.describe(np.array([1]), np.array([2]), np.random.default_rng(0))
    # The target itself needs nobody: the dialog is over.
    assert user.describe(np.array([4]), np.array([4]), np.random.default_rng(0)).texts == [""]


# --- PlaySession -------------------------------------------------------------------------------


def test_human_session_plays_a_dialog_through_the_env(play_agent, tmp_path):
    from fiq_gym.play.record import load_dialogs
    from fiq_gym.play.session import PlaySession, SessionStateError

    save = tmp_path / "dialogs.json"
    session = PlaySession(play_agent, seed=3, save_path=str(save))
    state = session.new_dialog()
    assert state["status"] == "awaiting_feedback" and state["turn"] == 0
    target = state["target"]["index"]
    with pytest.raises(ValueError, match="empty"):
        session.submit("  ")
    state = session.submit("is darker and <b>maroon</b>")
    assert state["turn"] == 1 and state["history"][0]["caption"] == "is darker and <b>maroon</b>"
    assert "maroon" in state["history"][0]["unknown_words"]
    shown_so_far = [state["history"][0]["shown_index"], state["shown"]["index"]]
    assert shown_so_far[0] != shown_so_far[1]  # scores mode never shows an item twice
    while state["status"] == "awaiting_feedback":
        state = session.submit("has longer sleeves")
    assert state["status"] in ("found", "out_of_turns")
    turns = state["history"]
    assert [t["turn"] for t in turns] == list(range(len(turns)))
    assert turns[-1]["caption"] is None  # nobody is asked about the last garment
    if state["status"] == "out_of_turns":
        assert len(turns) == play_agent.max_turns + 1
    with pytest.raises(SessionStateError, match="over"):
        session.submit("is red")
    # The finished dialog was saved as it ended, and loads back.
    (dialog,) = load_dialogs(save)
    assert dialog.finished and dialog.target_index == target and dialog.mode == "human"
    assert [t.rank for t in dialog.turns] == [t["rank"] for t in turns]
    assert dialog.catalog["num_items"] == 300 and dialog.agent["checkpoint"].endswith("checkpoint")
    assert dialog.captioned_pairs()[0] == (dialog.target_row, dialog.turns[0].shown_row, turns[0]["caption"])
    session.close()


def test_session_targets_by_id_and_index_and_keeps_abandoned_dialogs(play_agent, tmp_path):
    from fiq_gym.play.session import PlaySession

    session = PlaySession(play_agent, seed=0)
    assert session.new_dialog("syn-0000042")["target"]["index"] == 42
    assert session.new_dialog(17)["target"]["id"] == "syn-0000017"
    assert session.new_dialog("17")["target"]["index"] == 17
    for bad in ("no-such-id", 300, -1):
        with pytest.raises(ValueError, match="no item|out of range"):
            session.new_dialog(bad)
    assert session.dialogs() == []  # dialogs without feedback are not kept
    session.submit("is blue")
    session.new_dialog()
    (abandoned,) = session.dialogs()
    assert not abandoned.finished and abandoned.turns[0].caption == "is blue"
    path = session.save(str(tmp_path / "d.json"))
    session.save(path)  # saving twice does not duplicate
    from fiq_gym.play.record import load_dialogs

    assert len(load_dialogs(path)) == 1
    session.close()


def test_watch_session_the_simulated_shopper_answers(play_agent):
    from fiq_gym.play.session import PlaySession, SessionStateError

    session = PlaySession(play_agent, mode="watch", seed=1)
    state = session.new_dialog()
    assert state["status"] == "ready" and state["history"][0]["caption"]
    with pytest.raises(SessionStateError, match="watch"):
        session.submit("is red")
    while state["status"] == "ready":
        state = session.advance()
    assert state["status"] in ("found", "out_of_turns")
    assert all(t["caption"] for t in state["history"][:-1])
    session.close()


def test_dialog_file_validation(tmp_path):
    from fiq_gym.play.record import load_dialogs

    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_dialogs(bad)
    bad.write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a fiq-gym dialog file"):
        load_dialogs(bad)
    bad.write_text(json.dumps({"format": "fiq-gym-dialogs", "version": 1, "dialogs": [{"id": "x"}]}))
    with pytest.raises(ValueError, match="missing field 'mode'"):
        load_dialogs(bad)
    with pytest.raises(FileNotFoundError, match="fiq-gym play --save"):
        load_dialogs(tmp_path / "missing.json")


# --- the shipped default agent -----------------------------------------------------------------


def test_default_agent_fails_loudly_when_the_catalog_generator_changes(monkeypatch):
    from fiq_gym.catalog import synthetic
    from fiq_gym.play.agent import RETRAIN_DEFAULT_COMMAND, load_play_agent

    monkeypatch.setattr(synthetic, "GENERATOR_VERSION", synthetic.GENERATOR_VERSION + 1)
    with pytest.raises(ValueError, match="generator version") as excinfo:
        load_play_agent(None)
    assert RETRAIN_DEFAULT_COMMAND in str(excinfo.value)


def test_default_agent_is_small_and_only_for_the_default_catalog(small_catalog_path):
    from fiq_gym.play.agent import DEFAULT_AGENT_DIR, load_play_agent

    size = sum(f.stat().st_size for f in DEFAULT_AGENT_DIR.iterdir())
    assert size < 5e6
    with pytest.raises(ValueError, match="only plays on the default catalog"):
        load_play_agent(None, catalog=str(small_catalog_path))


def test_default_agent_of_an_earlier_env_version_fails_loudly(monkeypatch, tmp_path):
    import fiq_gym.play.agent as agent_module

    shipped = tmp_path / "default_agent"
    shutil.copytree(agent_module.DEFAULT_AGENT_DIR, shipped)
    config = json.loads((shipped / "config.json").read_text())
    config["args"]["env_id"] = "fiq_gym/FashionIQ-v1"
    (shipped / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(agent_module, "DEFAULT_AGENT_DIR", shipped)
    with pytest.raises(
        ValueError, match="trained on fiq_gym/FashionIQ-v1, an environment version"
    ) as excinfo:
        agent_module.load_play_agent(None)
    assert agent_module.RETRAIN_DEFAULT_COMMAND in str(excinfo.value)


def test_only_a_default_catalog_v2_checkpoint_becomes_the_default_agent(small_agent_checkpoint, tmp_path):
    from fiq_gym.play.agent import export_default_agent

    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(small_agent_checkpoint, checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    trained = {k: v for k, v in config["args"].items() if k not in ("catalog", "env_id")}
    for args in (
        {"catalog": None, "env_id": "fiq_gym/FashionIQ-v1"},
        {"catalog": None},  # no env id: not trained in a default-catalog env
        {"catalog": "elsewhere", "env_id": "fiq_gym/FashionIQ-v3"},
    ):
        (checkpoint / "config.json").write_text(json.dumps({**config, "args": {**trained, **args}}))
        with pytest.raises(
            ValueError, match="was not trained on the default catalog with fiq_gym/FashionIQ-v3"
        ):
            export_default_agent(checkpoint, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_default_agent_fails_loudly_when_the_default_catalog_differs(monkeypatch):
    """Builds the default catalog (10,000 items) in the test cache, then fakes a newer feature
    network in the shipped record."""
    import fiq_gym.play.agent as agent_module

    play = agent_module.load_play_agent(None)
    assert play.name == "supervised (shipped default)" and play.catalog is not None
    real = agent_module.default_catalog_record

    def shifted(catalog):
        return {**real(catalog), "features_weights_sha256": "0" * 64}

    monkeypatch.setattr(agent_module, "default_catalog_record", shifted)
    with pytest.raises(ValueError, match="features_weights_sha256") as excinfo:
        agent_module.load_play_agent(None)
    assert agent_module.RETRAIN_DEFAULT_COMMAND in str(excinfo.value)


@pytest.mark.slow
def test_shipped_checkpoints_take_the_default_catalog_as_built_on_another_cpu():
    """The shipped default agent and first stage were trained on an AMD EPYC's build of the
    default catalog; on an Intel Xeon its features differ in the last bits (by 6e-5 at most,
    about 1e-6 of their RMS), which used to refuse the catalog. Simulated here by nudging every
    feature by up to 2e-6 of its value: both still load; features from elsewhere do not."""
    from fiq_gym.agents.retriever import check_catalog
    from fiq_gym.default_catalog import load_default_catalog
    from fiq_gym.play.agent import DEFAULT_AGENT_DIR
    from fiq_gym.shortlist import DEFAULT_FIRST_STAGE

    catalog = load_default_catalog(progress=False)
    rng = np.random.default_rng(0)
    features = np.asarray(catalog.features)
    nudged = (features * (1 + 2e-6 * rng.uniform(-1, 1, features.shape))).astype(np.float32)
    assert not np.array_equal(nudged, features)
    elsewhere = catalog.with_arrays(features=nudged)
    shuffled = catalog.with_arrays(features=np.ascontiguousarray(features[rng.permutation(len(features))]))
    for shipped in (DEFAULT_AGENT_DIR, DEFAULT_FIRST_STAGE):
        meta = json.loads((shipped / "config.json").read_text())
        assert "features_sketch" in meta["catalog"]
        check_catalog(meta, catalog, shipped)
        check_catalog(meta, elsewhere, shipped)
        with pytest.raises(ValueError, match="other image features"):
            check_catalog(meta, shuffled, shipped)


# --- terminal ----------------------------------------------------------------------------------


def test_terminal_driven_through_its_input_stream(play_agent, tmp_path):
    from fiq_gym.play.record import load_dialogs
    from fiq_gym.play.session import PlaySession
    from fiq_gym.play.terminal import run_terminal

    lines = [
        ":help",
        "",  # asks again
        "is darker and maroon",
        ":target",
        ":bogus",
        "x" * (MAX_CAPTION_CHARS + 5),  # rejected, the dialog goes on
        "has longer sleeves",
        "is red",
        "is striped",  # the fourth answer: the dialog is over after the next garment
        "is blue",  # told to press Enter for a new dialog
        ":new syn-0000009",
        "is lighter",
        ":quit",
    ]
    save = tmp_path / "dialogs.json"
    session = PlaySession(play_agent, seed=5, save_path=str(save))
    out = io.StringIO()
    dialogs = run_terminal(
        session,
        input=io.StringIO("\n".join(lines) + "\n"),
        output=out,
        image_dir=tmp_path / "img",
        inline="auto",
        target="syn-0000021",
    )
    text = out.getvalue()
    assert "Your target: syn-0000021" in text and "commands: :quit" in text
    assert "type how your target differs" in text
    assert "words the agent does not know, read as <unk>: maroon" in text
    assert "unknown command :bogus" in text and "at most 300 are accepted" in text
    assert "Turn 1 of 4: the agent shows" in text and "target rank:" in text
    assert "Found it" in text or "Not found in 4 turns" in text
    assert "this dialog is over; press Enter" in text
    assert "=== dialog 2 ===" in text and "Your target: syn-0000009" in text
    assert "\033" not in text  # a StringIO is no terminal: no inline images
    pictures = sorted(p.name for p in (tmp_path / "img").iterdir())
    assert "dialog1-turn0.png" in pictures and "dialog2-turn1.png" in pictures
    assert (tmp_path / "img" / "dialog1-turn0.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = load_dialogs(save)
    assert [d.target_id for d in saved] == ["syn-0000021", "syn-0000009"]
    assert saved[0].finished
    assert saved[0].turns[0].caption == "is darker and maroon" and saved[1].turns[0].caption == "is lighter"
    assert len(dialogs) == 2
    session.close()


def test_terminal_watch_mode_and_end_of_input(play_agent, tmp_path):
    from fiq_gym.play.session import PlaySession
    from fiq_gym.play.terminal import run_terminal

    session = PlaySession(play_agent, mode="watch", seed=2)
    out = io.StringIO()
    run_terminal(session, input=io.StringIO("\n\n"), output=out, image_dir=tmp_path)  # EOF after 2 turns
    text = out.getvalue()
    assert "watching the simulated shopper" in text and text.count('shopper: "') >= 2
    assert "Turn 2 of 4" in text
    session.close()


def test_inline_images_only_where_the_terminal_advertises_them():
    from fiq_gym.play.terminal import _inline_escape, inline_protocol

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert inline_protocol("auto", Tty(), {"TERM": "xterm-256color"}) is None
    assert inline_protocol("auto", Tty(), {"KITTY_WINDOW_ID": "1"}) == "kitty"
    assert inline_protocol("auto", Tty(), {"TERM_PROGRAM": "iTerm.app"}) == "iterm2"
    assert inline_protocol("auto", io.StringIO(), {"KITTY_WINDOW_ID": "1"}) is None
    assert inline_protocol("off", Tty(), {"KITTY_WINDOW_ID": "1"}) is None
    assert inline_protocol("iterm2", io.StringIO(), {}) == "iterm2"
    with pytest.raises(ValueError, match="inline must be one of"):
        inline_protocol("sixel", Tty(), {})
    assert _inline_escape(b"x" * 5000, "kitty").count("\033_G") == 2
    assert _inline_escape(b"png", "iterm2").startswith("\033]1337;File=inline=1;size=3")


def test_cli_play_reads_stdin(agent_checkpoint, tmp_path, monkeypatch, capsys):
    from fiq_gym.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("is darker\n:save\n:q\n"))
    save = tmp_path / "d.json"
    args = ["play", "--agent", str(agent_checkpoint), "--seed", "0", "--save", str(save)]
    assert main([*args, "--image-dir", str(tmp_path / "img"), "--target", "12"]) == 0
    out = capsys.readouterr().out
    assert "Your target: syn-0000012" in out and f"saved to {save}" in out
    assert json.loads(save.read_text())["dialogs"][0]["turns"][0]["caption"] == "is darker"


# --- HTTP API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(play_agent, tmp_path_factory):
    from fiq_gym.play.server import PlayServer

    save = tmp_path_factory.mktemp("served") / "dialogs.json"
    with PlayServer(play_agent, port=0, seed=0, save_path=str(save)) as s:
        yield s


def _request(server, method, path, body=None, headers=None, raw=None):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    h = {"Content-Type": "application/json"} if (body is not None or raw is not None) else {}
    h.update(headers or {})
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    conn.request(method, path, body=data, headers=h)
    response = conn.getresponse()
    payload = response.read()
    conn.close()
    kind = response.getheader("Content-Type", "")
    return (
        response.status,
        (json.loads(payload) if kind.startswith("application/json") else payload),
        response,
    )


def test_api_plays_a_dialog_and_stores_text_verbatim(server):
    status, page, response = _request(server, "GET", "/")
    assert status == 200 and b"<title>fiq-gym" in page
    assert "script-src 'self'" in response.getheader("Content-Security-Policy")
    assert _request(server, "GET", "/static/app.js")[0] == 200
    status, state, _ = _request(server, "POST", "/api/sessions", {"mode": "human", "target": "syn-0000033"})
    assert status == 201 and state["target"]["id"] == "syn-0000033" and state["status"] == "awaiting_feedback"
    sid = state["session"]
    evil = '<script>alert("x")</script> is <b>darker</b> & "longer"'
    status, state, _ = _request(server, "POST", f"/api/sessions/{sid}/feedback", {"caption": evil})
    assert status == 200 and state["turn"] == 1 and state["history"][0]["caption"] == evil
    status, again, _ = _request(server, "GET", f"/api/sessions/{sid}")  # a reloaded page resumes
    assert status == 200 and again["history"] == state["history"]
    status, document, response = _request(server, "GET", f"/api/sessions/{sid}/dialogs")
    assert status == 200 and "attachment" in response.getheader("Content-Disposition")
    assert document["dialogs"][0]["turns"][0]["caption"] == evil
    status, png, response = _request(server, "GET", f"/api/images/{state['shown']['row']}.png")
    assert status == 200 and response.getheader("Content-Type") == "image/png" and png[:4] == b"\x89PNG"
    status, state, _ = _request(server, "POST", f"/api/sessions/{sid}/reset", {"target": 7})
    assert status == 200 and state["target"]["index"] == 7 and state["turn"] == 0


def test_api_rejects_bad_requests_with_clear_errors(server):
    from fiq_gym.play.server import MAX_BODY_BYTES

    _, state, _ = _request(server, "POST", "/api/sessions", {"mode": "human"})
    feedback = f"/api/sessions/{state['session']}/feedback"
    status, body, _ = _request(server, "POST", feedback, raw=b"x" * (MAX_BODY_BYTES + 1))
    assert status == 413 and "too large" in body["error"]
    status, body, _ = _request(server, "POST", feedback, raw=b'{"caption": "is red"')
    assert status == 400 and "malformed JSON" in body["error"]
    status, body, _ = _request(server, "POST", feedback, raw=b"[" * 8000 + b"]" * 8000)
    assert status == 400 and "malformed JSON" in body["error"]
    status, body, _ = _request(server, "POST", feedback, raw=b"[1, 2]")
    assert status == 400 and "JSON object" in body["error"]
    status, body, _ = _request(server, "POST", feedback, {"caption": 5})
    assert status == 400 and "'caption' must be str" in body["error"]
    status, body, _ = _request(server, "POST", feedback, {"caption": "is red", "extra": 1})
    assert status == 400 and "unknown field" in body["error"]
    status, body, _ = _request(server, "POST", feedback, {"caption": "   "})
    assert status == 400 and "empty" in body["error"]
    status, body, _ = _request(
        server, "POST", feedback, raw=b"caption=red", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    status, body, _ = _request(server, "POST", "/api/sessions/nope/feedback", {"caption": "is red"})
    assert status == 404 and "unknown session" in body["error"]
    status, body, _ = _request(server, "POST", "/api/sessions", {"mode": "robot"})
    assert status == 400 and "mode" in body["error"]
    status, body, _ = _request(server, "POST", "/api/sessions", {"target": "no-such-id"})
    assert status == 400 and "no item" in body["error"]
    status, body, _ = _request(server, "GET", "/api/images/999999.png")
    assert status == 404
    status, body, response = _request(server, "GET", "/api/sessions")
    assert status == 405 and response.getheader("Allow") == "POST"
    status, body, _ = _request(server, "GET", "/etc/passwd")
    assert status == 404
    status, body, _ = _request(server, "GET", "/", headers={"Host": "evil.example:80"})
    assert status == 403 and "Host" in body["error"]
    _, watch, _ = _request(server, "POST", "/api/sessions", {"mode": "watch"})
    status, body, _ = _request(
        server, "POST", f"/api/sessions/{watch['session']}/feedback", {"caption": "is red"}
    )
    assert status == 409 and "watch" in body["error"]
    status, body, _ = _request(server, "POST", f"/api/sessions/{watch['session']}/advance", {})
    assert status == 200 and body["turn"] == 1 and body["history"][1]["caption"] is not None


def test_server_accepts_a_burst_of_connections(play_agent):
    """Many clients connecting before the server accepts any: none may be turned away."""
    import socket

    from fiq_gym.play.server import PlayServer

    s = PlayServer(play_agent, port=0)  # bound and listening, not serving yet
    clients = []
    try:
        for _ in range(40):
            c = socket.socket()
            clients.append(c)
            c.settimeout(0.5)  # the kernel drops a SYN beyond the backlog: connect times out
            c.connect(("127.0.0.1", s.port))
    except OSError as e:
        pytest.fail(f"connection {len(clients)} of 40 was not accepted ({e})")
    finally:
        for c in clients:
            c.close()
        s.close()


def test_a_stalled_request_body_gets_408_and_one_log_line(play_agent, capfd):
    import socket

    from fiq_gym.play.server import PlayServer

    with (
        PlayServer(play_agent, port=0, request_timeout=0.5) as s,
        socket.create_connection(("127.0.0.1", s.port), timeout=10) as c,
    ):
        c.sendall(
            b"POST /api/sessions HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"mode"' % s.port
        )
        answer = b""
        while chunk := c.recv(65536):  # the server answers, then hangs up
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 408") or head.startswith(b"HTTP/1.1 408"), head
    assert b"stalled" in body
    err = capfd.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if "408" in line]
    assert len(lines) == 1 and "stalled" in lines[0], err


def test_server_forgets_the_least_recently_used_session(play_agent):
    from fiq_gym.play.server import PlayServer

    with PlayServer(play_agent, port=0, max_sessions=2) as s:
        first = _request(s, "POST", "/api/sessions", {})[1]["session"]
        _request(s, "POST", "/api/sessions", {})
        _request(s, "POST", "/api/sessions", {})
        assert _request(s, "GET", f"/api/sessions/{first}")[0] == 404
        assert len(s.sessions) == 2


# --- replaying recorded dialogs ----------------------------------------------------------------


def _record_dialogs(play_agent, path: Path, count: int = 3) -> None:
    from fiq_gym.play.session import PlaySession

    session = PlaySession(play_agent, seed=11, save_path=str(path))
    for _ in range(count):
        _play_to_end(session)
    session.close()


def test_replay_with_the_recorded_agent_reproduces_the_recorded_ranks(play_agent, tmp_path):
    from fiq_gym.play.record import load_dialogs
    from fiq_gym.play.replay import evaluate_recorded

    path = tmp_path / "dialogs.json"
    _record_dialogs(play_agent, path)
    recorded = load_dialogs(path)
    result = evaluate_recorded(path, agent=play_agent)
    assert len(result.ranks) == 3
    for dialog, ranks in zip(recorded, result.ranks, strict=True):
        got = ranks[: len(dialog.turns)].tolist()
        assert got == [t.rank for t in dialog.turns]
    # The same agent shows the same garments, so every answer it read was the person's.
    assert result.meta["answers"] == result.meta["recorded_answers"] > 0
    assert "recorded dialogs" in result.agent and result.per_turn()[0]["turn"] == 0


def test_replay_hands_the_agent_only_public_info(play_agent, tmp_path):
    import dataclasses

    from fiq_gym.play.replay import evaluate_recorded

    class ReadsRank:
        def reset(self, observation, info, mask):
            pass

        def act(self, observation, info):
            return info["rank"]

    class Model:
        def make_agent(self, env):
            return ReadsRank()

    path = tmp_path / "dialogs.json"
    _record_dialogs(play_agent, path)
    with pytest.raises(KeyError, match=r"info\['rank'\] is withheld during evaluation"):
        evaluate_recorded(path, agent=dataclasses.replace(play_agent, _model=Model()))


def test_replay_falls_back_for_garments_nobody_captioned(play_agent, agent_checkpoint, tmp_path):
    import torch

    from fiq_gym.agents.retriever import load_checkpoint, save_checkpoint
    from fiq_gym.play.agent import load_play_agent
    from fiq_gym.play.replay import evaluate_recorded, replay_user

    path = tmp_path / "dialogs.json"
    _record_dialogs(play_agent, path, count=2)
    net, meta = load_checkpoint(agent_checkpoint)
    torch.manual_seed(99)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.5)
    other = tmp_path / "other"
    save_checkpoint(other, net, args=meta["args"], agent="other")
    result = evaluate_recorded([str(path)], agent=str(other))
    # Turn 0's caption is always the person's; a different agent soon shows other garments.
    assert result.meta["recorded_answers"] >= 2
    assert result.meta["recorded_answers"] < result.meta["answers"]
    from fiq_gym.play.record import load_dialogs

    user = replay_user(load_dialogs(path), load_play_agent(other).catalog)
    with pytest.raises(LookupError, match="no human caption"):
        user.describe(np.array([0]), np.array([1]), np.random.default_rng(0))


def test_replay_refuses_another_catalog(play_agent, tmp_path):
    from fiq_gym.play.record import load_dialogs, save_dialogs
    from fiq_gym.play.replay import evaluate_recorded

    path = tmp_path / "dialogs.json"
    _record_dialogs(play_agent, path, count=1)
    (dialog,) = load_dialogs(path)
    dialog.catalog["labels_sha256"] = "0" * 64
    save_dialogs(path, [dialog])
    with pytest.raises(ValueError, match="another catalog"):
        evaluate_recorded(path, agent=play_agent)


def test_cli_replay(agent_checkpoint, play_agent, tmp_path, capsys):
    from fiq_gym.cli import main

    path = tmp_path / "dialogs.json"
    _record_dialogs(play_agent, path, count=2)
    out = tmp_path / "result.json"
    assert main(["replay", str(path), "--agent", str(agent_checkpoint), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "on recorded dialogs" in text and "recorded captions answered" in text
    assert json.loads(out.read_text())["episodes"] == 2


@pytest.mark.slow
def test_a_ppo_checkpoint_plays_in_query_mode(small_catalog_path, tmp_path):
    """PPO speaks the env's query mode: the session's announcement follows that rule too."""
    from stable_baselines3 import PPO

    from fiq_gym.agents.ppo import Args, CaptionFeaturesExtractor, save
    from fiq_gym.envs.sb3 import make_sb3_vec_env
    from fiq_gym.play.agent import load_play_agent
    from fiq_gym.play.session import PlaySession

    args = Args(catalog=str(small_catalog_path), max_turns=3, out=str(tmp_path))
    vec_env = make_sb3_vec_env(
        args.env_id, num_envs=2, catalog=args.catalog, user="template", action_mode="query", max_turns=3
    )
    model = PPO(
        "MultiInputPolicy",
        vec_env,
        n_steps=8,
        batch_size=8,
        seed=0,
        device="cpu",
        policy_kwargs={"features_extractor_class": CaptionFeaturesExtractor},
    )
    save(model, tmp_path / "checkpoint", args)
    vec_env.close()
    play = load_play_agent(tmp_path / "checkpoint")
    assert play.kind == "ppo" and play.action_mode == "query" and play.max_turns == 3
    session = PlaySession(play, seed=0)
    state = _play_to_end(session)
    assert state["status"] in ("found", "out_of_turns") and len(state["history"]) >= 2
    session.close()


def test_a_checkpoint_with_its_own_tokenizer_reads_with_it(small_catalog_path, tmp_path):
    """Checkpoints that learned their own words (``tokenizer.json``, e.g. single-shot) keep them."""
    import torch

    from fiq_gym.agents.retriever import RetrieverConfig, RetrieverNet, save_checkpoint
    from fiq_gym.envs.building import build_dialog_parts
    from fiq_gym.play.agent import load_play_agent
    from fiq_gym.play.session import PlaySession
    from fiq_gym.text import WordTokenizer

    tokenizer = WordTokenizer(["is", "red", "redder", "longer"])
    _, tables, _, _ = build_dialog_parts(str(small_catalog_path), None, "template", None, None)
    torch.manual_seed(0)
    config = RetrieverConfig(
        tokenizer.vocab_size, tables.feature_dim, tables.side_info.shape[1], tables.num_items, 16
    )
    args = {"catalog": str(small_catalog_path), "max_turns": 2}
    save_checkpoint(tmp_path, RetrieverNet(config), args=args, files={"tokenizer.json": tokenizer.to_json()})
    play = load_play_agent(tmp_path)
    assert play.tokenizer == tokenizer
    session = PlaySession(play, seed=0)
    session.new_dialog()
    state = session.submit("is redder and darker")
    assert state["history"][0]["unknown_words"] == ["and", "darker"]
    session.close()


@pytest.mark.slow
def test_cli_serve_port_0_prints_its_url(agent_checkpoint, tmp_path):
    import os
    import subprocess
    import sys
    import urllib.request

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "fiq_gym", "serve", "--agent", str(agent_checkpoint), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("fiq-gym serve: open http://127.0.0.1:"), (line, process.stderr.read())
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/health", timeout=10) as response:
            health = json.load(response)
        assert health["ok"] and health["num_items"] == 300
    finally:
        process.terminate()
        process.wait(timeout=10)


def _append_many(path: str, start: int, count: int) -> None:
    """Append ``count`` dialogs one by one (a process of the concurrency test below)."""
    from fiq_gym.play.record import DialogRecord, append_dialogs

    for k in range(start, start + count):
        record = DialogRecord(
            id=f"d{k}",
            created="2026-12-07T00:00:00Z",
            mode="watch",
            shopper="template",
            agent={"name": "test"},
            env_id="fiq_gym/FashionIQ-v3",
            category=None,
            max_turns=5,
            catalog={},
            target_index=k,
            target_row=k,
            target_id=f"item{k}",
        )
        append_dialogs(path, [record])


def test_dialogs_saved_at_the_same_time_are_all_kept(tmp_path):
    """16 sessions finishing at once in threads, and two processes appending meanwhile, keep
    every dialog (issue 35: `serve --save` kept 4-6 of 16; each append read, changed and
    renamed the shared file on its own)."""
    import multiprocessing
    import threading

    from fiq_gym.play.record import load_dialogs

    path = str(tmp_path / "dialogs.json")
    start = threading.Barrier(16)

    def session(k: int) -> None:
        start.wait()
        _append_many(path, 1000 + 10 * k, 3)

    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_append_many, args=(path, 5000 + 100 * j, 20)) for j in range(2)]
    for p in processes:
        p.start()
    threads = [threading.Thread(target=session, args=(k,)) for k in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in processes:
        p.join(timeout=120)
        assert p.exitcode == 0
    ids = [d.id for d in load_dialogs(path)]
    assert len(ids) == len(set(ids)) == 16 * 3 + 2 * 20


def test_every_answer_is_json_even_for_methods_and_requests_http_server_rejects(server):
    """Unknown methods (TRACE, CONNECT, made-up ones) and malformed request lines used to get
    http.server's HTML page (issue 35)."""
    import socket

    for method in ("TRACE", "CONNECT", "BREW"):
        status, body, response = _request(server, method, "/api/sessions")
        assert status == 405 and response.getheader("Allow") == "GET, HEAD, POST", method
        assert body == {"error": f"method {method} is not allowed"}
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        raw.sendall(b"GET / extra HTTP/1.1\r\n\r\n")  # four words: bad request syntax
        # The head and the body may arrive in separate reads: read until the server closes.
        chunks = []
        while chunk := raw.recv(65536):
            chunks.append(chunk)
        answer = b"".join(chunks).decode("latin-1")
    head, _, payload = answer.partition("\r\n\r\n")
    assert "Content-Type: application/json" in head and json.loads(payload)["error"]
