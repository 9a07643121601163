/* depthlab playground: controls <-> URL <-> WebSocket session, live panels (uPlot + canvas). */
"use strict";

const $ = (id) => document.getElementById(id);
const CLASS_COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
  "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
const MAX_HISTORY = 1500;

const S = {
  schema: null, ws: null, query: null, state: "connecting", wantPlay: false, press: 0,
  lost: null, rejoined: null, refusal: null,
  ready: null, theory: null, init: null, last: null, plots: {}, updates: [], edits: 0,
  hist: { step: [], train: [], probe: [], acc: [] }, evo: { step: [], mean: [], std: [] },
};

function viridis(t) {
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(Math.max(t, 0), 1) * (stops.length - 1);
  const i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  const c = stops[i].map((v, k) => Math.round(v + f * (stops[i + 1][k] - v)));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
/* The last layer at viridis's 0.82, as the report's layer figures (figures._layer_colors):
   its end, pale yellow rgb(253,231,37), drew the output layer's line (and its dotted ±std
   lines) at a contrast of 1.2:1 on the white plots, barely there. */
const LAYER_COLOR_END = 0.82;
const layerColor = (layer, n) => viridis(n <= 1 ? 0 : LAYER_COLOR_END * (layer - 1) / (n - 1));
const fmt = (v) => (v === null || v === undefined || !isFinite(v)) ? "-" :
  (Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0)) ? v.toExponential(2) : (+v.toPrecision(4)).toString();
const pos = (v) => (v === null || !(v > 0)) ? null : v;

/* ---------------- controls ---------------- */
/* A label is its key's last part, except where that names nothing on its own: the data set's
   menu read "name" (a screen reader said "name, combobox, spirals") and its input dimension "d". */
const LABELS = { "data.name": "data set", "data.options.d": "input dims (d)" };

const controlLabel = (key) => LABELS[key] || key.split(".").pop().replace(/_/g, " ");

function buildControls() {
  for (const f of S.schema.fields) {
    const box = document.createElement("div");
    box.className = "field";
    box.dataset.key = f.key;
    const id = "f-" + f.key.replace(/\./g, "-");
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = controlLabel(f.key);
    label.title = `${f.doc} (${f.accepts})`;
    let input;
    if (f.kind === "choice" || f.kind === "bool") {
      input = document.createElement("select");
      const opts = f.kind === "bool" ? ["false", "true"] : f.choices;
      for (const c of opts) {
        const o = document.createElement("option");
        o.value = c; o.textContent = c; input.appendChild(o);
      }
    } else {
      input = document.createElement("input");
      input.type = "text";
      input.inputMode = f.kind === "int" ? "numeric" : "decimal";
    }
    input.id = id; input.name = f.key; input.title = label.title;
    input.addEventListener("change", onControlChange);
    box.append(label, input);
    $(f.group === "more" ? "fields-more" : "fields-main").appendChild(box);
  }
  for (const [name, p] of Object.entries(S.schema.presets)) {
    const b = document.createElement("button");
    b.textContent = p.title; b.dataset.preset = name; b.title = p.why;
    b.addEventListener("click", () => choosePreset(name));
    $("preset-buttons").appendChild(b);
  }
}

function field(key) { return S.schema.fields.find((f) => f.key === key); }
function inputOf(key) { return document.querySelector(`[name="${key}"]`); }

/* The query of the controls that apply: a hidden one (another data set's option, the momentum
   of an optimizer without one) is left out, so a bad value typed there before it was hidden
   does not refuse every later change with a message about a control nobody can see. */
function readControls() {
  const q = {};
  for (const f of S.schema.fields) {
    if (document.querySelector(`.field[data-key="${f.key}"]`).classList.contains("hidden")) continue;
    q[f.key] = inputOf(f.key).value.trim();
  }
  return q;
}

/* A menu's option for a value as the server reads it (case and spaces ignored; true/1/on/yes
   and false/0/off/no for true or false): a URL's activation=TANH or optimizer=SGD added an
   option "TANH" beside "tanh", and "SGD" hid the momentum control (its optimizers are spelled
   "sgd"), so a shared link's momentum was left out of the setup and trained as 0.9. */
function menuValue(f, el, v) {
  const values = [...el.options].map((o) => o.value);
  if (values.includes(v)) return v;
  const t = v.trim().toLowerCase();
  if (f.kind === "bool") {
    if (["true", "1", "on", "yes"].includes(t)) return "true";
    if (["false", "0", "off", "no"].includes(t)) return "false";
  }
  return values.includes(t) ? t : null;
}

function writeControls(q) {
  for (const f of S.schema.fields) {
    let v = q[f.key] !== undefined ? String(q[f.key]) : String(f.default);
    const el = inputOf(f.key);
    if (el.tagName === "SELECT") {
      const known = menuValue(f, el, v);
      if (known !== null) {
        v = known;
      } else {  // kept as typed: the server names the bad value beside the control
        const o = document.createElement("option"); o.value = v; o.textContent = v; el.appendChild(o);
      }
    }
    el.value = v;
  }
  refreshVisibility();
  showChangedMore();
}

/* "more settings" opens when a link, preset, apply or reset sets one of its controls away from
   its default: a shared link's loss = mse (or float64, an l2 penalty) trained under a closed
   box, beside controls that read like the default setup's. (It is never closed for the user.) */
function showChangedMore() {
  const same = (a, b) => String(a) === String(b) ||
    (String(a).trim() !== "" && String(b).trim() !== "" && Number(a) === Number(b));
  const changed = S.schema.fields.some((f) => f.group === "more" &&
    !document.querySelector(`.field[data-key="${f.key}"]`).classList.contains("hidden") &&
    !same(inputOf(f.key).value, f.default));
  if (changed) $("more").open = true;
}

function refreshVisibility() {
  const data = inputOf("data.name").value, opt = inputOf("train.optimizer").value;
  for (const f of S.schema.fields) {
    const hide = (f.datasets.length && !f.datasets.includes(data)) ||
      (f.optimizers.length && !f.optimizers.includes(opt));
    document.querySelector(`.field[data-key="${f.key}"]`).classList.toggle("hidden", !!hide);
  }
}

/* A refusal (or its clearing) changes the height of the controls above the export link and
   the copy-link button. Arriving between a press and its release (the press blurred the control
   just typed in, and the server refused its change at once) it moved the link 38 px from under
   the pointer: the release landed elsewhere and the click was lost (no export, no message).
   While a pointer is pressed such a change waits for the release and the click it makes (at
   most a second: a release outside the window is never seen). */
const press = { down: false, queue: [], timer: 0 };
function flushPress() {
  press.down = false; clearTimeout(press.timer);
  for (const f of press.queue.splice(0)) f();
}
document.addEventListener("pointerdown", () => { press.down = true; }, true);
for (const type of ["pointerup", "pointercancel"]) {
  // after the click, which the browser dispatches right after the release, in the same task
  document.addEventListener(type, () => setTimeout(flushPress, 0), true);
}
window.addEventListener("blur", () => setTimeout(flushPress, 0));
function afterRelease(f) {
  if (!press.down) { f(); return; }
  press.queue.push(f);
  clearTimeout(press.timer); press.timer = setTimeout(flushPress, 1000);
}

/* A refusal's outline comes with its message: answered while a pointer is pressed, the
   (hidden) message took the refusal's text at once and the outline waited for the release, so
   the page said "model.width = '0' is not accepted" beside no outlined control. The outline
   (a border and a background: nothing moves) is drawn at once; the note under the control,
   which moves what is below it, waits for the release with the message's showing. */
function markInvalid(key, message) {
  if (key && press.down) outlineOnly(key);
  afterRelease(() => markInvalidNow(key, message));
}

/* Only ``key``'s control outlined, at once, without its note (see markInvalid). */
function outlineOnly(key) {
  document.querySelectorAll(".field.invalid").forEach((e) => {
    if (e.dataset.key !== key) e.classList.remove("invalid");
  });
  const box = document.querySelector(`.field[data-key="${CSS.escape(key)}"]`);
  if (box) box.classList.add("invalid");
}

/* Whether the refusal on the page still applies once ``accepted`` (an answer's query) was
   accepted: the refused control still holds the value refused, the accepted setup has another
   value there, and the controls differ from it. Then ``accepted`` answers a setup sent before
   the refused one (lr 0.02 waiting for a network being built, then width 0 typed): its
   "accepted" took the message and the outline away beside the 0 still in the control, until
   the server said the refusal again. */
function refusalStands(accepted) {
  const r = S.refusal;
  if (!r || !field(r.key) || !accepted) return false;
  const controls = readControls();
  return controls[r.key] === r.value && String(accepted[r.key]) !== r.value &&
    !Object.entries(controls).every(([k, v]) => String(accepted[k]) === v);
}

/* The page's message and outline cleared (a setup was accepted, or waits to be built). */
function clearRefusal(message) {
  S.refusal = null;
  showMessage(message || ""); markInvalid(null);
}

/* The refused control is outlined and says what it accepts right below it: on a phone the
   page's message sits under all the controls, out of sight of the control being typed in. */
function markInvalidNow(key, message) {
  document.querySelectorAll(".field.invalid").forEach((e) => e.classList.remove("invalid"));
  document.querySelectorAll(".field-error").forEach((e) => e.remove());
  document.querySelectorAll("[aria-invalid]").forEach((e) => {
    e.removeAttribute("aria-invalid"); e.removeAttribute("aria-describedby");
  });
  if (key) {
    // escaped: a key from a tampered URL such as a"b made the selector throw (the page then
    // stayed "connecting")
    const box = document.querySelector(`.field[data-key="${CSS.escape(key)}"]`);
    if (box && message) {
      const note = el("div", "field-error", message);
      note.id = "field-error";
      box.appendChild(note);
    }
    if (box) outlineControl(box, message ? "field-error" : null);
    // a link of several bad settings (width 0 and activation "nope") is refused naming them
    // all: each named control is outlined, the reason is read with each
    for (const other of alsoRefused(key, message)) outlineControl(other, "field-error");
  }
}

/* A refused control outlined (its folded section opened); with ``describedBy`` a screen
   reader reads that element's reason with the control. */
function outlineControl(box, describedBy) {
  box.classList.add("invalid");
  if (describedBy) {
    const input = box.querySelector("input, select");
    input.setAttribute("aria-invalid", "true");
    input.setAttribute("aria-describedby", describedBy);
  }
  if (box.parentElement.id === "fields-more") $("more").open = true;
}

/* The controls besides ``key`` that a refusal of several settings names ("2 settings are not
   accepted: model.width = '0' ...; model.activation = 'nope' ..."); none for other refusals
   (a refusal of two settings together names the other one only as the reason). */
function alsoRefused(key, message) {
  if (!message || !/^\d+ settings are not accepted: /.test(message)) return [];
  return S.schema.fields.filter((f) => f.key !== key &&
    (message.includes(`${f.key} = `) || message.includes(`${f.key} is given `)))
    .map((f) => document.querySelector(`.field[data-key="${CSS.escape(f.key)}"]`))
    .filter((box) => box);
}

/* The control a refusal is shown at: a refusal of two settings together (depth 1000 "with
   model.width = 4096 needs about 125 GiB"; batch size 1 with batch norm) at the one just
   changed when it names it (width 4096 typed, the depth control was outlined and carried the
   message), else the server's. */
function refusedKey(key, message) {
  return S.changed && S.changed !== key && field(S.changed) &&
    message.includes(`${S.changed} `) ? S.changed : key;
}

function onControlChange(ev) {
  S.edits++;  // a preset chosen before this change and answered after it is dropped
  S.changed = ev && ev.target ? ev.target.name : null;  // the control a refusal is shown at
  refreshVisibility();
  $("preset-why").textContent = "";  // the preset's explanation no longer describes the setup
  $("link-note").textContent = "";  // nor the link's note its unused settings
  // keeps training if the user pressed play (S.state reads "loading" while a setup sent a
  // moment ago is built: a second quick change used to stop the training)
  sendSetup(readControls(), S.wantPlay);
}

/* The last choice wins: a preset answered after a later preset, control change or "apply" is
   dropped (a slow answer to an earlier click put that preset's controls back over the later
   choice, and its setup replaced the one the page had just sent). */
