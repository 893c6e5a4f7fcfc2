// fiq-gym play page. Everything a person typed is shown with textContent, never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let sessionId = null;
let sessionMode = null;
let busy = false;

async function api(method, path, body) {
  const options = { method, headers: {} };
  if (body !== undefined) {
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const response = await fetch(path, options);
  let data;
  try {
    data = await response.json();
  } catch (e) {
    data = { error: `HTTP ${response.status}` };
  }
  if (!response.ok) {
    const error = new Error(data.error || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function imageUrl(row) {
  return `/api/images/${Number(row)}.png`;
}

function setText(id, value) {
  $(id).textContent = value === undefined || value === null ? "" : String(value);
}

const STATUS = {
  awaiting_feedback: "Say how your target differs from the shown garment.",
  ready: "Press “Next turn” to let the simulated shopper answer.",
  found: "Found it! The agent showed your target.",
  out_of_turns: "Out of turns: the agent did not find your target.",
  idle: "",
};

function historyItem(turn, mode) {
  const li = document.createElement("li");
  li.dataset.turn = String(turn.turn);
  const img = document.createElement("img");
  img.src = imageUrl(turn.shown_row);
  img.alt = `turn ${turn.turn}`;
  li.appendChild(img);
  const text = document.createElement("span");
  const head = document.createElement("span");
  head.textContent = `turn ${turn.turn}: ${turn.shown_id}, target rank ${turn.rank}`;
  text.appendChild(head);
  if (turn.caption) {
    text.appendChild(document.createElement("br"));
    const caption = document.createElement("span");
    caption.className = "caption";
    caption.textContent = `${mode === "human" ? "you" : "shopper"}: “${turn.caption}”`;
    text.appendChild(caption);
  }
  if (turn.unknown_words && turn.unknown_words.length) {
    text.appendChild(document.createElement("br"));
    const unknown = document.createElement("span");
    unknown.className = "unknown";
    unknown.textContent = `words the agent does not know (read as <unk>): ${turn.unknown_words.join(", ")}`;
    text.appendChild(unknown);
  }
  li.appendChild(text);
  return li;
}

function render(state) {
  sessionId = state.session;
  sessionMode = state.mode;
  if (location.hash !== `#s=${sessionId}`) history.replaceState(null, "", `#s=${sessionId}`);
  setText("agent", state.agent);
  for (const radio of document.querySelectorAll('input[name="mode"]')) radio.checked = radio.value === state.mode;
  $("download").href = `/api/sessions/${sessionId}/dialogs`;
  if (!state.target) return;
  $("target-img").src = imageUrl(state.target.row);
  setText("target-id", state.target.id);
  setText("target-desc", state.target.description);
  $("shown-img").src = imageUrl(state.shown.row);
  setText("shown-label", state.turn === 0 ? "First garment" : `The agent shows (turn ${state.turn})`);
  setText("shown-id", state.shown.id);
  setText("shown-desc", state.shown.description);
  setText("turn", state.turn);
  setText("max-turns", state.max_turns);
  setText("rank", state.rank);
  setText("rank-max", state.num_items - 1);
  setText("status", STATUS[state.status] || state.status);
  const over = state.status === "found" || state.status === "out_of_turns";
  $("feedback-form").hidden = state.mode !== "human";
  $("advance").hidden = state.mode !== "watch";
  $("caption").disabled = over;
  $("send").disabled = over;
  $("advance").disabled = over;
  const list = $("history");
  list.replaceChildren(...state.history.map((turn) => historyItem(turn, state.mode)));
}

async function run(action) {
  if (busy) return;
  busy = true;
  setText("error", "");
  document.body.classList.add("busy");
  try {
    render(await action());
  } catch (e) {
    setText("error", e.message);
  } finally {
    busy = false;
    document.body.classList.remove("busy");
  }
}

function chosenMode() {
  const checked = document.querySelector('input[name="mode"]:checked');
  return checked ? checked.value : "human";
}

function chosenTarget() {
  const value = $("target-input").value.trim();
  return value === "" ? null : value;
}

$("controls").addEventListener("submit", (event) => {
  event.preventDefault();
  run(async () => {
    // A session plays one mode: switching mode starts a new session.
    if (sessionId && sessionMode === chosenMode()) {
      return api("POST", `/api/sessions/${sessionId}/reset`, { target: chosenTarget() });
    }
    return api("POST", "/api/sessions", { mode: chosenMode(), target: chosenTarget() });
  });
});

$("feedback-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const caption = $("caption").value;
  run(async () => {
    const state = await api("POST", `/api/sessions/${sessionId}/feedback`, { caption });
    $("caption").value = "";
    return state;
  });
});

$("advance").addEventListener("click", () => {
  run(() => api("POST", `/api/sessions/${sessionId}/advance`, {}));
});

async function start() {
  const match = /^#s=([A-Za-z0-9_-]{1,64})$/.exec(location.hash);
  if (match) {
    try {
      render(await api("GET", `/api/sessions/${match[1]}`));
      return;
    } catch (e) {
      if (e.status !== 404) throw e;
    }
  }
  render(await api("POST", "/api/sessions", { mode: "human", target: null }));
}

start().catch((e) => setText("error", e.message));