async function choosePreset(name) {
  const mine = ++S.edits;
  S.changed = null;
  S.afterReset = null;  // a later choice (its answer writes the controls itself)
  const params = new URLSearchParams(readControls());
  const asked = params.toString();
  params.set("name", name);
  const r = await fetch("/api/preset?" + params.toString());
  const body = await r.json();
  // a value being typed (not yet committed with Enter or Tab) is a later choice too: the answer
  // wrote over it, and the Tab after that sent no change
  if (mine !== S.edits || new URLSearchParams(readControls()).toString() !== asked) return;
  if (!body.ok) { showMessage(body.message); return; }
  writeControls(body.query);
  $("preset-why").textContent = S.schema.presets[name].why;
  $("link-note").textContent = "";
  sendSetup(body.query, false);
}

/* ---------------- session ---------------- */
function sendSetup(query, play) {
  S.wantPlay = !!play;
  S.afterReset = null;  // a later choice: the answers to come are to it
  // sent, not answered yet: reset pressed now restarts it once it is accepted (see reset)
  if (send({ cmd: "setup", query, play: !!play })) S.pending = { ...query };
}

/* play, pause or step, numbered: the server names the last press it had handled in every
   "state" it sends, and a running/paused that answers an earlier press than the last one sent
   is not shown (play, then pause before play's answer: the label read paused, running, paused,
   and a Space in between paused again instead of playing). */
function sendPress(cmd) {
  if (!send({ cmd, press: S.press + 1 })) return false;
  S.press++;
  return true;
}

function send(msg) {
  if (!S.ws || S.ws.readyState !== 1) return false;  // not connected (yet, or any more)
  S.ws.send(JSON.stringify(msg));
  return true;
}

/* After the connection is lost (the server stopped or restarted, a laptop slept) the page
   tries again after these waits (ms; the last one repeats): it said "reload the page" and stayed
   disconnected beside a server that was back, the learner's settings kept only by a reload.
   Not sooner: every try at a server that is down logs an error to the browser's console, and
   the server takes seconds to start again. */
const RECONNECT_MS = [5000, 5000, 10000];

function connect() {
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${proto}//${location.host}/ws`);
  S.ws = ws;
  ws.onopen = () => {
    if (S.lost === null) {
      sendSetup({ ...readControls(), ...(S.extra || {}) }, false);
      return;
    }
    // back: a new server session, its press count from 0 (a "paused" numbered 0 read as an
    // answer to an earlier press than the page's last and was not shown), the page's settings
    // built afresh and training again if it was
    const lost = S.lost;
    S.lost = null;
    S.press = 0;
    for (const id of ["play", "pause", "step", "reset", "doctor"]) $(id).disabled = false;
    document.querySelectorAll("#preset-buttons button").forEach((b) => { b.disabled = false; });
    S.rejoined = "reconnected to the server: the network was built afresh from the settings " +
      "on the page (step 0)" + (lost.running ? " and trains again" : "");
    showMessage(S.rejoined);
    sendSetup({ ...readControls() }, lost.running);
  };
  ws.onmessage = (ev) => handle(JSON.parse(ev.data));
  ws.onclose = (ev) => {
    if (S.ws !== ws) return;
    // 1008: the server refused this page (another site's origin): trying again changes nothing
    const retry = ev.code !== 1008;
    if (S.lost === null) {
      S.lost = { running: S.state === "running" || S.wantPlay, tries: 0 };
      lostConnection(retry);
    }
    if (retry) setTimeout(connect, RECONNECT_MS[Math.min(S.lost.tries++, RECONNECT_MS.length - 1)]);
  };
}

function lostConnection(retry) {
  setState("disconnected");
  showMessage("lost the connection to the server; " + (retry ? "trying again every few " +
    "seconds (the network restarts from step 0), or reload the page to reconnect" :
    "reload the page to reconnect"));
  // buttons that can do nothing any more look it (they took clicks without a word)
  for (const id of ["play", "pause", "step", "reset", "doctor"]) $(id).disabled = true;
  // a preset asks the server too (its click threw 'Failed to fetch'), and so does cancel
  document.querySelectorAll("#preset-buttons button, #doctor-cancel")
    .forEach((b) => { b.disabled = true; });
  // a doctor that was running never answers now: its panel kept saying "the doctor is
  // training copies ..." (far below the message at the top of a long page)
  if ($("doctor-cancel")) {
    $("doctor-out").replaceChildren(el("p", "note doctor-lost", "the doctor's answer is " +
      "lost: the connection to the server closed while it ran; press doctor again once the " +
      "page is reconnected"));
  }
}

function setState(state) {
  S.state = state;
  document.body.dataset.state = state;
  $("state").textContent = state;
  $("transport").dataset.state = state;  // a phone's bottom bar shows it (the header is far)
  fitBottomBar();  // "disconnected" is longer than "paused": the bar may wrap
}

/* A phone's play/pause bar is fixed over the page's bottom: the page ends that much lower.
   A fixed 48 px hid the end of the doctor panel where the bar wraps to two lines (320 px). */
function fitBottomBar() {
  const bar = $("transport");
  const room = getComputedStyle(bar).position === "fixed" ? `${bar.offsetHeight + 8}px` : "";
  document.body.style.paddingBottom = room;
  // and a control reached with Tab (or anything scrolled into view) stops above the bar, not
  // under it: the browser scrolled the focused field to the screen's bottom edge, behind it
  document.documentElement.style.scrollPaddingBottom = room;
}

/* The message (and the divergence banner) sit above the panels: shown or hidden while a pointer
   is pressed on a button below them (an apply, cancel the doctor) it moved that button. */
function showMessage(text) {
  // a hidden message takes its text at once (a hidden box moves nothing), shown on release
  if (press.down && $("message").hidden) $("message").textContent = text || "";
  afterRelease(() => showMessageNow(text));
}
function showMessageNow(text) {
  const m = $("message");
  m.textContent = text || "";
  m.hidden = !text;
}

function handle(m) {
  switch (m.type) {
    case "accepted": onAccepted(m); break;
    case "state":
      // a late answer to a press pressed over since: the answer to the last one is on its way
      // (the server sends none when that press changed nothing: the label already says it)
      if ((m.state === "running" || m.state === "paused") && typeof m.press === "number" &&
          m.press < S.press) break;
      setState(m.state);
      if (m.state === "diverged" || m.state === "failed") S.wantPlay = false;
      // a setup whose data set could not load (or whose network failed to build) is measured
      // never: the summary said "loading the data and building the network…" for good
      if (m.state === "failed" && !S.last) {
        afterRelease(() => {
          if (S.last || S.state !== "failed") return;
          $("grad-summary").textContent = "nothing measured: this setup failed (the message " +
            "above says why); change the setup or press reset to try again";
          $("panels").removeAttribute("aria-busy");
        });
      }
      break;
    case "waiting":  // the previous setup's network is still being built
      setState("waiting");
      // the setup that waits passed the server's checks: a refusal shown before it (a value
      // since corrected) no longer applies, and stayed up until the old network was built;
      // one of a later setup, said before this notice, does while its value stays
      if (!refusalStands(m.query)) clearRefusal();
      $("grad-summary").textContent = m.message;
      // a full server (its --max-sessions): said at the top too, where a student looks first;
      // the network's "accepted" clears it once a place is free
      if (m.full) {
        showMessage(m.message);
        // a phone's bottom bar (the message is below all the controls there) says why it waits
        $("transport").dataset.state = "server full";
        fitBottomBar();
      }
      break;
    case "ready": onReady(m); break;
    case "update": onUpdate(m); break;
    case "diverged": onDiverged(m); break;
    case "error": {
      // a setting of the link with no control here (?foo=1): nothing on the page is marked, and
      // the next change of a control leaves it out (only the first setup sends such keys)
      if (m.key) S.pending = null;  // a refused setup: the session keeps the last accepted one
      // refused after reset was pressed for it: the reset restarts the last accepted setup, so
      // the controls show that one (they kept tanh beside the restarted selu network)
      if (m.key && S.resetAfter && S.query) {
        S.resetAfter = null;
        if (S.afterReset) showAnswered(S.query); else { S.edits++; writeControls(S.query); }
      }
      const linkOnly = !!m.key && !field(m.key);
      const key = linkOnly ? m.key : refusedKey(m.key, m.message);
      // a refused control leaves the last accepted setup in place (and training, if it was)
      // (the server's message names the key, shortened: a tampered link's key may be long)
      showMessage(m.message + (linkOnly ? ". That setting came with the link and has no " +
        "control here: change any control (or choose a preset) to start without it" : "") +
        (key && !linkOnly && S.query ? (S.ready ? ". Still showing" :
          // refused while the accepted setup's network is being built: that one goes on
          ". Still building") + " the last accepted setup (" + shownInstead(key) + ")." : ""));
      markInvalid(key, m.message);
      // the refused value, while it stays in its control the refusal stands (refusalStands)
      S.refusal = key && !linkOnly && field(key) ? { key, value: inputOf(key).value.trim() } : null;
      if (m.doctor) {  // the doctor's run ended without a diagnosis: say so, allow a retry
        const refocus = doctorFocusBack();
        $("doctor").disabled = false;
        $("doctor-out").replaceChildren(el("p", "note", m.message));
        doctorSays(`the doctor stopped without an answer: ${m.message}`);
        refocus();
      }
      // nothing accepted yet; a network being built ("loading") goes on and says so itself
      if (S.query === null) setState("invalid");
      // a refused link (nothing accepted yet) measures nothing until a control changes: the
      // gradient panel said "waiting for the first measurement" over empty panels
      if (S.query === null && m.key) {
        // "change the control marked in red" where none was marked: ?foo=1 has no control
        $("grad-summary").textContent = "nothing to measure: the setup was refused; " +
          (linkOnly ? "change any control (or choose a preset) to start without the link's " +
            "unknown setting" :
            "change the control marked in red (or choose a preset)");
      }
      break;
    }
    case "doctor_started":
      $("doctor").disabled = true;
      S.doctorQuery = null; $("doctor-out").classList.remove("stale");
      $("doctor-out").innerHTML = `<p class="note">the doctor is training copies of the network you asked it about ` +
        `(${m.steps} steps each, then one per prescription)&hellip;</p>`;
      {  // a deep network's doctor trains for minutes: without a way out the button stayed
         // disabled ("already running") even after the setup on the page was changed
        const cancel = el("button", "cancel-doctor", "cancel the doctor");
        cancel.id = "doctor-cancel";
        cancel.title = "stop the doctor's training (Escape)";
        cancel.addEventListener("click", () => {
          if (send({ cmd: "cancel_doctor" })) { cancel.disabled = true; cancel.textContent = "cancelling\u2026"; }
        });
        $("doctor-out").appendChild(cancel);
        if (S.doctorByKey && focusDropped()) cancel.focus();
      }
      doctorSays("the doctor is running");
      break;
    case "doctor_cancelled": {
      const refocus = doctorFocusBack();
      $("doctor").disabled = false;
      S.doctorQuery = null; $("doctor-out").classList.remove("stale");
      $("doctor-out").replaceChildren(el("p", "note", "the doctor was cancelled; press doctor " +
        "to examine the setup on the page"));
      doctorSays("the doctor was cancelled");
      refocus();
      break;
    }
    case "doctor": onDoctor(m); break;
    default: break;
  }
}

function showStep(step, epoch) {
  $("stepinfo").textContent = `step ${step}, epoch ${epoch}`;
  $("stepinfo").dataset.step = step;
}

function onAccepted(m) {
  S.query = m.query;
  S.pending = null;
  S.resetAfter = null;
  // after reset, until the next change: the answers to the setups sent before it, then the
  // reset's own, say what the server restarts. S.pending holds only the last setup sent, so
  // an answer to an earlier one (width 9 accepted while width 10 was on its way) made reset
  // write 9 back beside the width-10 network that the server restarted; a refusal answered
  // after a corrected change left the refused setup's predecessor there
  if (S.afterReset) {
    if (sameControls(readControls(), S.afterReset)) showAnswered(m.query);
    else S.afterReset = null;  // typed into since (not committed yet): kept
  }
  const stands = refusalStands(m.query);  // (after reset the controls show m.query: none)
  if (m.kept) {  // only a setting the session does not use changed (epochs, bn momentum
    // without batch norm, ...): the session goes on
    if (!stands) clearRefusal();
    const qs = new URLSearchParams(m.query).toString();
    history.replaceState(null, "", "?" + qs);
    $("export").href = "/api/export?" + qs;
    afterRelease(markDoctorStale);
    return;
  }
  // a new network starts at step 0: the previous one's "step 2145, epoch 49" stayed beside the
  // new parameter count while the new network was built (seconds for a deep one)
  showStep(0, 0);
  // and its rate: the previous network's "8.5 updates/s" stayed beside the new one's "step 0"
  // while it was built (up to 2 s, the rate's window)
  S.updates = []; showUpdateRate();
  // the panels still draw the network replaced (its loss curve, boundary, theory note of
  // another activation) beside the new one's parameter count until it is built: dimmed
  $("panels").classList.add("previous");
  $("panels").setAttribute("aria-busy", "true");
  // the setup sent on reconnecting says so once it is accepted (cleared by the next one)
  if (!stands || S.rejoined) clearRefusal(S.rejoined);
  S.rejoined = null;
  afterRelease(() => { $("diverged").hidden = true; });
  const qs = new URLSearchParams(m.query).toString();
  history.replaceState(null, "", "?" + qs);
  $("export").href = "/api/export?" + qs;
  $("params").textContent = `${m.parameters.toLocaleString()} parameters`;
  S.ready = null; S.init = null; S.last = null;
  // the stale note goes above the findings: a control changed, then an apply button pressed
  // (the press blurred the control, its setup was accepted at once) moved the button 32 px
  // down before the release, and the click was lost
  afterRelease(markDoctorStale);
  const gs = $("grad-summary");
  for (const k of ["first", "last", "ratio", "step"]) gs.dataset[k] = "";
  // the session loads the data set first: seconds for fashion-mnist (54,000 images), which
  // the page called "building the network" of a 10 x 32 net
  // (once a pointer pressed on the page is released: the summary's line is lower than a
  // measurement's and the loss panel's notes go, which moved an apply button pressed below
  // them when the change the press sent was accepted before the new network was built)
  afterRelease(() => {
    if (S.query !== m.query) return;  // a later setup's answer came: it says its own
    if (!S.last) {  // not measured yet
      gs.textContent = "loading the data and building the network\u2026";
      $("loss-note").textContent = "";
    }
    if (!S.ready) $("loss-rows").textContent = "";
  });
  S.hist = { step: [], train: [], probe: [], acc: [] };
  S.evo = { step: [], mean: [], std: [] };
}

/* Which layers the histogram and activations-over-training panels draw, when not all: a 7-layer
   net's panels drew layers 1-3 and 5-7 (the server picks the first, the last and evenly spaced
   ones) and a learner looked for layer 4 without a word. */
function layersShownNote(m) {
  const k = (m.hist_layers || []).length, L = m.n_layers;
  return k && k < L ? `${k} of ${L} ${unit(L)} shown: the first, the last and evenly spaced ` +
    "ones between" : "";
}

function onReady(m) {
  S.ready = m;
  $("panels").classList.remove("previous");
  $("panels").removeAttribute("aria-busy");
  S.theory = m.theory;
  buildPlots(m);  // (no scroll anchor inside a plot: see .plot in style.css)
  // its notes once a pointer pressed on the page is released (see onAccepted): the theory note
  // without the first measurement's comparison is a line shorter, which moved an apply button
  // pressed below it (CI: 1 px); a measurement drawn by then has written its own
  afterRelease(() => {
    if (S.ready !== m) return;  // a later network's
    if (!S.last) {
      $("theory-note").textContent = m.theory.note;
      $("boundary-axes").textContent = "";
    }
    if (m.n_features !== 2) {
      $("boundary-note").textContent = `decision boundary: ${m.n_features}-D inputs (shown ` +
        "for 2-D data sets: spirals, clusters with d = 2)";
    } else if (!S.last) $("boundary-note").textContent = "";
    $("loss-rows").textContent = probeRowsNote(m);
    $("hist-layers").textContent = $("evo-layers").textContent = layersShownNote(m);
  });
}

/* Which examples the loss panel's "held-out" numbers are measured on: the probe batch of every
   panel (the first 300 held-out rows), in training mode. Unsaid, a learner who exported the
   setup compared them with `depthlab run`'s val_loss and val_acc over all 500 held-out rows of
   clusters or mnist1d (in inference mode for batch norm) and found other numbers. */
function probeRowsNote(m) {
  if (typeof m.probe_rows !== "number") return "";
  const where = m.probe_held_out === false ? `${m.probe_rows} training examples (the data set has ` +
    `no held-out rows)` : m.probe_rows < m.probe_of ? `the first ${m.probe_rows} of the ` +
    `${m.probe_of} held-out examples` : `the ${m.probe_rows} held-out examples`;
  const bn = m.config && m.config.model && m.config.model.batchnorm ?
    ", batch norm normalizing with their own statistics (training mode)" : "";
  return `held-out loss and accuracy: on ${where}, the probe batch of every panel${bn}` +
    (m.probe_held_out !== false && (m.probe_rows < m.probe_of || bn) ? `; \`depthlab run\` reports its val_loss and val_acc on ` +
      `all ${m.probe_of}${bn ? " in inference mode" : ""}` : "") + penaltyNote(m);
}

/* The train loss is what the optimizer minimizes: the data loss plus the weight penalty; the
   held-out loss is the data loss alone. With l2 = 1 the train loss read 300 beside a held-out
   loss of 0.69, and nothing on the page said why. */
function penaltyNote(m) {
  const t = (m.config && m.config.train) || {}, l1 = +t.l1 || 0, l2 = +t.l2 || 0;
  if (!l1 && !l2) return "";
  const terms = [l1 ? `${l1} \u00b7 \u03a3|w|` : "", l2 ? `${l2} \u00b7 \u03a3w\u00b2` : ""]
    .filter(Boolean).join(" + ");
  return `; the train loss includes the weight penalty ${terms} (over the weights, ` +
    "biases and batch-norm parameters left out), which the held-out loss does not";
}

/* Where the trainer's layer name ("dense11", "act3", "bn4") is in the panels: its number is
   that of the panels' layer (nonlinearity, in a residual net) it feeds, and the Dense layer
   after the last one is the output layer. "came out of layer 'dense11'" beside panels of
   layers 1-10 named a layer the page does not show. */
function layerWhere(name) {
  const m = /^(dense|bn|act)(\d+)$/.exec(name || ""), n = S.ready ? S.ready.n_layers : 0;
  if (!m || !n) return "";
  const k = +m[2];
  if (m[1] === "dense" && k === n + 1) return "the output layer, after the last hidden one";
  if (k > n) return "";
  const of = `${unit()} ${k} of the panels`;
  return m[1] === "act" ? of : m[1] === "bn" ? `the batch norm before ${of}` :
    `the weighted sum into ${of}`;
}

function onDiverged(m) {
  setState("diverged");
  S.wantPlay = false;
  const d = $("diverged");
  // the trainer's message already says "training diverged at step N (epoch E): ..."
  let said = m.message.replace(/\.+$/, "");
  // the trainer's "loss = nan" (Python's text of a NaN) beside a page whose numbers say "not
  // finite" and never "nan": in the page's words, NaN or inf named
  said = said.replace(/\bloss = (nan|-?inf)\b/, (_, v) =>
    `the loss was not finite (${v === "nan" ? "NaN" : v.replace(/^inf/, "+inf")})`);
  const where = layerWhere(m.layer);
  if (where) said = said.replace(`layer '${m.layer}'`, `layer '${m.layer}' (${where})`);
  afterRelease(() => {
    d.hidden = false;
    d.textContent = (said.startsWith("training diverged") ? said :
      `training diverged at step ${m.step} (epoch ${m.epoch}): ${said}`) +
      ". The panels show the last measurement before it (values that were not finite read " +
      "\u201cnot finite\u201d); change the setup, or press reset to watch it again.";
    d.dataset.step = m.step;
    d.dataset.layer = m.layer || "";
  });
  // the status line is the trainer's: it said the last measurement's "step 1, epoch 1" beside
  // "diverged at step 4" (the server's trainer stopped at step 4)
  showStep(m.step, m.epoch);
  // the train losses after the last measurement: the loss panel stopped at that measurement
  // (step 1, loss 0.94) where the loss went on to 440 and 2.6e14 before the NaN of step 4
  const h = S.hist, after = (m.losses || []).filter(([k]) => !h.step.length || k > h.step[h.step.length - 1]);
  if (after.length && S.plots["plot-loss"]) {
    for (const [k, v] of after) { h.step.push(k); h.train.push(v); h.probe.push(null); h.acc.push(null); }
    setLossData();
  }
  $("loss-note").textContent = (after.length ? `train loss after the last measurement` +
    `${lossesText(after)}; ` : "") + `step ${m.step}: not finite, not drawn`;
}

/* The train losses between the last measurement and a divergence, for the loss panel's note:
   all of them when a few, else the first two, the last two and the largest (they are drawn).
   Every one was listed: 76 numbers, fifteen lines under the panel, when a batch-normalized
   net diverged 77 steps after its last measurement. */
function lossesText(after) {
  const item = ([k, v]) => `step ${k} ${fmt(v)}`;
  if (after.length <= 4) return ": " + after.map(item).join(", ");
  const top = after.reduce((a, b) => (b[1] > a[1] ? b : a));
  const head = after.slice(0, 2).map(item).join(", "), tail = after.slice(-2).map(item).join(", ");
  return ` (${after.length} steps, ${after[0][0]}-${after[after.length - 1][0]}, drawn): ` +
    `${head}, \u2026, ${tail}; largest ${fmt(top[1])} at step ${top[0]}`;
}

/* The loss panel on a log axis once its losses span more than three decades: a learning rate
   too high for a batch-normalized net bounced the loss between 1 and 1e17, and on a linear
   axis every loss but the spikes lay flat on 0. */
function setLossData() {
  const h = S.hist, u = S.plots["plot-loss"];
  let lo = Infinity, hi = 0;
  for (const v of [...h.train, ...h.probe]) {
    if (v !== null && v > 0 && isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  const log = hi / lo > 1e3;
  if (log !== S.lossLog) {
    S.lossLog = log;
    u.axes[1].label = log ? "loss (log scale)" : "loss";
  }
  const f = (a) => (log ? a.map(lg) : a);
  u.setData([h.step, f(h.train), f(h.probe), h.acc]);
}

/* ---------------- plots ---------------- */
// no narrower than 200 px (260 ran 3 px past a 280 px wide phone's screen)
function plotWidth(id) { return Math.max(200, $(id).parentElement.clientWidth - 20); }

/* A legend square drawn as its line is: dotted for short dashes ([2, 3]: the theory), dashed
   for longer ones, solid for none. uPlot's default drew every square solid, so a dashed line
   was told from a solid one of a similar colour (orange and green for a deuteranope) by
   nothing in the legend. */
const markerDash = (u, i) => {
  const d = u.series[i].dash;
  return !d || !d.length ? "solid" : d[0] <= 2 ? "dotted" : "dashed";
};

function makePlot(id, opts, data) {
  if (S.plots[id]) S.plots[id].destroy();
  $(id).innerHTML = "";
  const legend = { live: false, markers: { dash: markerDash }, ...(opts.legend || {}) };
  const u = new uPlot({ width: plotWidth(id), height: 210, ...opts, legend }, data, $(id));
  S.plots[id] = u;
  // a name for screen readers: the panel's title (the numbers are in the text beside it)
  u.ctx.canvas.setAttribute("role", "img");
  u.ctx.canvas.setAttribute("aria-label", $(id).closest(".panel").querySelector("h3").textContent);
  keyLegend(u);
  return u;
}

/* A legend entry hides or shows its line when clicked (uPlot's own toggle), but Tab never
   reached it, Enter and Space did nothing on it, and a screen reader heard a table cell, not a
   switch. Each entry is now a toggle button: focusable, pressed by Enter or Space (a click on
   its label cell, where uPlot's toggle listens), aria-pressed = whether its line is drawn (uPlot's class u-off: not). */
function keyLegend(u) {
  const rows = [...u.root.querySelectorAll(".u-legend .u-series")];
  const say = () => rows.forEach((r) => r.setAttribute("aria-pressed", String(!r.classList.contains("u-off"))));
  for (const row of rows) {
    row.tabIndex = 0;
    row.setAttribute("role", "button");
    row.title = "show or hide this line (Enter or Space)";
    row.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      ev.preventDefault();
      if (!ev.repeat) (row.querySelector("th") || row).click();  // uPlot listens on the label cell
    });
  }
  (u.hooks.setSeries ||= []).push(say);
  say();
}

/* Log-scale panels plot log10(value) on a linear axis labelled 1e<k> at whole decades:
   uPlot's own log scale stops drawing (RangeError: Invalid array length) once the values span
   about 30 decades, and a vanishing gradient in a deep sigmoid net spans 40 or more. */
const lg = (v) => (v === null || v === undefined || !(v > 0) ? null : Math.log10(v));
const logScale = { range: (u, lo, hi) => {
  if (lo === null || hi === null || !isFinite(lo) || !isFinite(hi)) return [-1, 0];
  const a = Math.floor(lo), b = Math.ceil(hi);
  return a === b ? [a - 1, b + 1] : [a, b];
} };
// as many digits as the ticks need (4.5e+5, not 4e+5 twice beside 5e+5)
const tick = (v) => (v === null ? "" : Math.abs(v) >= 1e4 || (Math.abs(v) < 1e-3 && v !== 0) ?
  (+v.toPrecision(3)).toExponential().replace("e+", "e") : (+v.toPrecision(3)).toString());
/* and no fewer than the spacing of the ticks needs: a loss that barely moves (zero weights: 0.69314
   to 0.69318) had two ticks that both read "0.693" */
const linTicks = (u, splits) => {
  const step = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : 0;
  return splits.map((v) => {
    if (v === null || !(step > 0) || v === 0) return tick(v);
    const digits = Math.min(15, Math.max(3, Math.ceil(Math.log10(Math.abs(v) / step) + 1e-9) + 1));
    return Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ?
      (+v.toPrecision(digits)).toExponential().replace("e+", "e") : (+v.toPrecision(digits)).toString();
  });
};
/* A y axis as wide as its longest tick label needs (uPlot's axis font; tick and gap 15 px):
   ticks of 6 or more characters ("0.69316") ran into the axis's label beside them. */
const AXIS_FONT = '12px system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", ' +
  'Arial, "Noto Sans", sans-serif';
let measurer = null;
const fitAxis = (least) => (u, values) => {
  if (!values || !values.length) return least;
  measurer = measurer || document.createElement("canvas").getContext("2d");
  measurer.font = AXIS_FONT;
  const w = Math.max(...values.map((v) => measurer.measureText(v || "").width));
  return Math.max(least, Math.ceil(w) + 20);
};
/* uPlot's own tick steps end at 5e31: the activations of an exploding network (1e35 at step 0
   in a 60-layer ReLU net with N(0, 1) weights) got axes without a single number. The same
   steps (the same numbers, which uPlot knows the decimals of), then on to 5e307. */
const wideIncrs = Array.from({ length: 340 }, (_, i) => i - 32).flatMap((k) =>
  [1, 2, 2.5, 5].map((m) => +`${m}e${k}`)).filter((v) => isFinite(v));
/* uPlot's range for values that are all equal is [0, 100] when they are 0: every activation
   0 (zero weights, a step function) drew an axis up to 100. Equal values get +-half their
   size (+-0.5 around 0), others uPlot's usual 10% margin. */
const valueRange = (u, lo, hi) => {
  if (lo === null || hi === null || !isFinite(lo) || !isFinite(hi)) return [-1, 1];
  if (lo === hi) { const d = Math.abs(lo) / 2 || 0.5; return [lo - d, hi + d]; }
  return uPlot.rangeNum(lo, hi, 0.1, true);
};
const logTicks = (u, splits) => splits.map((v) =>
  (v !== null && Math.abs(v - Math.round(v)) < 1e-9 ? `1e${Math.round(v)}` : ""));
const decadeIncrs = [1, 2, 5, 10, 20, 50, 100];
const layerIncrs = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000];
let layerAxis = { label: "hidden layer", size: 30, incrs: layerIncrs };
// steps are whole numbers: no tick at step 0.2 while the first steps come in
const stepAxis = { label: "step", incrs: [1, 2, 5].flatMap((m) =>
  Array.from({ length: 12 }, (_, k) => m * 10 ** k)).sort((a, b) => a - b) };

/* Over training, a series of one or two measurements is drawn as points: a line needs two,
   so after the first step the train loss (none at step 0) was not drawn at all. */
const firstPoints = { show: (u, si, i0, i1) => i1 - i0 < 2, size: 6 };

/* The layer axis's label for a plot ``width`` px wide (also chosen again when the window is
   resized: the label chosen at a desktop width ran past a phone-wide canvas): the longest that
   fits, measured in uPlot's label font. uPlot centres it on the plotting area, right of the
   y axis and its label (90 px), so it fits when it is no wider than that area (2 px spare). */
const LABEL_FONT = 'bold 12px system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", ' +
  'Arial, "Noto Sans", sans-serif';
function layerLabel(width) {
  if (!S.ready || !S.ready.config.model.residual) return "hidden layer (input left)";
  const ctx = document.createElement("canvas").getContext("2d");
  ctx.font = LABEL_FONT;
  // at 320 px (a small phone) the middle one still ran past the canvas: "... residual bloc"
  const labels = ["nonlinearity (two per residual block; input left)",
    "nonlinearity (2 per residual block)", "nonlinearity (2 per block)", "nonlinearity"];
  return labels.find((t) => ctx.measureText(t).width <= width - 92) || labels[labels.length - 1];
}

/* The points of a dashed series: none, but for one hidden layer an unfilled ring of ``size``
   px (a line needs two points). */
/* What the panels number, in words: a residual net's points are its nonlinearities (two per
   block), and the summary's "layer 599" of a 300-layer net named a layer it does not have. */
const unit = (n = 1) => (S.ready && S.ready.config.model.residual ?
  (n === 1 ? "nonlinearity" : "nonlinearities") : (n === 1 ? "layer" : "layers"));

const ring = (L, size) => ({ show: L === 1, size, width: 1.5, fill: "rgba(0,0,0,0)" });

function buildPlots(m) {
  const L = m.n_layers;
  // axis labels are drawn on the canvas, never wrapped: a phone-wide plot gets the short one
  layerAxis = { ...layerAxis, label: layerLabel(plotWidth("plot-sat")) };
  const layers = Array.from({ length: L }, (_, i) => i + 1);
  // one hidden layer: half a layer either side, not an axis from layer 0 to layer 2
  const layerScale = L === 1 ? { time: false, range: [0.5, 1.5] } : { time: false };
  makePlot("plot-grad", {
    scales: { x: layerScale, y: logScale },
    axes: [layerAxis, { label: "std of dL/ds", size: 60, values: logTicks, incrs: decadeIncrs }],
    series: [{ label: "layer" },
      { label: "now", stroke: "#1f5fa8", width: 2, points: { show: L <= 60 } },
      // one hidden layer is one point, and a line of one point is not drawn: rings around
      // the "now" point (their legend entries had nothing on the plot)
      { label: "at init", stroke: "#8fa7c8", width: 1.5, dash: [5, 4], points: ring(L, 11) },
      // a network the theory does not cover (a step function, no hidden layer) has no line:
      // its entry says so, as the saturation panel's (the note below the plot says why)
      { label: m.theory && m.theory.relative_std === null ? "theory: none" : "theory",
        stroke: "#d62728", width: 1.5, dash: [2, 3], points: ring(L, 16) }],
  }, [layers, layers.map(() => null), layers.map(() => null), layers.map(() => null)]);
  S.lossLog = false;
  makePlot("plot-loss", {
    scales: { x: { time: false }, acc: { range: [0, 1] },
      y: { range: (u, lo, hi) => (S.lossLog ? logScale.range(u, lo, hi) :
        lo === null || hi === null ? [0, 1] : uPlot.rangeNum(lo, hi, 0.1, true)) } },
    axes: [stepAxis, { label: "loss", size: fitAxis(55), values: (u, sp) => (S.lossLog ? logTicks : linTicks)(u, sp),
      incrs: () => (S.lossLog ? decadeIncrs : wideIncrs) },
      // a regression loss (mse, huber) measures no accuracy: an empty 0-1 "accuracy" axis
      // beside its loss read as an accuracy of 0
      { side: 1, scale: "acc", label: "accuracy", grid: { show: false }, show: m.has_accuracy !== false }],
    series: [{ label: "step" },
      { label: "train loss", stroke: "#1f5fa8", width: 1.5, points: firstPoints },
      { label: "held-out loss", stroke: "#ff7f0e", width: 1.5, points: firstPoints },
      // a regression loss (mse, huber) measures no accuracy: a legend entry without a line
      // would look like a drawing fault
      { label: m.has_accuracy === false ? `held-out acc: none for ${m.config.train.loss}` :
        "held-out acc", stroke: "#2ca02c", width: 1.5, dash: [6, 3], scale: "acc",
        points: firstPoints }],  // dashed: another axis, and a colour close to the loss's
  }, [[], [], [], []]);
  const hl = m.hist_layers;
  S.histRange = null;
  makePlot("plot-hist", {
    // the x axis spans the bins' edges (S.histRange), not their centres: over the centres
    // (-0.983 to 0.983 for tanh) the saturation spikes stood at the axis' ends with no label
    // nearer than 0.5, and a step function's 0 and 1 were not labelled at all
    scales: { x: { time: false, range: (u, lo, hi) => S.histRange || [lo, hi] } },
    axes: [{ label: "activation value", values: linTicks, incrs: wideIncrs }, { label: "fraction", size: 50 }],
    series: [{ label: "value" }, ...hl.map((l) => ({ label: `${unit()} ${l}`, stroke: layerColor(l, L), width: 1.5, points: { show: false } }))],
  }, [[], ...hl.map(() => [])]);
  const evoSeries = [{ label: "step" }];
  for (const l of hl) {
    evoSeries.push({ label: `${unit()} ${l}`, stroke: layerColor(l, L), width: 1.5, points: firstPoints });
  }
  for (const l of hl) {
    for (const sign of ["+", "-"]) {
      evoSeries.push({ label: `${sign}std ${l}`, stroke: layerColor(l, L), width: 0.8, dash: [3, 3], points: { show: false } });
    }
  }
  const evo = makePlot("plot-evo", {
    scales: { x: { time: false }, y: { range: valueRange } },
    axes: [stepAxis, { label: "activation", size: fitAxis(55), values: linTicks, incrs: wideIncrs }],
    legend: { live: false }, series: evoSeries,
  }, evoSeries.map(() => []));
  // which colour is which layer: the means' entries only (the dashed ±std share them)
  evo.root.querySelectorAll(".u-legend .u-series").forEach((row) => {
    if (/^[+-]std /.test(row.textContent.trim())) {
      row.style.display = "none"; row.removeAttribute("tabindex");
    }
  });
  // a layer's mean hidden or shown from the legend takes its dashed ±std lines with it (they
  // have no entries of their own: hiding layer 1 left its two dashed lines drawn)
  evo.hooks.setSeries.push((u, i) => {
    const n = hl.length;
    if (!(i >= 1 && i <= n)) return;
    const show = u.series[i].show;
    for (const k of [n + 2 * i - 1, n + 2 * i]) if (u.series[k].show !== show) u.setSeries(k, { show });
  });
  makePlot("plot-sat", {
    scales: { x: layerScale, y: { range: [0, 1] } },
    axes: [layerAxis, { label: "fraction", size: 50 }],
    // a line style each (the legend squares follow it, markerDash): printed in grayscale the
    // red and the blue are one gray (91 and 100 of 255), three solid lines with the same dots
    series: [{ label: "layer" },
      { label: fractionLabel("saturated", m), stroke: "#d62728", width: 1.5, points: { show: L <= 60 } },
      { label: fractionLabel("inactive", m), stroke: "#1f77b4", width: 1.5, dash: [6, 3], points: { show: L <= 60 } },
      { label: "dead", stroke: "#7f7f7f", width: 1.5, dash: [2, 3], points: { show: L <= 60 } }],
  }, [layers, layers.map(() => null), layers.map(() => null), layers.map(() => null)]);
  makePlot("plot-update", {
    scales: { x: layerScale, y: logScale },
    axes: [layerAxis, { label: "update ratio", size: 60, values: logTicks, incrs: decadeIncrs }],
    series: [{ label: "layer" }, { label: "||dW|| / ||W||", stroke: "#9467bd", width: 1.5, points: { show: L <= 60 } }],
  }, [layers, layers.map(() => null)]);
  drawBoundary(null);
}

/* The saturation panel's legend entry of a fraction the hidden activation does not have
   ("saturated" of a ReLU net, "inactive" of a tanh net, both of identity) says so, as the loss
   panel's "held-out acc: none for mse": the entry beside no line looked like a drawing fault.
   ``m.activation_family``: the server's probes.stats.activation_family. */
function fractionLabel(name, m) {
  const fam = m.activation_family;
  const has = name === "saturated" ? ["bounded", "bounded_relu"] : ["relu", "bounded_relu"];
  if (!fam || has.includes(fam)) return name;
  const act = m.config && m.config.model ? m.config.model.activation : "this activation";
  // short: a longer reason ("(unbounded)") wrapped on a phone, its square on a line of its
  // own; the panel's title says which activations have which fraction
  return `${name}: none for ${act}`;
}

/* Where the theory line and the 'at init' line part by more than a factor 2 at the input end,
   the note says by how much (the batch-norm preset on the 2-D spirals: first / last 140
   measured, 38 predicted, and only the plot showed it): the two ratios of the first to the last
   layer at the measurement the line is scaled to. */
function theoryGap(rel, top) {
  const L = rel.length, first = S.init.grad_std[0], predicted = rel[0];
  if (L < 2 || !(first > 0) || !isFinite(first) || !(predicted > 0)) return "";
  const measured = first / top, apart = Math.max(measured / predicted, predicted / measured);
  if (!(apart >= 2)) return "";
  // narrow layers: the line is the wide-layer mean, this network one draw around it (the naive
  // preset, 30 sigmoid layers of 32, read "a factor 5.055 apart" with nothing saying why, and
  // seeds 0 to 2 read 2x to 20x); before the numbers, which end the note
  // a residual batch-norm net on 2-D inputs (the residual preset: 10.6x apart) says first what
  // most of the gap is, the inputs' low rank, which the narrow-layer note alone did not
  const why = [S.theory.inputs, S.theory.narrow].filter(Boolean).map((t) => `; ${t}`).join("");
  return `${why}. At step ${S.init.step} the measured ${unit()} 1 / ${unit()} ${L} ratio is ` +
    `${fmt(measured)}, the theory's ${fmt(predicted)}${gapAlong(rel, top)}: a factor ` +
    `${fmt(apart)} apart`;
}

/* Where along the layers the measured and predicted curves part, both taken relative to the
   last layer at step 0: measured / theory = (g_l / g_L) / rel_l at layer 1, at 1%, 10% and 50%
   of the depth (the residual preset: 10.62 at 1, 4.42 at 20, 2.67 at 200, 1.58 at 1000), so
   a learner sees whether the gap is made in a few layers at the input or over all of them. */
function gapAlong(rel, top) {
  const L = rel.length, g = S.init.grad_std;
  if (L < 10) return "";
  const at = [...new Set([1, Math.ceil(L / 100), Math.ceil(L / 10), Math.ceil(L / 2)])];
  const parts = [];
  for (const l of at) {
    const r = (g[l - 1] / top) / rel[l - 1];
    if (!(rel[l - 1] > 0) || !isFinite(r) || !(r > 0)) return "";
    parts.push(`${fmt(r)} at ${l}`);
  }
  return ` (measured / theory along the ${unit(2)}: ${parts.join(", ")}, 1 at ${L})`;
}

/* Updates per second over the last 2 s; also refreshed every second without updates (a paused
   page kept showing the rate it had while training, e.g. "PAUSED 11.9 updates/s"). */
function showUpdateRate() {
  const now = performance.now();
  while (S.updates.length && now - S.updates[0] > 2000) S.updates.shift();
  const ups = S.updates.length > 1 ? (S.updates.length - 1) / ((now - S.updates[0]) / 1000) : 0;
  $("ups").textContent = `${ups.toFixed(1)} updates/s`;
  $("ups").dataset.ups = ups.toFixed(2);
}
setInterval(showUpdateRate, 1000);

/* The power of ten of a ratio, one decimal: a ratio of 0.952 read "10^-0.0" (a minus zero). */
const decade = (r) => (Math.round(Math.log10(r) * 10) / 10 || 0).toFixed(1);

function onUpdate(m) {
  if (!S.ready) return;
  S.last = m;
  if (m.step === 0 || S.init === null) S.init = m;
  S.updates.push(performance.now());
  showUpdateRate();
  showStep(m.step, m.epoch);

  const layers = m.layers;
  const grad = m.grad_std.map(lg);
  const initGrad = S.init.grad_std.map(lg);
  let theory = layers.map(() => null);
  const rel = S.theory && S.theory.relative_std;
  const top = pos(S.init.grad_std[S.init.grad_std.length - 1]);
  if (rel && top) theory = rel.map((r) => (r === null ? null : lg(r * top)));
  S.plots["plot-grad"].setData([layers, grad, initGrad, theory]);
  // the line is scaled to the last layer's value at step 0: where that is not finite (an
  // exploding net) or 0, nothing is drawn, and the note claimed a line "scaled to" it
  if (rel) {
    const at0 = S.init.grad_std[S.init.grad_std.length - 1];
    $("theory-note").textContent = S.theory.note + (top ? theoryGap(rel, top) : `; not drawn: ` +
      `the last layer's value at step ${S.init.step} is ${at0 === 0 ? "0" : "not finite"}, ` +
      "nothing to scale it to");
  }
  const first = m.grad_std[0], last = m.grad_std[m.grad_std.length - 1];
  // one hidden layer (depth 1) is its own first and last: a ratio of 1 by construction read
  // as a gradient that flows perfectly ("first / last = 1 (10^0.0)"); none is taken, as the
  // report's "one hidden layer: no first/last ratio to take"
  const single = layers.length === 1;
  const ratio = !single && first !== null && last ? first / last : null;
  const gs = $("grad-summary");
  gs.dataset.first = first; gs.dataset.last = last; gs.dataset.ratio = ratio; gs.dataset.step = m.step;
  const fmtg = (v) => (v === null || v === undefined ? "not finite" : fmt(v));
  gs.innerHTML = single ? `step ${m.step}: ${unit()} 1 <b>${fmtg(first)}</b>; one hidden ` +
    `${unit()}: no first / last ratio to take` :
    `step ${m.step}: ${unit()} 1 <b>${fmtg(first)}</b>, ${unit()} ${layers.length} <b>${fmtg(last)}</b>; ` +
    // (a projected "undefined" read as the page's own fault)
    `first / last = ${last === 0 ? `<b>no ratio</b> (the last ${unit()}'s is 0)` : `<b>${fmtg(ratio)}</b>`}` + (ratio ? ` (10<sup>${decade(ratio)}</sup>)` : "");
  // a log scale cannot draw 0: say where the gradient is exactly 0 (underflow, dead units)
  const zero = layers.filter((l, i) => m.grad_std[i] === 0);
  gs.dataset.zero = zero.length;
  if (zero.length) {
    // a sentence of its own: it ran on from the summary ("... is 0) The gradient is ...")
    // (a long list shortened as the update note's: a 1000-block net's scattered zeros listed
    // every run of nonlinearities)
    gs.append(".", el("span", "note zero", ` The gradient is exactly 0 in ` +
      `${fewLayers(zero, layers.length)} (a zero derivative: dead units, a step function, ` +
      // (tanh trained at lr 10 sat at ±1 in every unit, tanh' = 1 - 1 = 0: the list named
      // neither a bound nor saturation, the reason Glorot & Bengio's figures are about)
      "bounded units saturated at their bounds (tanh, sigmoid: f'(s) rounds to 0); " +
      // (init zeros: tanh'(0) = 1, no unit dead, the gradient 0 for the weights above)
      "weights of 0 above the layer (init zeros or constant 0); or values below the smallest " +
      `${(S.ready.config.model.dtype || "float32")} number): not drawn on the log scale.`));
  }

  const h = S.hist;
  if (!h.step.length || h.step[h.step.length - 1] !== m.step) {
    h.step.push(m.step); h.train.push(m.train_loss); h.probe.push(m.probe_loss); h.acc.push(m.probe_acc);
    const e = S.evo;
    e.step.push(m.step);
    e.mean.push(m.hist.map((x) => m.act_mean[x.layer - 1]));
    e.std.push(m.hist.map((x) => m.act_std[x.layer - 1]));
    // a long run keeps its beginning: every other point goes (the last stays), where cutting
    // the oldest ones dropped the first steps, the loss's steep fall, after two minutes
    if (h.step.length > MAX_HISTORY) {
      const keep = (arr) => arr.filter((v, i) => i % 2 === 0 || i === arr.length - 1);
      for (const k of ["step", "train", "probe", "acc"]) h[k] = keep(h[k]);
      for (const k of ["step", "mean", "std"]) e[k] = keep(e[k]);
    }
  }
  setLossData();
  // a loss that overflowed is no point on the plot: an empty panel says why
  $("loss-note").textContent = m.probe_loss === null || m.probe_loss === undefined ?
    `held-out loss at step ${m.step} is not finite (the network's outputs overflow): not drawn` : "";
  const e = S.evo, k = m.hist.length;
  // layers whose scales differ more than HIST_SPREAD times (an exploding net: layer 1's mean
  // 0.46 beside layer 20's 7.1e10) are each divided by their own scale, as the histograms are:
  // on one linear axis every layer but the largest lay flat on 0
  const own = evoScales(e, k);
  const sc = (j, v) => (v === null || v === undefined ? null : own ? v / own[j] : v);
  const evo = [e.step];
  for (let j = 0; j < k; j++) evo.push(e.mean.map((r) => sc(j, r[j])));
  for (let j = 0; j < k; j++) {
    evo.push(e.mean.map((r, i) => (r[j] === null || e.std[i][j] === null) ? null : sc(j, r[j] + e.std[i][j])));
    evo.push(e.mean.map((r, i) => (r[j] === null || e.std[i][j] === null) ? null : sc(j, r[j] - e.std[i][j])));
  }
  S.plots["plot-evo"].setData(evo);
  axisLabel("plot-evo", 1, own ? "activation / s" : "activation");
  // a layer whose mean or std overflowed at the latest step has no point there: say so
  const at = e.mean.length - 1, gone = [];
  for (let j = 0; j < k && at >= 0; j++) {
    if (e.mean[at][j] === null || e.std[at][j] === null) gone.push(m.hist[j].layer);
  }
  $("evo-scale").textContent = (gone.length ? `${unit(gone.length)} ${rangeText(gone)}: mean ` +
    `or std not finite at step ${e.step[at]} (overflowed): not drawn there. ` : "") +
    (own ? `The ${unit(2)}' scales differ ${fmt(Math.max(...own) / Math.min(...own))} times: ` +
      `each is drawn divided by its own s, its largest |mean| + std over the steps shown: ` +
      m.hist.map((hh, j) => `${unit()} ${hh.layer} s = ${fmt(own[j])}`).join(", ") : "");

  // a layer whose values all overflowed (inf, NaN) has no histogram: no line (its bins, all 0,
  // drew a flat line at 0 without a word), and its range takes no part in the common one
  const empty = (hh) => hh.n > 0 && hh.nonfinite >= hh.n;
  let scaleNote = "";
  if (m.hist.length) {
    const shown = m.hist.filter((hh) => !empty(hh)), ref = shown.length ? shown : m.hist;
    const h0 = ref[0], n = h0.p.length;
    const x = Array.from({ length: n }, (_, i) => h0.lo + (i + 0.5) * (h0.hi - h0.lo) / n);
    // every layer on the first layer's bins when they share a range (bounded activations)
    const same = ref.every((hh) => hh.lo === h0.lo && hh.hi === h0.hi && hh.p.length === n);
    if (same) {
      S.histRange = h0.hi > h0.lo ? [h0.lo, h0.hi] : null;
      S.plots["plot-hist"].setData([x, ...m.hist.map((hh) => empty(hh) ? x.map(() => null) : hh.p)]);
    } else {
      // layers whose ranges differ by more than HIST_SPREAD times (an exploding or vanishing
      // net: ReLU with N(0, 1) weights, layer 1 up to 6.5, layer 20 up to 9.5e11) are drawn
      // each over its own range, x = value / s with s = the layer's largest |value|
      // (max(|lo|, |hi|)): on one linear axis every layer but the widest was a spike of
      // fraction 1 in the first bin, read as "all activations 0"
      const own = histScales(ref);
      const lo = Math.min(...ref.map((hh) => hh.lo / (own ? own.get(hh) : 1)));
      const hi = Math.max(...ref.map((hh) => hh.hi / (own ? own.get(hh) : 1)));
      const N = HIST_COMMON_BINS, xs = Array.from({ length: N }, (_, i) => lo + (i + 0.5) * (hi - lo) / N);
      S.histRange = hi > lo && isFinite(lo) && isFinite(hi) ? [lo, hi] : null;
      // each layer's bin shares its fraction among the common bins it overlaps, in proportion
      // to the overlap (moving it whole to the bin of its centre left every other common bin
      // empty where a layer's bins are wider: a comb of spikes and zeros)
      const w = (hi - lo) / N;
      const ys = m.hist.map((hh) => {
        if (empty(hh)) return new Array(N).fill(null);
        const sc = own ? own.get(hh) : 1, hlo = hh.lo / sc;
        const out = new Array(N).fill(0), bw = (hh.hi - hh.lo) / sc / hh.p.length;
        hh.p.forEach((p, i) => {
          const a = hlo + i * bw, b = a + bw;
          const j0 = Math.max(0, Math.floor((a - lo) / w)), j1 = Math.min(N - 1, Math.floor((b - lo) / w));
          for (let j = j0; j <= j1; j++) {
            const o = Math.min(b, lo + (j + 1) * w) - Math.max(a, lo + j * w);
            if (o > 0) out[j] += p * o / bw;
          }
        });
        return out;
      });
      S.plots["plot-hist"].setData([xs, ...ys]);
      scaleNote = own ? ownScaleNote(ref, own) : "";
    }
    histAxisLabel(scaleNote ? `value / the ${unit()}'s max |value|` : "activation value");
  }
  $("hist-note").textContent = histNote(m.hist, empty);
  $("hist-scale").textContent = scaleNote;
  S.plots["plot-sat"].setData([layers, m.saturated, m.inactive, m.dead]);
  // the server leaves out the fractions of a layer whose outputs overflowed (every layer has
  // a dead fraction otherwise): say which, rather than a line that stops without a word
  const over = layers.filter((l, i) => m.dead[i] === null);
  $("sat-note").textContent = over.length ? `${unit(over.length)} ` +
    `${rangeText(over)}: outputs not finite (they overflowed): no fractions drawn` : "";
  const ur = m.update_ratio.length ? m.update_ratio.map(lg) : layers.map(() => null);
  S.plots["plot-update"].setData([layers.slice(0, ur.length), ur]);
  // an empty log-scale panel says why
  const still = m.update_ratio.length && m.update_ratio.every((v) => v === 0);
  // and where some layers' weights did not change, which: a 300-layer ReLU net's first 106
  // layers (updates below the float32 resolution of their weights) were a gap without a word
  const unchanged = layers.filter((l, i) => m.update_ratio[i] === 0);
  // and where a layer has no ratio: weights of norm 0 (a zeros init: 0 / 0), or values that
  // are not finite (a diverged step): the panel was empty without a word
  const zeroNorm = new Set(m.update_zero_norm || []);
  const none = layers.filter((l, i) => i < m.update_ratio.length && m.update_ratio[i] === null);
  const noW = none.filter((l) => zeroNorm.has(l)), notFinite = none.filter((l) => !zeroNorm.has(l));
  const noRatio = [noW.length ? `${fewLayers(noW, layers.length)}: no ratio (\u2016W\u2016 = 0 ` +
    `at step ${m.update_since}, the weights were all 0)` : "",
  notFinite.length ? `${fewLayers(notFinite, layers.length)}: ratio not finite (weights or ` +
    "their update overflowed)" : ""].filter((t) => t).join("; ");
  $("update-note").textContent = !m.update_ratio.length ? "measured from the first step on" :
    noRatio ? noRatio + (unchanged.length ? `; ${fewLayers(unchanged, layers.length)}: ` +
      "weights unchanged (\u2016\u0394W\u2016 = 0)" : "") + "; not drawn on the log scale" :
    // over the steps since the previous measurement ("in the last step" understated 300 steps
    // of a dropout-0.999 net in which no weight moved)
    still ? `no hidden layer's weights changed ${m.update_since < m.step - 1 ?
      `from step ${m.update_since} to ${m.step}` : `in step ${m.step}`} ` +
      "(\u2016\u0394W\u2016 = 0): nothing to draw on the log scale" : unchanged.length ?
      `${fewLayers(unchanged, layers.length)}: weights unchanged ` +
      `(\u2016\u0394W\u2016 = 0: a zero gradient, or updates below the resolution of ` +
      `${S.ready.config.model.dtype || "float32"} weights), not drawn on the log scale` : "";
  if (m.boundary) {
    drawBoundary(m.boundary);
    // the shading is the network at inference; with batch norm that uses the running
    // statistics, and the loss panel's held-out accuracy the probe batch's own: early in
    // training the panels disagreed without a word (0.565 there, one class painted everywhere)
    const ia = m.boundary.inference_acc;
    const bn = S.ready.config.model;
    $("boundary-mode").textContent = typeof ia !== "number" ? "" :
      `batch norm: the shading is the network at inference, with batch norm's ` +
      `${bn.bn_inference === "population" ? "training-set" : "running-average"} statistics ` +
      `(held-out accuracy ${fmt(ia)} on the ${m.boundary.probe_rows} probe examples at step ${m.step}); ` +
      `the loss panel's held-out accuracy${typeof m.probe_acc === "number" ?
        ` (${fmt(m.probe_acc)})` : ""} normalizes with those examples' own statistics`;
  }
}

function drawBoundary(b) {
  S.boundary = b;
  const cv = $("boundary"), ctx = cv.getContext("2d");
  // drawn in 320 x 320 units on a backing store of the screen's pixels: at 3 device pixels per
  // CSS pixel (a phone) the 320-pixel canvas was stretched threefold and its points blurred
  const W = 320, H = 320;
  const side = Math.max(1, Math.round((cv.clientWidth || W) * (window.devicePixelRatio || 1)));
  if (cv.width !== side) { cv.width = side; cv.height = side; }
  const k = side / W;
  ctx.setTransform(k, 0, 0, k, 0, 0);
  ctx.clearRect(0, 0, W, H);
  const pts = S.ready && S.ready.points;
  if (!pts) {
    ctx.fillStyle = "#9aa5b8"; ctx.font = "13px system-ui"; ctx.textAlign = "center";
    ctx.fillText(S.ready ? "not a 2-D data set" : "", W / 2, H / 2);
    return;
  }
  const box = b || { x0: Math.min(...pts.x), x1: Math.max(...pts.x), y0: Math.min(...pts.y), y1: Math.max(...pts.y) };
  const px = (x) => (x - box.x0) / (box.x1 - box.x0) * W;
  const py = (y) => H - (y - box.y0) / (box.y1 - box.y0) * H;
  if (b) $("boundary-note").textContent = b.note || "";
  // the canvas has no axes: what its two directions are, and over which range
  $("boundary-axes").textContent = `horizontal: input feature 1 (${fmt(box.x0)} to ` +
    `${fmt(box.x1)}), vertical: input feature 2 (${fmt(box.y0)} to ${fmt(box.y1)}), ` +
    "standardized; shading: the predicted class, darker where the network is surer";
  if (b && b.cls) {
    const n = b.n, cw = W / n, ch = H / n;
    for (let r = 0; r < n; r++) {
      for (let c = 0; c < n; c++) {
        const i = r * n + c, cls = b.cls[i];
        if (cls < 0) { ctx.fillStyle = "#000"; ctx.globalAlpha = 0.5; } else {
          ctx.fillStyle = CLASS_COLORS[cls % CLASS_COLORS.length];
          ctx.globalAlpha = 0.12 + 0.45 * Math.max(0, (b.conf[i] - 0.5) * 2);
        }
        // whole-pixel edges (of the screen's pixels): neighbouring translucent cells neither
        // overlap (a darker grid of seams) nor leave gaps
        const x0 = Math.round(c * cw * k) / k, x1 = Math.round((c + 1) * cw * k) / k;
        const y0 = H - Math.round((r + 1) * ch * k) / k, y1 = H - Math.round(r * ch * k) / k;
        ctx.fillRect(x0, y0, x1 - x0, y1 - y0);
      }
    }
    ctx.globalAlpha = 1;
  }
  for (let i = 0; i < pts.x.length; i++) {
    ctx.beginPath();
    ctx.arc(px(pts.x[i]), py(pts.y[i]), 2.6, 0, 2 * Math.PI);
    ctx.fillStyle = CLASS_COLORS[pts.label[i] % CLASS_COLORS.length];
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 0.8;
    ctx.fill(); ctx.stroke();
  }
}

/* ---------------- doctor ---------------- */
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

/* findings of another setup than the one on the page (changed since the doctor ran) say so */
/* What the panels show in place of the controls after a refusal: the accepted values of the
   controls that now read otherwise. The refused key alone told a learner who switched the data
   set to mnist1d beside a binary cross-entropy loss "Still showing the last accepted setup
   (train.loss = binary_cross_entropy)", the loss the control reads, while the menu read mnist1d
   over the panels of spirals. */
function shownInstead(key) {
  const now = readControls();
  const same = (a, b) => {
    const x = String(a).trim().toLowerCase(), y = String(b).trim().toLowerCase();
    return x === y || (x !== "" && y !== "" && Number.isFinite(Number(x)) && Number(x) === Number(y));
  };
  const differ = Object.keys(now).filter((k) => S.query[k] !== undefined && !same(now[k], S.query[k]));
  if (differ.length) return differ.map((k) => `${k} = ${S.query[k]}`).join(", ");
  return S.query[key] !== undefined ? `${key} = ${S.query[key]}` : "unchanged";
}

function sameQuery(a, b) {
  // the epochs go into the export only: the doctor trains its own number of steps
  const keys = [...new Set([...Object.keys(a || {}), ...Object.keys(b || {})])]
    .filter((k) => k !== "train.epochs");
  return keys.every((k) => String((a || {})[k]) === String((b || {})[k]));
}

/* Every control's value the same (a value typed since reset differs). */
function sameControls(a, b) {
  const keys = [...new Set([...Object.keys(a), ...Object.keys(b)])];
  return keys.every((k) => String(a[k]) === String(b[k]));
}

/* The controls show ``q``, an answer after reset (see onAccepted). */
function showAnswered(q) {
  S.edits++; writeControls(q);
  S.afterReset = readControls();
}

function markDoctorStale() {
  const out = $("doctor-out");
  const stale = !!S.doctorQuery && !sameQuery(S.doctorQuery, S.query);
  out.classList.toggle("stale", stale);
  const note = out.querySelector(".stale-note");
  // an applied prescription's note says it already (and goes once the page is back to the
  // doctor's setup)
  const applied = out.querySelector(".applied-note");
  if (applied && !stale) applied.remove();
  if (stale && !note && !applied) {
    out.prepend(el("p", "stale-note", "These findings are for an earlier setup, not the one " +
      "on the page now: press doctor to examine this one."));
  } else if (!stale && note) {
    note.remove();
  }
}

function onDoctor(m) {
  const refocus = doctorFocusBack();
  $("doctor").disabled = false;
  const out = $("doctor-out");
  out.innerHTML = "";
  try { showDiagnosis(m, out); } finally { refocus(); }
  const kinds = m.findings.map((f) => f.kind);
  doctorSays("the doctor's answer: " + (kinds.length ? `${kinds.length} finding` +
    `${kinds.length > 1 ? "s" : ""}: ${kinds.join(", ")}; read them in the doctor panel` :
    (unlearned(m) ? `no findings, but ${unlearned(m)}` :
      "no findings, a clean bill of health")));
}

/* A run with no findings whose train loss L ended at 0.95 or more of a constant prediction's
   L_c (the diagnosis's chance_loss; UNLEARNED_SHARE, depthlab.diagnosis.findings.unlearned_text)
   did not learn: it was told "a clean bill of health" (a GAP CNN at 2.275 against ln 10 =
   2.303). The sentence for it, or null (no chance loss: a clean bill, as before). */
function unlearned(m) {
  const loss = (m.baseline || {}).train_loss, chance = m.chance_loss;
  if (typeof loss !== "number" || typeof chance !== "number" || !isFinite(loss) ||
      !isFinite(chance) || !(chance > 0) || loss < 0.95 * chance) return null;
  return `the run did not learn: train loss ${fmt(loss)}, ${(loss / chance).toFixed(2)}x a ` +
    `constant prediction's ${fmt(chance)} (a longer run, another learning rate or optimizer ` +
    "may; nothing the doctor measures is sick)";
}

/* The doctor's answer replaced its panel's content, and the focus went back to its button:
   a screen reader said nothing of it. One status line (role=status, on the page from its
   start, not shown) says that the doctor runs, and what it found. */
function doctorSays(text) {
  $("doctor-status").textContent = text;
}

function showDiagnosis(m, out) {
  S.doctorQuery = m.query;
  markDoctorStale();
  const b = m.baseline || {};
  // a regression loss (mse, huber) measures no accuracy: the note read "held-out accuracy -."
  // and each verification "held-out acc - → -"
  const loss = (m.query || {})["train.loss"] || "this";
  out.appendChild(el("p", "note", b.diverged ? `This setup diverged after ${runSteps(b)} of the ` +
    `doctor's ${m.steps} (its loss was no longer finite): no train loss or held-out accuracy.` :
    `${m.steps} steps of this setup: train loss ${fmt(b.train_loss)}` + (hasAcc(b) ?
      `, held-out accuracy ${fmt(b.val_acc)}.` : ` (no held-out accuracy: the ${loss} loss ` +
      "measures none).")));
  if (!m.findings.length) {
    const none = unlearned(m);
    out.appendChild(none ? el("p", "finding low", `No findings, but ${none}.`) :
      el("p", "finding healthy", "Clean bill of health: no findings."));
    return;
  }
  for (const f of m.findings) {
    const box = el("div", `finding ${f.severity}`);
    box.dataset.kind = f.kind;
    const head = el("div");
    head.append(el("span", "kind", `[${f.severity}] ${f.kind}`),
      document.createTextNode(f.layers.length ? ` (${findingLayers(f.layers)})` : ""));
    // every layer on hover (the head shortens a long list)
    if (f.layers.length) head.title = `layers ${rangeText(f.layers)}`;
    box.append(head, el("div", "message", f.message));
    // JSON has no NaN or infinity: a number sent as null is an infinity where the finding's
    // "infinite" entry says so, else not finite (a divergence's "metric = -" read as a minus)
    const inf = f.infinite && typeof f.infinite === "object" ? f.infinite : {};
    const evValue = (k, v) => (v !== null ? fmt(v) : inf[`evidence.${k}`] === "inf" ? "inf" :
      inf[`evidence.${k}`] === "-inf" ? "-inf" : "not finite");
    const ev = Object.entries(f.evidence || {}).filter(([, v]) => typeof v !== "object" || v === null)
      .map(([k, v]) => `${k} = ${typeof v === "number" || v === null ? evValue(k, v) : v}`).join(", ");
    if (ev) box.appendChild(el("div", "evidence", "evidence: " + ev));
    if (f.prescription_text) box.appendChild(el("div", "prescription", "prescription: " + f.prescription_text));
    for (const v of f.verifications || []) {
      // a run that diverged has no loss or accuracy: "diverged after 3 steps", where every
      // number read "-" ("train loss - → -, held-out acc - → -, ... - → -: did not help")
      // (and a regression loss's runs have no accuracy either)
      const acc = hasAcc(v.before) || hasAcc(v.after);
      const t = `verified: train loss ${runLoss(v.before)} → ${runLoss(v.after)}, ` +
        (acc ? `held-out acc ${runAcc(v.before)} → ${runAcc(v.after)}, ` : "") +
        `${v.metric} ${v.metric_change ||
          `${fmtMetric(v.metric_before)} → ${fmtMetric(v.metric_after)}`}` +
        `${v.resolved ? " (resolved)" : ""}: ` +
        (v.helped ? "helped" + (v.trade_off || "") : "did not help" + (v.reason || ""));
      box.appendChild(el("div", `verified ${v.helped ? "helped" : "nothelped"}`, t));
    }
    if (f.apply && Object.keys(f.prescription || {}).length) {
      // settings without a control here ({} activation_kwargs: the default) are not shown
      const shown = Object.fromEntries(Object.entries(f.prescription).filter(([, v]) =>
        v !== null && !(typeof v === "object" && !Object.keys(v).length)));
      const a = el("button", "apply", applyLabel(shown, f.apply));
      a.addEventListener("click", () => {
        // the page says what the click changed: the controls changed without a word, and
        // findings of an earlier setup (the doctor's) silently put back its other settings
        // too (an lr changed from 0.1 to 0.05 after the doctor ran went back to 0.1)
        const before = readControls();
        S.edits++; S.changed = null; writeControls(f.apply);
        showApplied(f.kind, m.query, f.apply, before, readControls());
        // a preset's paragraph explained the setup before the click ("the textbook net of the
        // 1990s: weights N(0, 1) ..." beside the tanh + glorot_uniform just applied), as a
        // control changed by hand already cleared it
        if (new URLSearchParams(readControls()).toString() !==
            new URLSearchParams(before).toString()) $("preset-why").textContent = "";
        sendSetup(f.apply, false);
      });
      box.appendChild(a);
    } else if (f.apply_error) {
      box.appendChild(el("div", "note", f.apply_error));
    }
    out.appendChild(box);
  }
}

/* An apply button's text: the controls it sets and the values they will read, as the controls
   are named ("apply: activation tanh, init glorot_uniform"). It was the prescription's JSON
   (apply {"activation":"tanh","init":"glorot_uniform"}), which a class reading a projected page
   had to decode. */
function applyLabel(prescription, applied) {
  const parts = Object.entries(prescription).map(([k, v]) => {
    const key = ["model", "train"].map((s) => `${s}.${k}`).find((q) => field(q));
    const value = key && applied && applied[key] !== undefined ? applied[key] :
      (typeof v === "object" ? JSON.stringify(v) : v);
    return `${key ? controlLabel(key) : k.replace(/_/g, " ")} ${value}`;
  });
  return "apply: " + parts.join(", ");
}

/* The doctor pressed from the keyboard: its button is disabled while it runs and the cancel
   button goes with the panel's content when it ends, and each time the focus fell to the page's
   body (Tab then went on from the top of the page, Space played the network). The cancel button
   takes the focus while the doctor runs, the doctor button when it has answered; a focus
   elsewhere (a control being typed in) stays. Pressed with the mouse, nothing moves. */
function focusDropped() {
  const a = document.activeElement;
  return !a || a === document.body || a === $("doctor") || $("doctor-out").contains(a);
}

function doctorFocusBack() {
  const back = S.doctorByKey && focusDropped();
  return () => { if (back && !$("doctor").disabled) $("doctor").focus(); };
}

/* After "apply": a note at the top of the doctor panel naming every control the click changed,
   "old → new", the prescription's own changes apart from the settings that went back to the
   setup the doctor examined (changed on the page after it ran). */
function showApplied(kind, examined, applied, before, after) {
  const name = (k) => k.split(".").pop().replace(/_/g, " ");
  // the same number however written: a control's default reads "0", the server's "0.0"
  const same = (a, b) => String(a) === String(b) ||
    (String(a).trim() !== "" && String(b).trim() !== "" && Number(a) === Number(b));
  const keys = Object.keys(after).filter((k) => k in before && !same(before[k], after[k]));
  const text = (ks) => ks.map((k) => `${name(k)} ${before[k]} \u2192 ${after[k]}`).join(", ");
  const prescribed = keys.filter((k) => !same((examined || {})[k], applied[k]));
  const back = keys.filter((k) => !prescribed.includes(k));
  const out = $("doctor-out");
  out.querySelectorAll(".applied-note, .stale-note").forEach((e) => e.remove());
  const note = el("p", "applied-note", (prescribed.length ? `applied the ${kind} prescription: ` +
    `${text(prescribed)}` : `the ${kind} prescription changed no control: the page had it already`) +
    (back.length ? `; back to the setup the doctor examined: ${text(back)}` : "") +
    ". The findings below are for the setup before it; press doctor to examine this one.");
  note.setAttribute("role", "status");
  out.prepend(note);
}

/* A doctor's run (its baseline, or a verification's before or after) as the page says it. */
const runSteps = (r) => `${r.steps} step${r.steps === 1 ? "" : "s"}`;
const runLoss = (r) => (r.diverged ? `diverged after ${runSteps(r)}` : fmt(r.train_loss));
const runAcc = (r) => (r.diverged ? "none (diverged)" : fmt(r.val_acc));
const hasAcc = (r) => !r.diverged && r.val_acc !== null && r.val_acc !== undefined;
// a finding's metric is a number; JSON has none for NaN and inf
const fmtMetric = (v) => (v === null || v === undefined ? "not finite" : fmt(v));

/* "layer 3", "layers 1-4, 9", or past 6 runs of neighbours "106 of 300 layers (1, 6-8, ...)". */
function fewLayers(layers, total) {
  const parts = rangeText(layers).split(", ");
  if (parts.length <= 6) return `${unit(layers.length)} ${parts.join(", ")}`;
  return `${layers.length} of ${total} ${unit(total)} (${parts.slice(0, 5).join(", ")}, \u2026)`;
}

/* A finding's layers: all of them while a few runs of neighbours, else their count, the first
   runs and the last ones. A 1000-block residual net's bn_drift listed 412 runs ("layers 1-23,
   25, 27-29, ..., 1997, 1999"): thirty lines of numbers above the finding's message. */
function findingLayers(layers) {
  const parts = rangeText(layers).split(", ");
  if (parts.length <= 8) return `layers ${parts.join(", ")}`;
  return `${layers.length} layers: ${parts.slice(0, 6).join(", ")}, \u2026, ` +
    `${parts.slice(-2).join(", ")}`;
}

/* Which histogram layers had values that overflowed (inf, NaN: in no bin), as the saturation
   note says of its fractions: "layer 66: all 12,800 values not finite (overflowed): not drawn";
   a layer partly overflowed is drawn over its finite values, and says so ("layer 53: 4,080 of
   12,800 values not finite, drawn over the finite ones"). Layers of one kind and one size
   share a clause. */
function histNote(hist, empty) {
  const num = (v) => v.toLocaleString("en-US");
  const groups = new Map();
  for (const hh of hist) {
    if (!(hh.nonfinite > 0)) continue;
    const key = empty(hh) ? `all ${num(hh.n)} values not finite (overflowed): not drawn` :
      `${num(hh.nonfinite)} of ${num(hh.n)} values not finite, drawn over the finite ones`;
    groups.set(key, [...(groups.get(key) || []), hh.layer]);
  }
  return [...groups].map(([text, ls]) => `${unit(ls.length)} ${ls.join(", ")}: ${text}`).join("; ");
}

/* The histogram panel's common bins. */
const HIST_COMMON_BINS = 60;

/* Layers' ranges further apart than this factor (widest span / narrowest: three decades, as
   the loss panel turns to a log scale past three decades) are drawn each over its own range: on
   one linear axis every layer but the widest fits inside a bin or two, one spike of fraction 1
   at the axis's start, read as "every value 0" (an exploding ReLU net's layers 1-16, 6.5 to
   4e9, beside layer 20's 9.5e11). Ranges closer than that share the axis, where a vanishing
   net's deeper layers narrowing towards 0 is the figure's point (Glorot & Bengio 2010). */
const HIST_SPREAD = 1000;

/* Each layer's scale s = max(|lo|, |hi|) (a Map keyed by the histogram entry) when the spans
   hi - lo of the drawn layers differ by more than HIST_SPREAD times, else null. */
function histScales(hist) {
  const spans = hist.map((hh) => hh.hi - hh.lo).filter((d) => d > 0 && isFinite(d));
  if (spans.length < 2 || Math.max(...spans) <= HIST_SPREAD * Math.min(...spans)) return null;
  return new Map(hist.map((hh) => [hh, Math.max(Math.abs(hh.lo), Math.abs(hh.hi)) || 1]));
}

/* "The layers' ranges differ 1.48e+11 times: each is drawn over its own range, x = value / s,
   s = its largest |value|: layer 1 s = 6.463, layer 5 s = 1201, ..." */
function ownScaleNote(hist, own) {
  const spans = hist.map((hh) => hh.hi - hh.lo).filter((d) => d > 0 && isFinite(d));
  const f = Math.max(...spans) / Math.min(...spans);
  return `The ${unit(2)}' ranges differ ${fmt(f)} times: each is drawn over its own range, ` +
    `x = value / s, s = its largest |value|: ` +
    hist.map((hh) => `${unit()} ${hh.layer} s = ${fmt(own.get(hh))}`).join(", ");
}

/* Each shown layer's scale in the "activations over training" panel, s = the largest |mean| +
   std over its finite steps, when those of the layers with one differ by more than HIST_SPREAD
   times, else null (a layer without a finite step gets s = 1: nothing of it is drawn). */
function evoScales(e, k) {
  const s = [];
  for (let j = 0; j < k; j++) {
    let top = 0;
    e.mean.forEach((r, i) => {
      const v = Math.abs(r[j]) + Math.abs(e.std[i][j]);
      if (r[j] !== null && e.std[i][j] !== null && isFinite(v)) top = Math.max(top, v);
    });
    s.push(top);
  }
  const pos = s.filter((v) => v > 0);
  if (pos.length < 2 || Math.max(...pos) <= HIST_SPREAD * Math.min(...pos)) return null;
  return s.map((v) => v || 1);
}

/* A panel's axis title (uPlot draws it on the canvas from axes[i].label). */
function axisLabel(id, i, text) {
  const u = S.plots[id];
  if (!u || u.axes[i].label === text) return;
  u.axes[i].label = text;
  u.redraw(false, false);
}

/* The histogram panel's x-axis title (it says when the values are scaled per layer); uPlot
   draws it on the canvas from axes[0].label. */
function histAxisLabel(text) {
  const u = S.plots["plot-hist"];
  if (!u || u.axes[0].label === text) return;
  u.axes[0].label = text;
  u.redraw(false, false);
}

function rangeText(layers) {
  const out = []; let a = null, p = null;
  for (const v of [...layers].sort((x, y) => x - y)) {
    if (a === null) { a = p = v; } else if (v === p + 1) { p = v; } else { out.push(a === p ? `${a}` : `${a}-${p}`); a = p = v; }
  }
  if (a !== null) out.push(a === p ? `${a}` : `${a}-${p}`);
  return out.join(", ");
}

/* ---------------- start ---------------- */
/* The settings of a link that the setup does not use, each ``{key, value, why}``: a value
   other than the default for a control hidden by the link's own choices (``noise=0.5`` with
   data set digits, ``momentum=0.5`` with adam). They were dropped without a word (the page's
   URL then read the default). */
function unusedLinkSettings(q) {
  const data = inputOf("data.name").value, opt = inputOf("train.optimizer").value;
  const same = (a, b) => String(a).trim() === String(b) ||
    (String(a).trim() !== "" && Number(a) === Number(b));
  const out = [];
  for (const f of S.schema.fields) {
    // (an empty value, "noise=", gives nothing to leave out)
    if (q[f.key] === undefined || String(q[f.key]).trim() === "" || same(q[f.key], f.default))
      continue;
    if (f.datasets.length && !f.datasets.includes(data)) {
      out.push({ key: f.key, value: q[f.key], why: `data set ${data} does not take it, only ` +
        `${orList(f.datasets)}` });
    } else if (f.optimizers.length && !f.optimizers.includes(opt)) {
      out.push({ key: f.key, value: q[f.key], why: `optimizer ${opt} has none, only ` +
        `${orList(f.optimizers)}` });
    }
  }
  return out;
}

/* One line for the unused settings of a link ("" when none). */
function unusedLinkText(unused) {
  if (!unused.length) return "";
  return "Not used from the link: " + unused.map((u) =>
    `${u.key} = ${JSON.stringify(String(u.value).trim())}: ${u.why}`).join("; ") + ".";
}

/* ``a``, ``a or b``, ``a, b or c``. */
function orList(names) {
  return names.length < 2 ? names.join("") :
    names.slice(0, -1).join(", ") + " or " + names[names.length - 1];
}

/* Every value of each key of a URL query: { key: [value, ...] }. */
function linkValues(search) {
  const out = {};
  for (const [k, v] of new URLSearchParams(search)) (out[k] = out[k] || []).push(v);
  return out;
}

async function main() {
  S.schema = await (await fetch("/api/schema")).json();
  buildControls();
  const q = {};
  for (const [k, v] of new URLSearchParams(location.search)) q[k] = v;
  writeControls(q);
  $("link-note").textContent = unusedLinkText(unusedLinkSettings(q));
  // keys the page has no control for still go to the server, which names them
  for (const k of Object.keys(q)) if (!field(k)) S.extra = { ...(S.extra || {}), [k]: q[k] };
  // a key the link gives twice with different values (lr=0.1&lr=5): every value goes to the
  // server, which names them beside the control (the last was taken silently: the link read
  // lr 0.1 and trained at 5); changing any control starts without them, as for an unknown key
  for (const [k, vs] of Object.entries(linkValues(location.search))) {
    if (new Set(vs.map((v) => v.trim())).size > 1) S.extra = { ...(S.extra || {}), [k]: vs };
  }
  // the label follows a press at once, but only when the server got it (not once disconnected)
  // (a setup waiting, for the previous network's build or for a place on a full server, stays
  // "waiting": the page read RUNNING with no network; the server answers once it has started)
  const waiting = () => S.state === "waiting";
  // (step pauses after its one step: it says "paused" at once too, as the server answers)
  $("play").addEventListener("click", () => { S.wantPlay = true; if (sendPress("play") && !waiting()) setState("running"); });
  $("pause").addEventListener("click", () => { S.wantPlay = false; if (sendPress("pause") && !waiting()) setState("paused"); });
  $("step").addEventListener("click", () => { S.wantPlay = false; if (sendPress("step") && !waiting()) setState("paused"); });
  // reset restarts the last accepted setup: the controls show it again (after a refused change
  // they kept the refused values, e.g. selu beside a restarted relu network, and the restart's
  // "accepted" cleared the message that said so)
  $("reset").addEventListener("click", () => {
    S.wantPlay = false;
    // ... unless they read the setup just sent and not answered yet: a width typed and reset
    // pressed (the press sends the change, then the reset) wrote the old width back into the
    // control while the server restarted the new one, so the controls said 32 beside a
    // network of width 8 (and the next change of any control rebuilt it at 32)
    const now = readControls();
    const sent = S.pending && Object.keys(now).every((k) => String(now[k]) === String(S.pending[k]));
    if (S.query && !sent && !sameQuery(now, S.query)) { S.edits++; writeControls(S.query); }
    // the setup sent may still be refused (an empty seed refused, then an activation chosen and
    // reset pressed before the refusal came): the error puts the restarted setup back
    S.resetAfter = sent ? S.pending : null;
    // and every answer until the next change puts its setup in the controls (see onAccepted)
    if (send({ cmd: "reset" })) S.afterReset = readControls();
  });
  // disabled at once: a double click started a second doctor ("already running")
  $("doctor").addEventListener("click", (ev) => {
    S.doctorByKey = ev.detail === 0;  // Enter or Space (a mouse click counts its clicks)
    if (S.state === "waiting") {
      // a setup waiting (for a place on a full server, for the previous network's build) has
      // no network: the server answered the press only once the network had started, with
      // "the doctor needs a network: wait until the setup has loaded" at the top of a page
      // that by then had one (and the doctor button stayed disabled until then)
      S.doctorQuery = null; $("doctor-out").classList.remove("stale");
      $("doctor-out").replaceChildren(el("p", "note doctor-waiting", "the doctor needs a " +
        "network, and this tab is still waiting for one (see above); press doctor once it " +
        "has started"));
      return;
    }
    if (send({ cmd: "doctor" })) $("doctor").disabled = true;
  });
  // Space plays or pauses unless a control has the focus (there it types or presses). A
  // button pressed with the mouse keeps the focus without showing it: Space then pressed it
  // again (play clicked, Space never paused; a preset clicked, Space rebuilt it at step 0), so
  // a button the pointer pressed, not reached with Tab since, leaves Space to play and pause.
  let pointed = null;
  document.addEventListener("pointerdown", (ev) => {
    pointed = ev.target instanceof Element ? ev.target.closest("button, a, summary") : null;
  }, true);
  document.addEventListener("focusin", (ev) => { if (ev.target !== pointed) pointed = null; });
  const spaceIsOurs = (ev) => {
    if (ev.key !== " " || ev.ctrlKey || ev.metaKey || ev.altKey) return false;
    const t = ev.target;
    return !t || t === document.body || t === pointed ||
      !t.closest("input, select, textarea, button, a, summary, [role=button]");
  };
  document.addEventListener("keydown", (ev) => {
    if (!spaceIsOurs(ev)) return;
    ev.preventDefault();
    // (while waiting the state stays "waiting": Space pauses a play pressed then)
    if (!ev.repeat) $(S.state === "running" || (S.state === "waiting" && S.wantPlay) ? "pause" : "play").click();
  });
  // Escape cancels a running doctor, wherever the focus is (before, Escape did nothing: the
  // keyboard had to Tab to the cancel button, below every panel on a phone)
  document.addEventListener("keydown", (ev) => {
    if (ev.key !== "Escape" || ev.defaultPrevented) return;
    const cancel = $("doctor-cancel");
    if (!cancel || cancel.disabled || !cancel.isConnected) return;
    ev.preventDefault();
    cancel.click();
  });
  // a button presses itself when Space is released: not the one the pointer pressed
  document.addEventListener("keyup", (ev) => { if (spaceIsOurs(ev)) ev.preventDefault(); });
  // before any setup was accepted (a refused URL, too big a network) the link's bare
  // /api/export downloaded the default setup: a config of another network than the page's
  // the controls as they read now: a value typed and not yet sent (no Tab) was left out, so a
  // width of 64 on the page exported the accepted setup's 8 (the click's change event sends
  // the new setup, but the link still pointed at the old one)
  $("export").addEventListener("click", async (ev) => {
    ev.preventDefault();
    const qs = new URLSearchParams(readControls()).toString();
    let body = null;
    try {
      body = await (await fetch("/api/check?" + qs)).json();
    } catch (e) {
      showMessage("not exported: the server did not answer; reload the page");
      return;
    }
    if (!body.ok) {
      showMessage(S.query ? `not exported: ${body.message}` : "nothing to export yet: no setup " +
        "was accepted; fix the control marked in red (or choose a preset), then export");
      // at the control just changed, as the same refusal over the WebSocket is (batch norm
      // switched on beside batch size 1: the WebSocket's refusal outlined batch norm, then
      // the export's moved the outline to the untouched batch size)
      markInvalid(refusedKey(body.key, body.message), body.message);
      return;
    }
    const a = document.createElement("a");
    a.href = "/api/export?" + qs; a.download = ""; a.hidden = true;
    document.body.appendChild(a); a.click(); a.remove();
  });
  // the link of the controls as they read now, as for the export (the page's URL is that of
  // the last accepted setup: a value typed without Tab was left out of the copied link)
  $("share").addEventListener("click", async () => {
    const qs = new URLSearchParams(readControls()).toString();
    let body = null;
    try {
      body = await (await fetch("/api/check?" + qs)).json();
    } catch (e) {
      showMessage("no link copied: the server did not answer; reload the page");
      return;
    }
    if (!body.ok) {
      showMessage(`no link copied: ${body.message}`);
      markInvalid(refusedKey(body.key, body.message), body.message);
      return;
    }
    const link = `${location.origin}${location.pathname}?${qs}`;
    try { await navigator.clipboard.writeText(link); $("share").textContent = "link copied"; } catch (e) { prompt("link to this setup", link); }
    setTimeout(() => { $("share").textContent = "copy link"; }, 1500);
  });
  window.addEventListener("resize", () => {
    for (const [id, u] of Object.entries(S.plots)) {
      if (["plot-grad", "plot-sat", "plot-update"].includes(id)) u.axes[0].label = layerLabel(plotWidth("plot-sat"));
      u.setSize({ width: plotWidth(id), height: 210 });
    }
    if (S.ready) drawBoundary(S.boundary || null);  // its pixels follow the canvas's new size
    fitBottomBar();
  });
  fitBottomBar();
  connect();
}

main();
